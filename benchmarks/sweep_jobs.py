"""Wall time of one sweep with --jobs 1 against --jobs 2 (or the GPU count), with and without
pruning: the same spec, the same trial count, side by side in one run. Prints a markdown table:
wall seconds, trials completed and pruned, the best metric, and the speed-up over --jobs 1 with
the same pruner.

    python benchmarks/sweep_jobs.py --data-dir ../shared/data/mnist            # 16 trials of lenet
    python benchmarks/sweep_jobs.py --trials 4 --jobs 1 2 --pruners none -- --dataset fake

The spec is a learning-rate/optimizer search of lenet, 2 epochs a trial (TPE, seed 1). Anything
after `--` replaces its base config's dataset or epochs (`--dataset fake`, `--epochs 3`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """\
dataset = "{dataset}"
model = "lenet"
epochs = {epochs}
batch_size = 64
seed = 1
{data_dir}
[search]
lr = {{low = 1e-4, high = 0.3, log = true}}
optimizer = ["sgd", "adam"]
"""


def _base(extra: list[str], data_dir: str) -> dict:
    """The spec's base keys, with `--key value` pairs from after `--`."""
    base = {"dataset": "mnist", "epochs": "2",
            "data_dir": f'data_dir = "{Path(data_dir).resolve()}"' if data_dir else ""}
    for flag, value in zip(extra[::2], extra[1::2]):
        key = flag.lstrip("-").replace("-", "_")
        if key not in ("dataset", "epochs"):
            raise SystemExit(f"after --: only --dataset and --epochs, not {flag}")
        base[key] = value
    return base


def run_sweep(spec: Path, folder: Path, trials: int, jobs: int, pruner: str) -> dict:
    """One sweep, timed from launch to exit; its trials' states and best value."""
    import optuna
    cmd = [sys.executable, "-m", "pytorch_cli", "sweep", str(spec), "--dir", str(folder),
           "--trials", str(trials), "--jobs", str(jobs), "--pruner", pruner, "--sampler", "tpe"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    states = [t.state.name for t in study.trials]
    for t in study.trials:  # why each failed: a diverged trial (exit 3), a refused setting
        if t.state.name == "FAIL":
            print(f"  trial {t.number} {t.params} failed: {t.user_attrs.get('error', '?')}",
                  file=sys.stderr)
    return {"jobs": jobs, "pruner": pruner, "wall_s": wall, "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "best": study.best_value, "best_params": study.best_params}


def table(rows: list[dict]) -> str:
    lines = ["| --jobs | --pruner | wall s | complete | pruned | failed | best acc | speed-up | "
             "best settings |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one = next(o for o in rows if o["pruner"] == r["pruner"] and o["jobs"] == rows[0]["jobs"])
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r["best_params"].items())
        lines.append(f"| {r['jobs']} | {r['pruner']} | {r['wall_s']:.1f} | {r['complete']} | "
                     f"{r['pruned']} | {r['failed']} | {100 * r['best']:.2f}% | "
                     f"{one['wall_s'] / r['wall_s']:.2f}x | {params} |")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="", help="MNIST's folder")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pruners", nargs="+", default=["none", "median"])
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptrain-sweep-bench-") as tmp:
        spec = Path(tmp) / "lr.toml"
        spec.write_text(SPEC.format(**_base(extra, args.data_dir)))
        for pruner in args.pruners:  # each pruner's rows side by side, jobs alternating
            for jobs in args.jobs:
                rows.append(run_sweep(spec, Path(tmp) / f"j{jobs}-{pruner}", args.trials, jobs,
                                      pruner))
                print(f"--jobs {jobs} --pruner {pruner}: {rows[-1]['wall_s']:.1f} s",
                      file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
