"""Choosing a new run's directory: its name, and what may be chosen. A run's own folder is
chosen again only with --overwrite; a folder of somebody else's files of a run's names, or a
sweep's folder, never (a run would write over them, and --overwrite would delete them)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pytorch_cli.platform import files, runlock
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.store import records
from pytorch_cli.store.rundir import (
    CONFIG,
    CONFIG_HEADER,
    LOCK,
    METRICS,
    RUN_FILES,
    check_free,
    holds_run,
    root,
)

# A sweep's folder (`ptrain sweep`, commands/sweeping.py): its trials' configs, the study's
# name, where --storage put it, and the default SQLite study
TRIALS, STUDY_NAME, STORED, STUDY_DB = ".trials", ".study", ".storage", "study.db"


def choose(name: str = "", run_dir: str = "", default: str = "run", overwrite: bool = False,
           check_only: bool = False) -> Path:
    """runs/NAME, or --run-dir as given. Without either, runs/DEFAULT, with -2, -3... when taken
    (by a run's files or a sweep's, or a starting run's lock: it writes its files once it is set
    up). An explicitly named run is never overwritten silently: only with --overwrite is it
    chosen again (RunDir.clear then removes its files).
    check_only: the named path, checked, whatever it holds."""
    if run_dir:
        _check_dir(run_dir)
    else:
        _check_root()
    if not (run_dir or name):
        path, n = root() / default, 2
        while holds_run(path) or path.is_file() or is_sweep(path) or \
                runlock.holder(path / LOCK) is not None:
            path, n = root() / f"{default}-{n}", n + 1
        return path
    if name and not run_dir:
        _check_name(name)
    path = Path(run_dir) if run_dir else root() / name
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a directory; choose another --name/--run-dir")
    if is_sweep(path) and not check_only:
        raise UsageError(f"{path} is a sweep's folder (`ptrain sweep`): its runs are its "
                         "trial-NNN folders; choose another --name/--run-dir")
    if holds_run(path) and not check_only:
        if error := _not_a_run(path):
            raise error
        check_free(path)
        if not overwrite:
            raise UsageError(f"{path} already holds a run; choose another --name/--run-dir, "
                             f"continue it with `ptrain resume {path}`, or pass --overwrite")
    return path  # the owner of the session clears it (RunDir.clear) once it holds the lock


def is_sweep(path: Path) -> bool:
    return any((path / f).exists() for f in (TRIALS, STUDY_NAME, STORED, STUDY_DB))


def _not_a_run(path: Path) -> UsageError | None:
    """Files of a run's names (a model.pth, Ultralytics' last.pt, a static site's config.toml)
    without a config.toml or metrics.jsonl that ptrain wrote: somebody else's; never chosen."""
    if _ptrain_wrote(path / CONFIG) or _ptrain_wrote(path / METRICS):
        return None
    theirs = [f for f in RUN_FILES if (path / f).exists()]
    return UsageError(f"{path} holds {', '.join(theirs)} but no {CONFIG} that ptrain wrote: not "
                      "a ptrain run's files, which a run would write over; choose another "
                      "--name/--run-dir")


def _ptrain_wrote(path: Path) -> bool:
    """A run's config.toml: its first line, or (that line edited away) TOML of a dataset and a
    model; a run's metrics.jsonl: records of ptrain's, a start among them."""
    try:
        data = files.read_regular(path)
    except OSError:  # not there, a folder, unreadable
        return False
    if path.name == METRICS:
        return any(r.get("kind") == "start" for r in records.parse(data)[0])
    if data.startswith(CONFIG_HEADER.encode()):
        return True
    try:
        return {"dataset", "model"} <= tomllib.loads(data.decode()).keys()
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def _check_name(name: str) -> None:
    # one folder of the runs folder, printable as it is in one-line messages and `ptrain runs`
    # (no NUL, newline or other control character), at most NAME_MAX (255) bytes
    plain = (name.isprintable() and name.strip() == name and name not in (".", "..")
             and "/" not in name and "\\" not in name and len(os.fsencode(name)) <= 255)
    if not plain:
        raise UsageError(f"--name {name!r} must be a plain name inside {root()}/ (no / or \\, no "
                         "control characters or surrounding spaces, not . or .., at most 255 "
                         "bytes); use --run-dir for a directory elsewhere")


def _check_dir(run_dir: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in run_dir):  # NUL, newline...: no sane path
        raise UsageError(f"--run-dir {run_dir!r} must be a path without control characters")


def _check_root() -> None:
    if root().exists() and not root().is_dir():
        raise UsageError(f"the runs folder {root()} is a file, not a directory; set "
                         "PTRAIN_RUNS_DIR to a folder (or unset it: runs/), or pass --run-dir")
