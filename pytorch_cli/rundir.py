"""The run directory: its layout, choosing its name, the overwrite rule, metrics.jsonl, and the
listing of runs.

    runs/NAME/config.toml    the resolved config
              metrics.jsonl  one JSON record per log interval and per epoch
              last.pt        training state, for resume
              best.pt        training state of the best epoch
              model.pth      final weights + what rebuilds the model
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pytorch_cli.checkpoint import atomic_write
from pytorch_cli.errors import PtrainError, UsageError
from pytorch_cli.events import finite

ROOT = Path("runs")
CONFIG, METRICS, LAST, BEST, MODEL = "config.toml", "metrics.jsonl", "last.pt", "best.pt", "model.pth"
RUN_FILES = (CONFIG, METRICS, LAST, BEST, MODEL)
LOGGED = ("start", "compile", "train", "epoch")  # the event kinds metrics.jsonl keeps


def holds_run(path: Path) -> bool:
    return any((path / f).exists() for f in RUN_FILES)


def _check_name(name: str) -> None:
    if name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"--name {name!r} must be a plain name inside {ROOT}/ (no / and no ..); "
                         "use --run-dir for a directory elsewhere")


def choose(name: str = "", run_dir: str = "", default: str = "run", overwrite: bool = False,
           check_only: bool = False) -> Path:
    """runs/NAME, or --run-dir as given. Without either, runs/DEFAULT, with -2, -3... when taken.
    An explicitly named run is never overwritten silently: --overwrite removes its files.
    check_only: the named path, checked, whatever it holds."""
    if not (run_dir or name):
        path, n = ROOT / default, 2
        while holds_run(path) or path.is_file():
            path, n = ROOT / f"{default}-{n}", n + 1
        return path
    if name and not run_dir:
        _check_name(name)
    path = Path(run_dir) if run_dir else ROOT / name
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a directory; choose another --name/--run-dir")
    if holds_run(path) and not check_only:
        if not overwrite:
            raise UsageError(f"{path} already holds a run; choose another --name/--run-dir, "
                             f"continue it with `ptrain resume {path}`, or pass --overwrite")
        for f in RUN_FILES:
            (path / f).unlink(missing_ok=True)
    return path


def _parse(lines: list[str]) -> list[dict]:
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: the records around it still count
    return records


@dataclass(frozen=True)
class RunDir:
    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    def create(self, config_toml: str) -> None:
        """Make the directory and write config.toml: this also proves it writable before any
        training. Temporary files a killed save left behind are removed."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise PtrainError(f"cannot create the run directory {self.path}: a file is in the "
                              "way; choose another --name/--run-dir") from None
        except OSError as e:
            raise PtrainError(f"cannot create the run directory {self.path}: {e.strerror}") from None
        for leftover in self.path.glob(".*.tmp*"):  # atomic_write's, from a process killed mid-save
            leftover.unlink(missing_ok=True)
        try:
            atomic_write(self.file(CONFIG), lambda f: f.write(config_toml.encode()))
        except OSError as e:
            raise PtrainError(f"cannot write to the run directory {self.path}: {e.strerror}; "
                              "choose another --run-dir or free some space") from None

    def read_metrics(self) -> list[dict]:
        path = self.file(METRICS)
        return _parse(path.read_text().splitlines()) if path.exists() else []

    def append_metrics(self, record: dict) -> None:
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(finite(record)) + "\n")

    def metrics_sink(self) -> Callable[[dict], None]:
        """An event sink: keeps the train and epoch records."""
        def sink(record: dict) -> None:
            if record["kind"] in LOGGED:
                self.append_metrics(record)
        return sink

    def trim_metrics(self, step: int) -> None:
        """Before a resume: drop the records logged after the checkpoint (they will be logged
        again) and any half-written line; rewritten atomically."""
        if self.file(METRICS).exists():
            kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.file(METRICS), lambda f: f.write(text.encode()))


def checkpoint_in(target: Path, name: str) -> Path:
    """A checkpoint given as itself, or as its run directory (which then must hold `name`)."""
    if not target.is_dir():
        return target
    path = target / name
    if not path.exists():
        why = ("it is still training, was stopped, or ran with --no-save-model"
               if name == MODEL else "was it trained with --no-save-model?")
        raise PtrainError(f"{target} has no {name} ({why}); name a checkpoint file instead")
    return path


def summary(path: Path) -> dict:
    """One run at a glance: its config's dataset and model, epochs done, last and best test
    accuracy, whether it finished."""
    run = RunDir(path)
    try:
        config = tomllib.loads(run.file(CONFIG).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        config = {}
    epochs = [r for r in run.read_metrics() if r.get("kind") == "epoch"]
    accs = [r["test_acc"] for r in epochs if "test_acc" in r]
    return {"run": str(path), "dataset": config.get("dataset"), "model": config.get("model"),
            "epochs_done": epochs[-1]["epoch"] if epochs else 0, "epochs": config.get("epochs"),
            "test_acc": accs[-1] if accs else None, "best_test_acc": max(accs, default=None),
            "finished": run.file(MODEL).exists(),
            "modified": max((run.file(f).stat().st_mtime for f in RUN_FILES
                             if run.file(f).exists()), default=0.0)}


def list_runs(root: Path = ROOT) -> list[dict]:
    """Every run directory under root, oldest first."""
    if not root.is_dir():
        return []
    runs = [summary(p) for p in root.iterdir() if p.is_dir() and holds_run(p)]
    return sorted(runs, key=lambda r: r["modified"])
