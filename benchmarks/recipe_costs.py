"""What the recipe features cost, measured side by side in one process (rounds interleaved,
the median reported):

  augment   images/s of ptrain's batch pipeline alone (train_batches: gather, the uint8 stages,
            normalise, erasing, mixing) on CIFAR-shaped uint8 images already on the device, for
            each --augment kind, --random-erasing 0.25, --mixup 0.8 and --cutmix 1.0; beside
            them, torchvision's own transform for the same policy applied image by image (the
            classic per-sample Dataset path, in this process).
  ckpt      --grad-checkpointing for resnet18 at batch B: a training step's seconds, and the
            bytes autograd keeps for the backward (saved_tensors_hooks), with and without; on
            CUDA also the peak memory allocated.
  precision a training step's ms per image under each --precision (32, bf16, 16: autocast, as
            ptrain runs it) for lenet (28x28) and resnet18 (32x32), at batch --precision-batch.
            On a CPU float16's convolution backward has no fast kernel: the start line says so.

    python benchmarks/recipe_costs.py --device cpu
    python benchmarks/recipe_costs.py --device cuda --json costs.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torchvision.transforms import v2

from pytorch_cli.data import batches, catalog, datasets, mixing
from pytorch_cli.data.augment import Augment
from pytorch_cli.models import checkpointing, zoo

POLICIES = {"randaugment": v2.RandAugment(), "trivialaugment": v2.TrivialAugmentWide(),
            "autoaugment": v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)}
CASES = {"crop-flip": (Augment("crop-flip"), mixing.Mix()),
         **{k: (Augment(k), mixing.Mix()) for k in POLICIES},
         "erasing 0.25": (Augment("crop-flip", erasing=0.25), mixing.Mix()),
         "mixup 0.8": (Augment("crop-flip"), mixing.Mix(mixup=0.8)),
         "cutmix 1.0": (Augment("crop-flip"), mixing.Mix(cutmix=1.0))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline(split, aug: Augment, mix: mixing.Mix, batch: int, device: torch.device) -> float:
    """Images/s of one whole epoch of batches, after a warm-up epoch of its first batch's rows
    alone (the first call of an epoch prepares a chunk of batches at once: leaving that call
    out of the timing counted batches made before the clock started, 8.5 million img/s for a
    set of two batches, a hostile trial found)."""
    spec = catalog.SPECS["cifar10"]
    warm = datasets.Split(split.images[:batch], split.labels[:batch])
    for _ in batches.train_batches(warm, spec, batch, 1, 0, aug, device, mix_with=mix):
        pass
    _sync(device)
    t0, n = time.perf_counter(), 0
    for x, _ in batches.train_batches(split, spec, batch, 1, 0, aug, device, mix_with=mix):
        n += len(x)
    _sync(device)
    return n / (time.perf_counter() - t0)


def per_image(images: torch.Tensor, kind: str) -> float:
    """torchvision's transform image by image, on the host: the classic loop's cost."""
    t0 = time.perf_counter()
    for img in images:
        POLICIES[kind](img)
    return len(images) / (time.perf_counter() - t0)


def _step(model, x, y) -> None:
    torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def _kept(model, x, y) -> int:
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: kept.append(t.numel() * t.element_size()) or t, lambda t: t):
        _step(model, x, y)
    return sum(kept)


def ckpt(batch: int, steps: int, rounds: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    plain = zoo.build("resnet18", 3, 10, 32, "default").to(device)
    patched = copy.deepcopy(plain)
    checkpointing.enable(patched, "resnet18")
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    out = {k: {"kept_mb": _kept(m, x, y) / 2**20, "step_s": []}
           for k, m in (("plain", plain), ("checkpointed", patched))}
    for _ in range(rounds):
        for name, model in (("plain", plain), ("checkpointed", patched)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _step(model, x, y)  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                _step(model, x, y)
            _sync(device)
            out[name]["step_s"].append((time.perf_counter() - t0) / steps)
            if device.type == "cuda":
                out[name]["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    for v in out.values():
        v["step_s"] = statistics.median(v["step_s"])
    return out


PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


SHAPES = {"lenet": (1, 28), "resnet18": (3, 32)}  # (channels, side)


def precision(models: list[str], batch: int, rounds: int, device: torch.device) -> dict:
    """ms per image of forward, loss and backward under autocast, per model and precision."""
    out = {}
    for name in models:
        channels, side = SHAPES[name]
        torch.manual_seed(0)
        model = zoo.build(name, channels, 10, (side, side)).to(device)
        x = torch.randn(batch, channels, side, side, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        times = {k: [] for k in PRECISIONS}
        for r in range(rounds + 1):  # round 0 warms up, untimed
            for key, dtype in PRECISIONS.items():
                _sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                model.zero_grad(set_to_none=True)
                _sync(device)
                if r:
                    times[key].append((time.perf_counter() - t0) / batch * 1000)
        out[name] = {k: statistics.median(v) for k, v in times.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--images", type=int, default=5120, help="CIFAR-shaped images per epoch")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ckpt-batch", type=int, default=64)
    p.add_argument("--ckpt-steps", type=int, default=3)
    p.add_argument("--precision-batch", type=int, default=8)
    p.add_argument("--precision-models", default="lenet,resnet18", help="of: lenet, resnet18")
    p.add_argument("--json", default="", help="also write the results here")
    a = p.parse_args()
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    split = datasets.Split(torch.randint(0, 256, (a.images, 3, 32, 32), dtype=torch.uint8,
                                         generator=g), torch.randint(0, 10, (a.images,)))
    on_device = split.to(device)
    rates = {k: [] for k in CASES}
    classic = {k: [] for k in POLICIES}
    names = list(CASES)
    for name in names:  # a warm-up pass: first calls (allocations, lazy inits) are not timed
        pipeline(on_device, *CASES[name], a.batch, device)
    for r in range(a.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts later
            rates[name].append(pipeline(on_device, *CASES[name], a.batch, device))
        for kind in POLICIES:
            classic[kind].append(per_image(split.images[:512], kind))
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "augment_img_s": {k: statistics.median(v) for k, v in rates.items()},
              "torchvision_per_image_img_s": {k: statistics.median(v) for k, v in classic.items()},
              "grad_checkpointing": ckpt(a.ckpt_batch, a.ckpt_steps, a.rounds, device),
              "precision_ms_per_image": precision(a.precision_models.split(","),
                                                          a.precision_batch, a.rounds, device)}
    base = result["augment_img_s"]["crop-flip"]
    for name, rate in result["augment_img_s"].items():
        print(f"{name:>15}: {rate:9.0f} img/s ({rate / base:5.0%} of crop-flip's)")
    for kind, rate in result["torchvision_per_image_img_s"].items():
        print(f"{kind:>15}: {rate:9.0f} img/s, torchvision image by image")
    for name, v in result["grad_checkpointing"].items():
        peak = f", peak {v['peak_mb']:.0f} MiB" if "peak_mb" in v else ""
        print(f"resnet18 {name:>12}: {v['step_s'] * 1000:7.1f} ms/step, kept "
              f"{v['kept_mb']:.1f} MiB{peak}")
    for name, ms in result["precision_ms_per_image"].items():
        print(f"{name:>15}: " + ", ".join(f"{k} {v:.3g} ms/img ({v / ms['32']:.3g}x 32's)"
                                          for k, v in ms.items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
