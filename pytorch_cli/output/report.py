"""What a person sees: while training, a rich progress bar on a terminal, plain one-line records
otherwise (redirected output, nohup, SLURM: no carriage returns, no ANSI codes, a line every
quarter epoch or 30 s). (After other commands: tables.py; the table of runs: runs_table.py.)"""

from __future__ import annotations

import errno
import os
import time
from typing import Callable, TextIO

from rich import progress as bar
from rich.console import Console

from pytorch_cli.output.tables import flops_text
from pytorch_cli.platform.errors import plural, warn
from pytorch_cli.platform.events import epochs_at


def _compile_line(r: dict) -> str:
    what, at = r.get("what", "the training step"), r.get("step")  # older runs: neither key
    return (f"compiled ({r['mode']}) {what} in {r['seconds']:.1f}s"
            f"{f' at step {at}' if at else ''}, timed apart from "
            f"{'evaluation' if what == 'evaluation' else 'training'}")


def _stop_line(r: dict) -> str:
    saved = (f"saved to last.pt: continue with `ptrain resume {r['run_dir']}`"
             if r["run_dir"] else "nothing was saved")
    if not r["step"]:  # (not "in epoch 0 after batch 0")
        where = "before the first step"
    elif not r["batch"]:
        where = f"at the end of epoch {r['epoch']}, step {r['step']}"
    else:
        where = f"in epoch {r['epoch']} after batch {r['batch']}, step {r['step']}"
    return f"stopped ({r['reason']}) {where}; {saved}"


def _start_line(r: dict) -> str:
    part = f", {r['trainable']:,} of them trained" if r["trainable"] != r["params"] else ""
    flops = f", {flops_text(r['flops'])} per image" if r.get("flops") else ""
    head = f"training {r['model']} ({r['params']:,} parameters{part}{flops}) on {r['dataset']}"
    if r["source"] != "generated":
        head += f" from {r['source']}"
    if r.get("weights"):
        head += f"; weights: {r['weights']}"
    sizes = f"{r['train_size']} train / " + (f"{r['val_size']} val / " if r["val_size"] else "")
    where = "dry run, nothing is written" if r["dry_run"] else f"writing {r['run_dir']}"
    if at := r.get("resume_at"):
        where = f"resuming at epoch {at[0]} after batch {at[1]}; " + where
    speed = r["precision"] + (f", compiled ({r['compile']})" if r["compile"] else "")
    if r["precision"] == "float16" and r["device"].startswith("cpu"):  # benchmarks/recipe_costs.py
        speed += " (slow on a CPU, whose float16 convolutions have no fast backward: bf16 or 32)"
    world, batch, out = r.get("world_size", 1), r.get("batch_size", 0), r.get("left_out")
    why = ("fewer than the processes" if r.get("least_batch", 1) < 2 else
           "a last batch of one image, which its BatchNorm cannot train on" if world == 1 else
           "fewer than 2 a process in the last batch, and its BatchNorm cannot train on one")
    sat = f"; {plural(out, 'image')} per epoch left out: {why}" if out else ""
    procs = (f" x {world} processes, batch {batch} per process ({batch * world} per step"
             f"{sat})") if world > 1 else ""
    return (f"{head}: {sizes}{r['test_size']} test images (read in {r['data_s']:.1f}s); "
            f"device {r['device']}{procs}, {speed}; {plural(r['epochs'], 'epoch')} of "
            f"{plural(r['batches'], 'batch', 'batches')}{sat if world == 1 else ''}; {where}")


def format_record(r: dict) -> str | None:
    kind = r["kind"]
    if kind == "start":
        return _start_line(r)
    if kind == "train":
        return (f"epoch {r['epoch']} batch {r['batch']}/{r['batches']} step {r['step']} "
                f"lr {r['lr']:.4g} loss {r['train_loss']:.4f} {r['images_per_s']:.0f} img/s "
                f"{r['elapsed_s']:.1f}s")
    if kind == "epoch":
        val = (f" val loss {r['val_loss']:.4f} val acc {100 * r['val_acc']:.2f}%"
               if "val_acc" in r else "")
        at = round(epochs_at(r), 2)  # --epochs 1.5: its last record is number 2
        return (f"epoch {at:g}/{r['epochs']:g} train loss {r['train_loss']:.4f}{val} "
                f"test loss {r['test_loss']:.4f} test acc {100 * r['test_acc']:.2f}%"
                f"{' with TTA' if r.get('tta') else ''} "
                f"({r['test_correct']}/{r['test_total']}) {r['images_per_s']:.0f} img/s; "
                f"train {r['train_s']:.1f}s eval {r['eval_s']:.1f}s, {r['elapsed_s']:.1f}s in all")
    if kind == "profile":
        trace = (f"; Chrome trace (chrome://tracing, ui.perfetto.dev): {r['trace']}"
                 if r["trace"] else "")
        head = (f"profiled {plural(r['steps'], 'step')} from step {r['first_step']}{trace}"
                if r["steps"] else "profile:")
        return f"{head}\n{r['table']}"
    if kind == "compile":
        return _compile_line(r)
    if kind == "stop":
        return _stop_line(r)
    if kind == "early_stop":
        metric = r["metric"].replace("_acc", " acc")
        gain = f"more than {100 * r['min_delta']:g} points" if r["min_delta"] else "at all"
        model = f"; {r['model']} holds its weights" if r["model"] else ""
        if r.get("tta"):  # its evaluations stay plain: patience compares like with like
            model += " (no TTA evaluation was run: `ptrain eval RUN_DIR --tta` gives it)"
        return (f"early stop after epoch {r['epoch']}: {metric} has not gained {gain} for "
                f"{plural(r['patience'], 'epoch')} (--patience); the best was epoch "
                f"{r['best_epoch']}, {100 * r['best_acc']:.2f}%{model}")
    if kind == "end":
        where = f"; run directory {r['run_dir']}" if r["run_dir"] else ""
        if r["dry_run"]:
            return "dry run ok: one optimizer step and one test batch ran; no run was written"
        if r.get("stopped"):
            return None  # the stop record said it all
        if "test_acc" not in r:
            return "done"
        tta = " with TTA" if r.get("tta") else ""
        # 9.9, not the 10 begun; 0.16 of a run --max-steps ended in its first epoch
        epochs = r.get("epochs_trained", min(r["epoch"], r.get("epochs", r["epoch"])))
        best = f"best {'val' if 'val_acc' in r else 'test'} acc {100 * r['best_acc']:.2f}%"
        if r.get("model_epoch"):  # --patience: model.pth holds the best epoch, not the last
            tta += f" (epoch {r['model_epoch']}'s, which model.pth holds)"
        return (f"done: test acc {100 * r['test_acc']:.2f}%{tta} after {plural(epochs, 'epoch')}, "
                f"{r['train_s_total']:.1f}s of training ({best}){where}")
    return None


PLAIN_PARTS, PLAIN_SECONDS = 4, 30.0  # plain output: a train line per quarter epoch, or 30 s


def plain_reporter(stream: TextIO, quiet: bool) -> Callable[[dict], None]:
    """Readable in a log file: of the train records (every --log-interval batches, all kept in
    metrics.jsonl), one per quarter of an epoch, or after 30 s without a line."""
    last = {"part": 0, "epoch": 0, "at": time.monotonic()}

    def due(r: dict) -> bool:
        part = PLAIN_PARTS * r["batch"] // max(r["batches"], 1)
        if r["epoch"] != last["epoch"]:
            last.update(epoch=r["epoch"], part=0)
        if part > last["part"] or time.monotonic() - last["at"] >= PLAIN_SECONDS:
            last.update(part=part)
            return True
        return False

    def emit(r: dict) -> None:
        if quiet and r["kind"] in ("start", "train"):
            return
        if r["kind"] == "train" and not due(r):
            return
        last["at"] = time.monotonic()
        line = format_record(r)
        if line:
            print(line, file=stream, flush=True)
    return emit


def live_reporter(stream: TextIO, quiet: bool) -> Callable[[dict], None]:
    """A progress bar per epoch with live loss; the epoch results stay printed above it."""
    console = Console(file=stream)  # honours NO_COLOR
    progress = bar.Progress(bar.TextColumn("epoch {task.fields[epoch]}"), bar.BarColumn(),
                            bar.MofNCompleteColumn(), bar.TextColumn("{task.fields[info]}"),
                            bar.TimeElapsedColumn(), bar.TimeRemainingColumn(), console=console)
    task, accs = None, []

    def emit(r: dict) -> None:
        nonlocal task
        kind = r["kind"]
        if kind == "epoch":
            accs.append(r.get("val_acc", r["test_acc"]))
        if kind == "start":
            progress.start()
        if kind == "train" and not quiet:
            if task is None:
                task = progress.add_task("", total=r["batches"], epoch=r["epoch"], info="")
            progress.update(task, completed=r["batch"],
                            info=f"loss {r['train_loss']:.4f}  {r['images_per_s']:.0f} img/s")
        if kind == "epoch" and task is not None:
            progress.remove_task(task)
            task = None
        if kind in ("end", "abort"):  # abort: the run failed; give the terminal back cleanly
            progress.stop()
        line = format_record(r)
        if line and not (kind == "train" or (quiet and kind == "start")):
            console.print(line, highlight=False, markup=False)
        if kind == "end" and len(accs) > 1 and not r.get("stopped"):
            console.print(f"{'val' if 'val_acc' in r else 'test'} acc by epoch  "
                          f"{sparkline(accs)}  {100 * accs[0]:.2f}% -> {100 * accs[-1]:.2f}% "
                          f"(best {100 * max(accs):.2f}%, epoch {accs.index(max(accs)) + 1})",
                          highlight=False, markup=False)
    return emit


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled from the lowest to the highest."""
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    return "".join(bars[round((v - lo) / (hi - lo) * 7) if hi > lo else 7] for v in values)


def reporter(stream: TextIO, quiet: bool = False) -> Callable[[dict], None]:
    emit = live_reporter(stream, quiet) if stream.isatty() else plain_reporter(stream, quiet)
    return _until_closed(stream, emit)


def _until_closed(stream: TextIO, emit: Callable[[dict], None]) -> Callable[[dict], None]:
    """A closed reader (`| head`), terminal (SIGHUP) or full disk under `> train.log` ends the
    printing, not the run (the disk with a warning): metrics.jsonl and checkpoints carry on."""
    closed = False

    def guarded(r: dict) -> None:
        nonlocal closed
        if closed:
            return
        try:
            emit(r)
        except OSError as e:
            full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk, quota, size
            if not full and e.errno not in (errno.EPIPE, errno.EIO):
                raise
            closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())  # later prints, and the exit's flush, go nowhere
            os.close(devnull)
            if full:
                warn(f"cannot write the output ({e.strerror}): printing stops here, the run "
                     "goes on; its records go on into metrics.jsonl")
    return guarded
