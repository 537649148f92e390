"""The GPU check's bookkeeping (benchmarks/gpu_check.sh calls it): each subcommand reads one step's
output, appends its section or table row to summary.md and one JSON object to results.jsonl, so a
check cut short still leaves the figures of the steps that finished. Here: the command line, the
header, headings, skips and the end, and the benchmarks' sections; benchmarks/gpu_sections.py
holds what they share and ptrain's own steps. Only `env` imports torch."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from gpu_sections import (  # beside this file
    TRAIN_HEAD,
    Out,
    cmd_own_images,
    cmd_resume,
    cmd_tests,
    cmd_train_row,
    num,
    pct,
    read_log,
    records,
    status,
    status_line,
    step_fields,
)

# Published CIFAR-10 figures, 94% on one NVIDIA A100, as their authors give them (not measured
# here): the airbench scripts' headers and README, and Hiverge's speedrun post.
PUBLISHED = [
    ("airbench94.py", "A100-SXM4-80GB", "3.83", "94.01% (mean of 1000 runs)",
     "published: airbench94.py header (torch 2.1.2)"),
    ("airbench94_muon.py", "A100 (400 W)", "2.59", "94.01% (mean of 200 runs)",
     "published: airbench94_muon.py header (torch 2.4.1)"),
    ("hiverge", "A100", "2.015", ">= 94%",
     "published: Hiverge's record as cited to us (their 2025-10-16 post headlines 1.99 s)"),
]


def cmd_env(a, out: Out) -> None:
    import torch
    info = {"device": a.device, "mode": a.mode, "budget_s": a.budget,
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    gpu = "none (CPU dry run)"
    if a.device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
               f"capability {p.major}.{p.minor}, {torch.cuda.device_count()} visible")
        info["gpu"] = p.name
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            gpu += f"; nvidia-smi: driver, power limit, max SM clock = {smi.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        pytest_line = f"pytest {importlib.metadata.version('pytest')}: present"
    except importlib.metadata.PackageNotFoundError:
        pytest_line = "pytest: ABSENT for this python (the CUDA-only tests cannot run)"
    info["pytest"] = "ABSENT" not in pytest_line
    out.md("# ptrain GPU check", "",
           f"- {info['started']}; mode {a.mode}, device {a.device}, budget {a.budget} s; "
           f"git {a.git}",
           f"- machine: {gpu}",
           f"- Python {info['python']}, torch {torch.__version__} (CUDA {torch.version.cuda}); "
           f"{pytest_line}",
           f"- data: MNIST {a.mnist}; CIFAR-10 {a.cifar}; airbench scripts: {a.airbench}",
           "- files here: summary.md (this, written step by step), log.txt (every step's "
           "output), results.jsonl (one JSON object per step or row)", "")
    out.json({"step": "env", **info, "mnist": a.mnist, "cifar": a.cifar, "git": a.git})


def cmd_heading(a, out: Out) -> None:
    """A section's title and text; with --table, the head of the table its rows will follow."""
    out.md(f"## {a.title}", "")
    if a.text:
        out.md(*a.text, "")
    if a.table:
        out.md(*TABLES[a.table])


def cmd_skip(a, out: Out) -> None:
    """A step (or row) that did not run, and why."""
    if a.row:  # precision-bf16 -> bf16, throughput-resnet18 -> resnet18
        out.md(f"| {a.name.split('-', 1)[-1]} | skipped: {a.reason} |" + " |" * a.row)
    else:
        out.md(f"status: skipped: {a.reason}", "")
    out.json({"step": a.name, "status": f"skipped: {a.reason}"})


THROUGHPUT_HEAD = (
    "| model | status | batch | data | classic img/s | ptrain img/s | ceiling img/s "
    "| ptrain/classic | ptrain/ceiling |",
    "|---|---|---|---|---|---|---|---|---|")


def cmd_throughput_row(a, out: Out) -> None:
    st = status(a)
    if not Path(a.json).is_file():
        out.md(f"| {a.model} | {st} |" + " |" * 7)
        out.json({"step": "throughput", "model": a.model, **step_fields(a)})
        return
    row = json.loads(Path(a.json).read_text())["rows"][0]
    data = row["data"] + (f", {a.data_note}" if a.data_note and row["dataset"] == "cifar10" else "")
    out.md(f"| {a.model} | {st} ({a.seconds:.0f} s) | {row['batch_size']} | {row['dataset']} "
           f"({data}) | {row['classic']:,.0f} ({row['classic_best']}) | {row['ptrain']:,.0f} | "
           f"{row['ceiling']:,.0f} | {row['ptrain_over_classic']:.2f}x | "
           f"{100 * row['ptrain_over_ceiling']:.0f}% |")
    out.json({"step": "throughput", **step_fields(a), **row})


def cmd_tta(a, out: Out) -> None:
    st = status(a)
    if a.rc == 1 and Path(a.json).is_file():
        st = "ran; target NOT reached in every run"
    out.md(status_line(st, a, f"`{a.cmd}`"), "")
    if not Path(a.json).is_file():  # cut short: the seeds it finished printed a line each
        seeds = [ln for ln in read_log(a.log).splitlines() if ln.startswith("seed ")]
        out.md(*(f"- {ln}" for ln in seeds), "" if seeds else "no results (see log.txt)", "")
        out.json({"step": "mnist", **step_fields(a)})
        return
    res = json.loads(Path(a.json).read_text())
    runs = res["runs"]
    out.md("| seed | reached | epoch | acc | from launch s | start-up | data read | compile | "
           "training | evaluation | other | whole command s |", "|---" * 12 + "|")
    for r in runs:
        p = r["parts"]
        out.md(f"| {r['seed']} | {'yes' if r['reached'] else 'NO'} | {r['epoch']} | "
               f"{pct(r['acc'])} | {r['seconds']:.2f} | " +
               " | ".join(f"{p[k]:.2f}" for k in ("start-up", "data read", "compile", "training",
                                                  "evaluation", "other")) +
               f" | {r['command_s']:.2f} |")
    reached = [r for r in runs if r["reached"]]
    if reached:
        out.md("", f"median of {len(reached)} of {len(runs)} runs (those that reached "
               f"{100 * res['target']:.0f}%): "
               f"{statistics.median(r['seconds'] for r in reached):.2f} s from launch, training "
               f"{statistics.median(r['parts']['training'] for r in reached):.2f} s")
    out.md("")
    out.json({"step": "mnist", **step_fields(a), "status": st, **res})


def cmd_cifar(a, out: Out) -> None:
    """ptrain's cifar10-fast beside the published airbench figures. airbench times training plus
    the whitening init and the final TTA evaluation, after a warm-up, compile excluded; ptrain's
    train_s also excludes compile, so "as airbench counts" adds its last (TTA) evaluation."""
    st = status(a)
    epochs = records(a.run_dir, "epoch")
    end = (records(a.run_dir, "end") or [{}])[-1]
    train_s = end.get("train_s_total")
    last_eval = epochs[-1]["eval_s"] if epochs else None
    counted = train_s + last_eval if train_s is not None and last_eval is not None else None
    acc = end.get("test_acc")
    acc_text = pct(acc) + (" (TTA)" if epochs and epochs[-1].get("tta") else "")
    if a.subset:
        acc_text += "; subset data: not comparable"
    out.md(status_line(st, a, f"`{a.cmd}`; data: {a.data}"),
           "", "| what | GPU | training s | as airbench counts s | compile s | test acc | source |",
           "|---|---|---|---|---|---|---|",
           f"| ptrain configs/cifar10-fast.toml{', --compile' * ('--compile' in a.cmd)} | "
           f"{a.gpu} | {num(train_s, 2)} | "
           f"{num(counted, 2)} | {num(end.get('compile_s'))} | {acc_text} | measured here |")
    for name, gpu, seconds, accuracy, source in PUBLISHED:
        out.md(f"| {name} | {gpu} | {seconds} | {seconds} | - | {accuracy} | {source} |")
    out.md("", "training s: ptrain's train_s (compile and per-epoch evaluations excluded); as "
           "airbench counts: plus the final TTA evaluation. The published rows were not run "
           "here; the airbench section below runs the scripts on this GPU when one was carried.",
           "")
    out.json({"step": "cifar", **step_fields(a), "data": a.data,
              "subset": a.subset, "train_s": train_s, "as_airbench_s": counted,
              "compile_s": end.get("compile_s"), "test_acc": acc,
              "published": [dict(zip(("name", "gpu", "seconds", "acc", "source"), p))
                            for p in PUBLISHED]})


def parse_airbench(text: str) -> list[dict]:
    """airbench's printed table: a header row of column names, then one row per epoch; the row
    whose epoch is 'eval' ends a run (its TTA accuracy and the run's timed seconds, last)."""
    header, runs = None, []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "epoch" in cells and "tta_val_acc" in cells:
            header = cells
            continue
        if header and len(cells) == len(header) and cells[header.index("epoch")] == "eval":
            try:
                runs.append({"tta_val_acc": float(cells[header.index("tta_val_acc")]),
                             "seconds": float(cells[-1])})
            except ValueError:
                pass
    return runs


AIRBENCH_HEAD = ("| script | status | seconds | runs | median s (after the first) | mean TTA acc "
                 "| data |", "|---|---|---|---|---|---|---|")
TABLES = {"train": TRAIN_HEAD, "throughput": THROUGHPUT_HEAD, "airbench": AIRBENCH_HEAD}


def cmd_airbench(a, out: Out) -> None:
    st = status(a)
    runs = parse_airbench(read_log(a.log))
    if runs and st.startswith("TIMED OUT"):
        st += f" (after {len(runs)} runs: figures below are theirs)"
    timed = runs[1:] if len(runs) > 1 else runs  # the first run warms cuDNN and the allocator
    med = statistics.median(r["seconds"] for r in timed) if timed else None
    mean_acc = statistics.fmean(r["tta_val_acc"] for r in runs) if runs else None
    out.md(f"| {a.script} | {st} | {a.seconds:.0f} | {len(runs)} | {num(med, 3)} | "
           f"{pct(mean_acc)} | {a.data} |")
    out.json({"step": "airbench", "script": a.script, **step_fields(a), "status": st,
              "runs": runs, "median_s_after_first": med, "mean_tta_acc": mean_acc})


def cmd_done(a, out: Out) -> None:
    files = sorted(p.name for p in Path(a.out).iterdir())
    out.md("## Done", "", f"{a.seconds:.0f} s in all (budget {a.budget} s); failed or timed-out "
           f"steps: {a.failed or 'none'}; files: {', '.join(files)}")
    out.json({"step": "done", "seconds": round(a.seconds, 1), "failed": a.failed})


TIMED = (cmd_tests, cmd_train_row, cmd_resume, cmd_throughput_row, cmd_tta, cmd_cifar,
         cmd_own_images, cmd_airbench)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="the check's output folder")
    sub = p.add_subparsers(dest="cmd", required=True)

    def step(name, fn, *args):
        s = sub.add_parser(name)
        s.set_defaults(fn=fn)
        for arg in args:
            if arg == "text":
                s.add_argument("--text", nargs="*", default=[])
            elif arg == "row":  # a skipped table row: how many empty cells follow the reason
                s.add_argument("--row", type=int, default=0)
            else:
                s.add_argument(f"--{arg}", required=arg != "data-note", default="")
        if fn in TIMED:  # the step's exit status, wall seconds and timeout
            s.add_argument("--rc", type=int, required=True)
            s.add_argument("--seconds", type=float, required=True)
            s.add_argument("--timeout", type=float, required=True)
        return s

    step("env", cmd_env, "device", "mode", "budget", "mnist", "cifar", "airbench", "git")
    step("heading", cmd_heading, "title", "text").add_argument("--table", choices=TABLES)
    step("skip", cmd_skip, "name", "reason", "row")
    step("tests", cmd_tests, "log", "cmd")
    step("train-row", cmd_train_row, "step", "label", "run-dir")
    step("resume", cmd_resume, "run-dir", "legs", "what").add_argument(
        "--finished-first", action="store_true")
    step("throughput-row", cmd_throughput_row, "model", "json", "data-note")
    step("tta", cmd_tta, "json", "log", "cmd")
    step("cifar", cmd_cifar, "run-dir", "cmd", "data", "gpu").add_argument(
        "--subset", action="store_true")
    step("own-images", cmd_own_images, "json", "what")
    step("airbench", cmd_airbench, "script", "log", "data")
    done = step("done", cmd_done, "failed")
    done.add_argument("--seconds", type=float, required=True)
    done.add_argument("--budget", required=True)
    a = p.parse_args(argv)
    a.fn(a, Out(a.out))


if __name__ == "__main__":
    main()
