"""`ptrain runs`: every run under a folder at a glance, read from what each run directory holds
(config.toml, metrics.jsonl, the checkpoints, the lock). No torch: it answers at once.

Status, from the lock and the last start/stop/end/abort record of metrics.jsonl:
  running      a live process holds run.lock
  finished     the last session ended ("end"); "early stop, epoch K" when --patience ended it
  interrupted  a signal stopped it at a saved position, or it was killed (SIGKILL, OOM, power)
               after a checkpoint: `ptrain resume` continues it
  failed       a non-finite loss (nan), an error, or killed before any checkpoint (or before
               its first step, reading its data: only run.lock there)
  pruned       a sweep's pruner stopped it at epoch K (a "pruned" record after its stop)
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pytorch_cli.platform import files, runlock
from pytorch_cli.platform.errors import warn
from pytorch_cli.store import records
from pytorch_cli.store.rundir import CONFIG, LAST, LOCK, METRICS, MODEL, RUN_FILES, RunDir

ENDINGS = ("start", "stop", "end", "abort", "pruned")


def status(run: RunDir, records: list[dict]) -> tuple[str, str]:
    """(status, detail) of one run directory."""
    pid = runlock.holder(run.file(LOCK))
    if pid is not None:
        return "running", f"pid {pid}" if pid > 0 else ""
    if not records:  # metrics.jsonl missing, empty or unreadable: nothing says how it ended
        if run.file(LOCK).exists() and not run.file(CONFIG).exists():  # killed reading its data
            return "failed", "killed before its first step"
        return "unknown", "no records"
    resumable = run.file(LAST).exists()
    last = next((r for r in reversed(records) if r.get("kind") in ENDINGS), None)
    model = run.file(MODEL)
    if last is None or last["kind"] == "start":
        # runs from before end records were logged: model.pth newer than the start finished it
        started = last.get("time", 0) if last else 0
        if model.exists() and model.stat().st_mtime >= started:
            return "finished", ""
        return ("interrupted", "killed") if resumable else ("failed", "killed before a checkpoint")
    if last["kind"] == "pruned":
        return "pruned", f"epoch {last['epoch']}"
    if last["kind"] == "end" and not last.get("stopped"):
        return "finished", f"early stop, epoch {last['early_stop']}" if last.get("early_stop") \
            else ""
    if last["kind"] in ("stop", "end"):  # a signal: the stop record, then an end that says so
        reason = last.get("reason") or last.get("stopped") or ""
        return ("interrupted", reason) if resumable else ("failed", "stopped, nothing saved")
    reason = last.get("reason", "error")
    if reason == "interrupted" and resumable:  # a second Ctrl-C
        return "interrupted", "aborted"
    return "failed", reason if reason != "error" else (last.get("error") or "error")


# The config.toml values the table shows, and what each must be to be shown.
CONFIG_FIELDS = {"dataset": (str,), "model": (str,), "epochs": (int, float)}


def read_config(run: RunDir) -> dict:
    """The CONFIG_FIELDS of a run's config.toml that are valid; a damaged file (binary, not
    TOML, a value of the wrong type) costs one warning and blank cells, never the listing."""
    path = run.file(CONFIG)
    try:
        config = tomllib.loads(files.read_regular(path).decode())
    except FileNotFoundError:  # a run with metrics.jsonl only: nothing to tell
        return {}
    except OSError as e:
        return _blank(path, f"cannot read it ({e.strerror or e})")
    except UnicodeDecodeError:
        return _blank(path, "it is not text")
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        return _blank(path, f"it is not TOML ({' '.join(str(e).split())[:80]})")
    shown = {k: v for k, v in config.items() if k in CONFIG_FIELDS}
    wrong = [k for k, v in shown.items() if not records.fits(v, CONFIG_FIELDS[k])]
    if wrong:  # epochs = "x", dataset = 5: the table could not show them
        warn(f"{path}: {', '.join(wrong)} of the wrong type; left blank")
    return {k: v for k, v in shown.items() if k not in wrong}


def _blank(path: Path, why: str) -> dict:
    warn(f"{path}: {why}; its dataset, model and epochs are left blank")
    return {}


def _epochs_done(records: list[dict], epochs: list[dict]) -> float:
    """The last end record's epochs trained (0.16 of a run --max-steps cut, 1.5 of --epochs
    1.5), else the last epoch record's number."""
    last = records[-1] if records else {}
    if last.get("kind") == "end" and "epochs_trained" in last and not last.get("stopped"):
        return last["epochs_trained"]
    return epochs[-1]["epoch"] if epochs else 0


def summary(path: Path, root: Path) -> dict:
    run = RunDir(path)
    config = read_config(run)
    records = run.read_metrics()
    epochs = [r for r in records if r.get("kind") == "epoch" and "epoch" in r]
    accs = [r.get("val_acc", r.get("test_acc")) for r in epochs]
    accs = [a for a in accs if a is not None]
    timed = [r for r in records if r.get("elapsed_s") is not None]
    ended = records[-1] if records and records[-1].get("kind") == "end" else {}
    state, detail = status(run, records)
    return {"run": str(path.relative_to(root)) if path != root else path.name,
            "path": str(path), "dataset": config.get("dataset"), "model": config.get("model"),
            "epochs_done": _epochs_done(records, epochs), "epochs": config.get("epochs"),
            # a finished run's: model.pth's, as its last line says (after --patience, the best
            # epoch's: a hostile trial read the last epoch's here, and another figure there)
            "last_acc": ended.get("test_acc", epochs[-1].get("test_acc") if epochs else None),
            "best_acc": max(accs, default=None), "best_on": "val" if any(
                "val_acc" in r for r in epochs) else "test",
            "elapsed_s": timed[-1]["elapsed_s"] if timed else None,  # evaluations too
            "train_s": _train_s(ended, epochs),
            "status": state, "detail": detail,  # a failed run's last.pt resumes too (a dead
            "resumable": state in ("interrupted", "failed") and run.file(LAST).exists(),  # rank)
            "modified": max((run.file(f).stat().st_mtime for f in (*RUN_FILES, LOCK)
                             if run.file(f).exists()), default=0.0)}


def _train_s(ended: dict, epochs: list[dict]) -> float | None:
    """Seconds of training, as the run's last line says them: its end's total (every session,
    a part epoch too), else its epochs' (each logged once: a resume trims what it repeats)."""
    if ended.get("train_s_total") is not None:
        return ended["train_s_total"]
    times = [r["train_s"] for r in epochs if isinstance(r.get("train_s"), (int, float))]
    return sum(times) if times else None


def find(root: Path) -> list[Path]:
    """Run directories at any depth under root (sweeps nest them), root itself included.
    Links to folders are followed (runs/big -> /scratch/big), each real folder once."""
    found, seen = set(), set()
    for parent, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(parent)
        if real in seen:  # a loop, or a second link to a folder listed already
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()  # the same links win on every listing
        if CONFIG in names or METRICS in names or LOCK in names:  # (a run reading its folder:
            found.add(Path(parent))  # only the lock so far)
    return sorted(found)


def list_runs(root: Path, sort: str = "time") -> list[dict]:
    """Running ones first, then newest first (time), best accuracy first (acc), or by name."""
    runs = [summary(p, root) for p in find(root)] if root.is_dir() else []
    keys = {"time": lambda r: -r["modified"], "name": lambda r: r["run"],
            "acc": lambda r: -(r["best_acc"] if r["best_acc"] is not None else -1.0)}
    return sorted(runs, key=lambda r: (r["status"] != "running", keys[sort](r)))
