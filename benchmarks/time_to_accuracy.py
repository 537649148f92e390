"""Seconds from process start to the first evaluation at or above a target accuracy, for a preset,
with where the time went. Runs the real command (`python -m pytorch_cli train --config ...`) in a
fresh process and reads its metrics.jsonl: the start record's wall clock anchors the run to the
launch, setup_s/data_s and each epoch's train_s/eval_s split it up.

    python benchmarks/time_to_accuracy.py configs/mnist-fast.toml --data-dir ../shared/data/mnist
    python benchmarks/time_to_accuracy.py configs/fashion-mnist.toml --repeats 3 -- --device cuda

Targets by dataset: MNIST 99%, Fashion-MNIST 90%, CIFAR-10 94% (--target to change).
Anything after `--` is passed to `ptrain train`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

TARGETS = {"mnist": 0.99, "fashion-mnist": 0.90, "cifar10": 0.94}
PARTS = ("start-up", "data read", "compile", "training", "evaluation", "other")


def run_once(
    config: Path, data_dir: str, extra: list[str], folder: Path
) -> tuple[list[dict], float]:
    """Run the preset; (its metrics.jsonl records, the command's wall time). Raises on failure."""
    cmd = [sys.executable, "-m", "pytorch_cli", "train", "--config", str(config),
           "--run-dir", str(folder), "--quiet", *(["--data-dir", data_dir] if data_dir else []),
           *extra]
    launched = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    command_s = time.time() - launched
    if done.returncode != 0:
        raise SystemExit(f"ptrain failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    records[0]["launched"] = launched  # the first record is the start record
    return records, command_s


def breakdown(records: list[dict], target: float) -> dict:
    """Seconds from launch to the first epoch at or above `target`, and its parts."""
    start = records[0]
    epochs = [r for r in records if r["kind"] == "epoch"]
    hit = next((e for e in epochs if e["test_acc"] >= target), None)
    upto = epochs[:epochs.index(hit) + 1] if hit else epochs
    compile_s = sum(r["seconds"] for r in records if r["kind"] == "compile")
    before_training = start["time"] - start["launched"]  # interpreter, imports, setup
    parts = {"start-up": before_training - start["data_s"], "data read": start["data_s"],
             "compile": compile_s, "training": sum(e["train_s"] for e in upto),
             "evaluation": sum(e["eval_s"] for e in upto)}
    parts["other"] = upto[-1]["elapsed_s"] - compile_s - parts["training"] - parts["evaluation"]
    return {"reached": hit is not None, "epoch": upto[-1]["epoch"], "acc": upto[-1]["test_acc"],
            "best_acc": max(e["test_acc"] for e in epochs),
            "seconds": before_training + upto[-1]["elapsed_s"], "parts": parts}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="a preset, e.g. configs/mnist-fast.toml")
    p.add_argument("--data-dir", default="", help="passed to ptrain (default: ptrain's own search)")
    p.add_argument(
        "--target", type=float, default=0.0, help="accuracy in [0, 1] (default by dataset)"
    )
    p.add_argument(
        "--repeats", type=int, default=1, help="runs (seeds 1..N); the median is reported"
    )
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    dataset = tomllib.loads(args.config.read_text()).get("dataset", "mnist")
    if "--dataset" in extra:  # e.g. the MNIST recipe on Fashion-MNIST
        dataset = extra[extra.index("--dataset") + 1]
    target = args.target or TARGETS[dataset]
    runs = []
    with tempfile.TemporaryDirectory(prefix="ptrain-tta-") as tmp:
        for seed in range(1, args.repeats + 1):
            records, command_s = run_once(args.config, args.data_dir, [*extra, "--seed", str(seed)],
                                          Path(tmp, f"seed{seed}"))
            runs.append({"seed": seed, "command_s": command_s, "device": records[0]["device"],
                         **breakdown(records, target)})
            r = runs[-1]
            status = (
                f"{100 * target:.0f}% reached in epoch {r['epoch']} ({100 * r['acc']:.2f}%)"
                if r["reached"]
                else f"{100 * target:.0f}% NOT reached (best {100 * r['best_acc']:.2f}%)"
            )
            print(f"seed {seed}: {status}; {r['seconds']:.2f}s from launch, whole command "
                  f"{command_s:.2f}s; " + ", ".join(f"{k} {v:.2f}s" for k, v in r["parts"].items()))
    reached = [r for r in runs if r["reached"]]
    print(
        f"\n{args.config} on {runs[0]['device']}: {len(reached)}/{len(runs)} runs reached "
        f"{100 * target:.0f}%"
        + (
            f"; median {statistics.median(r['seconds'] for r in reached):.2f}s "
            "from launch, training "
            f"{statistics.median(r['parts']['training'] for r in reached):.2f}s, "
            f"whole command {statistics.median(r['command_s'] for r in reached):.2f}s"
            if reached
            else ""
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"config": str(args.config), "target": target,
                                               "runs": runs}, indent=1))
    sys.exit(0 if len(reached) == len(runs) else 1)


if __name__ == "__main__":
    main()
