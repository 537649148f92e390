"""Training throughput (images/s), three contenders alternated in one process, median of rounds:

  classic  the classic loop written here: torchvision's dataset with per-sample transforms
           (ToTensor/Normalize, and RandomCrop/Flip where ptrain augments), a DataLoader
           (workers 0; on CUDA also 4, pinned: its best is reported; --classic-workers
           to choose), .item() every step;
  ptrain   ptrain's own engine (loop.setup + loop.train_epoch, what `ptrain train` runs),
           timed by its own log records: the interval after a warm-up interval;
  ceiling  the same model and optimizer stepping on one batch already on the device (on CUDA the
           whole step is replayed as one CUDA graph): what the compute alone allows.

    python benchmarks/throughput.py --device cpu
    python benchmarks/throughput.py --device cuda --json throughput.json

All three use the same model, optimizer, batch size and backend flags (cuDNN benchmark, TF32).
ptrain and the ceiling use ptrain's precision (auto: bf16 on CUDA) and, on CUDA, ptrain runs with
--compile-mode reduce-overhead; the classic loop is float32 eager, as the examples are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_data  # beside this file
import torch
import torch.nn.functional as F
from torchvision import transforms

from pytorch_cli.data import augment, batches, catalog
from pytorch_cli.models import zoo as models
from pytorch_cli.platform import runtime
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.training import loop, optim

# model: (dataset, batch size)
CASES = {"lenet": ("mnist", 64), "mnist-cnn": ("mnist", 64), "cifar-net": ("cifar10", 128),
         "resnet18": ("cifar10", 128)}
# steps per measurement (a warm-up interval of the same length comes first)
# (on a CPU long enough that one interval spans over a second: at 60 cifar-net steps, 0.4 s, the
# ratio to the ceiling moved 88-92% between runs)
STEPS = {"cpu": {"lenet": 400, "mnist-cnn": 40, "cifar-net": 180, "resnet18": 2},
         "cuda": {"lenet": 300, "mnist-cnn": 300, "cifar-net": 150, "resnet18": 150}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def classic(cfg: TrainConfig, dataset, workers: int, steps: int) -> float:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.model, *_shape(cfg)).to(device)
    opt = optim.build_optimizer(model, cfg)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=True)
    model.train()
    t0, done = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == steps:  # the first `steps` are the warm-up (workers starting, caches filling)
            t0 = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # the classic loop's per-step host sync (for its running loss print)
        done = i + 1
        if done == 2 * steps:
            break
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def ptrain(cfg: TrainConfig, steps: int) -> float:
    job = loop.setup(cfg)
    records: list[dict] = []
    job.emit, job.started = records.append, time.perf_counter()
    loop.train_epoch(job, 0)
    timed = [r for r in records if r["kind"] == "train"]
    assert len(timed) == 2, f"expected a warm-up and a timed interval, got {len(timed)}"
    return timed[-1]["images_per_s"]


def ceiling(cfg: TrainConfig, run_batch, steps: int) -> float:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.model, *_shape(cfg)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = optim.build_optimizer(model, cfg)
    amp = runtime.autocast_dtype(cfg.precision, device)
    x, y = run_batch
    model.train()

    def one_step():
        opt.zero_grad(set_to_none=False)  # graph replays need the .grad tensors to stay put
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None, cache_enabled=False):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as graph capture requires
            for _ in range(3):
                one_step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            one_step()
        run = graph.replay
    else:
        run = one_step
    for _ in range(steps):
        run()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def _shape(cfg: TrainConfig) -> tuple[int, int, int]:
    spec = catalog.SPECS[cfg.dataset]
    return spec.channels, spec.num_classes, spec.size


def _resident_batch(cfg: TrainConfig, data) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device(cfg.device)
    spec = data.spec
    x = data.train.images[:cfg.batch_size].to(device)
    x = batches.normalize(x, spec)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, data.train.labels[:cfg.batch_size].to(device)


def _classic_transform(spec) -> transforms.Compose:
    aug = ([transforms.RandomCrop(spec.size, padding=augment.pad_for(spec.size)),
            transforms.RandomHorizontalFlip()] if spec.augment == "crop-flip" else [])
    return transforms.Compose(
        aug + [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    )


def bench_model(name: str, args, tmp: Path) -> dict:
    dataset, batch_size = CASES[name]
    given = args.mnist_dir if dataset == "mnist" else args.cifar_dir
    folder, source, data = bench_data.prepare(dataset, given, tmp)
    steps = args.steps or STEPS[args.device][name]
    compile_mode = args.compile_mode or ("reduce-overhead" if args.device == "cuda" else "none")
    cfg = TrainConfig(dataset=dataset, data_dir=folder, download=False, model=name,
                      batch_size=batch_size, epochs=1, max_steps=2 * steps, log_interval=steps,
                      device=args.device, precision=args.precision,
                      compile=compile_mode != "none",
                      compile_mode=compile_mode if compile_mode != "none" else "default",
                      channels_last=args.channels_last, save_model=False)
    runtime.fast_backends(False)
    classic_set = bench_data.classic_dataset(dataset, data, tmp, _classic_transform(data.spec))
    workers = ([int(w) for w in args.classic_workers.split(",")] if args.classic_workers
               else [0, 4] if args.device == "cuda" else [0])
    resident = _resident_batch(cfg, data)
    contenders = {
        f"classic w{w}": (lambda w=w: classic(cfg, classic_set, w, steps)) for w in workers
    }
    contenders["ptrain"] = lambda: ptrain(cfg, steps)
    contenders["ceiling"] = lambda: ceiling(cfg, resident, steps)
    names = list(contenders)
    results: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            results[n].append(contenders[n]())
            print(f"  {name} round {r + 1} {n}: {results[n][-1]:,.0f} img/s", file=sys.stderr)
    med = {n: statistics.median(v) for n, v in results.items()}
    best_classic = max((k for k in med if k.startswith("classic")), key=med.get)
    return {
        "model": name,
        "dataset": dataset,
        "data": source,
        "batch_size": batch_size,
        "steps": steps,
        "rounds": args.rounds,
        "runs": results,
        "classic": med[best_classic],
        "classic_best": best_classic,
        "ptrain": med["ptrain"],
        "ceiling": med["ceiling"],
        "ptrain_over_classic": med["ptrain"] / med[best_classic],
        "ptrain_over_ceiling": med["ptrain"] / med["ceiling"],
        "precision": str(
            runtime.autocast_dtype(cfg.precision, torch.device(cfg.device)) or "float32"
        ),
        "compile": compile_mode,
    }


def table(rows: list[dict]) -> str:
    out = [
        "| model | batch | data | classic img/s | ptrain img/s | ceiling img/s "
        "| ptrain/classic | ptrain/ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['model']} | {r['batch_size']} | {r['dataset']} ({r['data']}) | "
                   f"{r['classic']:,.0f} ({r['classic_best']}) | {r['ptrain']:,.0f} | "
                   f"{r['ceiling']:,.0f} | {r['ptrain_over_classic']:.2f}x | "
                   f"{100 * r['ptrain_over_ceiling']:.0f}% |")
    return "\n".join(out)


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", default=",".join(CASES), help="comma-separated subset")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--steps", type=int, default=0, help="steps per measurement (0: per-model default)"
    )
    p.add_argument("--precision", default="auto", choices=["auto", "32", "bf16", "16"])
    p.add_argument("--compile-mode", default="",
                   choices=["", "none", "default", "reduce-overhead", "max-autotune"],
                   help="ptrain's --compile-mode ('' = reduce-overhead on CUDA, none on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   default=TrainConfig.channels_last,
                   help="ptrain's and the ceiling's memory format")
    p.add_argument("--classic-workers", default="",
                   help="the classic loop's DataLoader workers to try, e.g. 4 ('' = 0,4 on CUDA, "
                        "0 on CPU); its best is reported")
    p.add_argument("--mnist-dir", default=bench_data.default_dir("mnist"))
    p.add_argument("--cifar-dir", default=bench_data.default_dir("cifar10"))
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    # ptrain's setup keeps freed memory for the process (runtime.keep_freed_memory): from the
    # start, so every contender of every round runs with it
    kept = runtime.keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="ptrain-bench-") as tmp:
        rows = [bench_model(m, args, Path(tmp)) for m in args.models.split(",")]
    print(
        f"\nthroughput on {machine(args.device)}; median of {args.rounds} rounds; "
        f"ptrain and ceiling: precision {rows[0]['precision']}, compile {rows[0]['compile']}, "
        f"{'channels-last' if args.channels_last else 'NCHW'}; "
        "the classic loop: float32, NCHW, eager"
        f"; freed memory kept: {'yes' if kept else 'no'}"
    )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(args.device), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
