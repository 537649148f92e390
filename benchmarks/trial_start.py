"""Launch-to-exit seconds of one `ptrain train` process, started fresh (a new interpreter, as from a
shell) and warm (forked from ptrain's import server, as a sweep's trials:
pytorch_cli/commands/warmstart.py), alternating in one run; with each run's training images/s,
which a warm start must not lower. Prints a markdown table, then the medians.

    python benchmarks/trial_start.py --data-dir ../shared/data/mnist --rounds 4
    python benchmarks/trial_start.py --rounds 1 -- --dataset fake --epochs 0.1

The command is `ptrain train --epochs 1 --quiet` (lenet), with --data-dir if given and anything
after `--` added. The first warm run also starts the server (its imports): it is shown, and left
out of the medians, as a sweep pays it once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytorch_cli.commands import warmstart


def _rate(run_dir: Path) -> float:
    """Training images/s over the run's epochs."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    return statistics.mean(r["images_per_s"] for r in epochs)


def _run(how: str, args: list[str], run_dir: Path) -> tuple[float, float]:
    """(launch-to-exit seconds, images/s) of one run."""
    command = ["train", *args, "--run-dir", str(run_dir)]
    start = time.perf_counter()
    if how == "fresh":
        done = subprocess.run([sys.executable, "-m", "pytorch_cli", *command],
                              capture_output=True, text=True)
        code, log = done.returncode, done.stdout + done.stderr
    else:
        child = warmstart.start(command, dict(os.environ), run_dir.with_suffix(".log"))
        child.process.join()  # blocking, as subprocess.run: a polling loop would take the
        child.poll()  # run's cores from it
        code, log = child.returncode, run_dir.with_suffix(".log").read_text()
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"{how} run failed ({code}): {log.strip()[-2000:]}")
    return wall, _rate(run_dir)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="", help="the dataset's folder (MNIST's)")
    parser.add_argument("--rounds", type=int, default=4, help="fresh-then-warm pairs")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    command = ["--epochs", "1", "--quiet", *(["--data-dir", args.data_dir] if args.data_dir
                                             else []), *extra]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptrain-trial-start-") as tmp:
        for i in range(args.rounds):
            rows.append({how: _run(how, command, Path(tmp) / f"{how}-{i}")
                         for how in ("fresh", "warm")})
            print(f"round {i + 1}: fresh {rows[-1]['fresh'][0]:.2f} s, "
                  f"warm {rows[-1]['warm'][0]:.2f} s", file=sys.stderr, flush=True)
    print("| round | fresh s | warm s | fresh img/s | warm img/s |\n|---|---|---|---|---|")
    for i, r in enumerate(rows):
        note = " (server start)" if i == 0 else ""
        print(f"| {i + 1} | {r['fresh'][0]:.2f} | {r['warm'][0]:.2f}{note} | "
              f"{r['fresh'][1]:.0f} | {r['warm'][1]:.0f} |")
    later = rows[1:] or rows
    fresh, warm = (statistics.median(r[how][0] for r in later) for how in ("fresh", "warm"))
    print(f"\nmedian of rounds {2 if rows[1:] else 1}-{len(rows)}: fresh {fresh:.2f} s, warm "
          f"{warm:.2f} s, {fresh - warm:.2f} s sooner a run")


if __name__ == "__main__":  # the warm runs' server re-imports this file: nothing runs then
    main()
