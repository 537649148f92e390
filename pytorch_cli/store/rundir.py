"""The run directory: its layout, the overwrite rule, metrics.jsonl, the lock a training process
holds on it (choosing.py picks a new run's; listing.py reads them all for `ptrain runs`).

    runs/NAME/config.toml    the resolved config
              metrics.jsonl  one JSON record per log interval and per epoch
              last.pt        training state, for resume (best.pt: of the best epoch)
              model.pth      final weights + what rebuilds the model
              run.lock       flock()ed by the process training in it (holds its pid)
              tensorboard/   with --tensorboard
              trackers.json  with --mlflow/--wandb: their run ids, which a resume continues
              wandb/         with --wandb: W&B's own files (an offline run, to `wandb sync`)"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Callable

from pytorch_cli.platform import files, runlock
from pytorch_cli.platform.errors import PtrainError, UsageError, one_line, warn
from pytorch_cli.platform.events import json_safe
from pytorch_cli.store import records

CONFIG, METRICS, LAST, BEST, MODEL = ("config.toml", "metrics.jsonl", "last.pt", "best.pt",
                                      "model.pth")
CONFIG_HEADER = "# ptrain resolved config"  # config.toml's first line: choosing.py looks for it
SKIPPED = "skipped-files.txt"  # --dataset folder: the files that are no usable image, and why
TRACKERS = "trackers.json"  # --mlflow, --wandb: {tracker: its run's id}
RUN_FILES = (CONFIG, METRICS, LAST, BEST, MODEL, SKIPPED, TRACKERS)
LOCK = "run.lock"
# with --profile, --tensorboard, --wandb
TRACE, TENSORBOARD, WANDB = "profile-trace.json", "tensorboard", "wandb"
# the event kinds metrics.jsonl keeps: the curves, and how each process's run ended
LOGGED = ("start", "compile", "train", "epoch", "early_stop", "stop", "end", "abort")


def root() -> Path:
    """Where named runs go: $PTRAIN_RUNS_DIR, else runs/ (read at each call, not at import)."""
    return Path(os.environ.get("PTRAIN_RUNS_DIR") or "runs")


def holds_run(path: Path) -> bool:
    return any((path / f).exists() for f in RUN_FILES)


def _in_use(path: Path, pid: int) -> UsageError:
    return UsageError(f"{path} is in use: a ptrain process (pid {pid}) is training in it; "
                      "wait for it, stop it, or choose another --name/--run-dir")


def _unwritable(path: Path, e: OSError) -> PtrainError:
    if e.errno == errno.ELOOP:  # a link where ptrain writes (files.py refuses to follow it)
        return PtrainError(f"cannot write {e.filename}: {e.strerror}")
    fix = {errno.ENOSPC: " or free some space", errno.EDQUOT: " or free some space",
           errno.EACCES: " or fix its permissions", errno.EPERM: " or fix its permissions"}
    return PtrainError(f"cannot write to the run directory {path}: {e.strerror}; choose another "
                       f"--run-dir{fix.get(e.errno, '')}")  # (read-only: no space would help)


def check_free(path: Path) -> None:
    pid = runlock.holder(path / LOCK)
    if pid is not None:
        raise _in_use(path, pid)


@dataclass
class RunDir:
    path: Path
    made: Path | None = field(default=None, compare=False)  # the outermost folder lock() made
    # --overwrite: the old run's files go at create(), once the new run's data and model are
    # set up, so that a typo in a flag or --data-dir loses nothing
    replacing: bool = field(default=False, compare=False)

    def file(self, name: str) -> Path:
        return self.path / name

    def lock(self) -> None:
        """Claim the directory for this process's training, making it if need be: once per
        session, before anything in it is touched; refused while another live process trains
        in it. A directory it made is removed again by unlock() if nothing was written."""
        missing = [d for d in (self.path, *self.path.parents) if not d.exists()]
        self.made = missing[-1] if missing else None  # the outermost folder this will make
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            way = isinstance(e, (FileExistsError, NotADirectoryError))
            why = "a file is in the way; choose another --name/--run-dir" if way else e.strerror
            raise PtrainError(f"cannot create the run directory {self.path}: {why}") from None
        try:
            pid = runlock.lock(self.file(LOCK))
        except OSError as e:
            raise _unwritable(self.path, e) from None
        if pid is not None:  # the holder lock() met: asking again could find it gone, unlocked
            raise _in_use(self.path, pid)

    def unlock(self) -> None:
        runlock.unlock(self.file(LOCK))
        if self.made is None:
            return
        for folder in (self.path, *self.path.parents):  # up to the outermost one lock() made
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                folder.rmdir()
            if folder == self.made:
                break

    def own_files(self) -> list[str]:
        """What --overwrite removes: the run's own files, and only those (its exports too)."""
        from pytorch_cli.store.export import made_from  # (export imports this module)
        return [*RUN_FILES, TRACE, *made_from(self.path)]

    def clear(self) -> None:
        for f in self.own_files():
            self.file(f).unlink(missing_ok=True)
        for folder in (TENSORBOARD, WANDB):  # old curves would mix in
            shutil.rmtree(self.file(folder), ignore_errors=True)

    def create(self, config: dict, skipped: list[str] | None = None) -> None:
        """Write config.toml, the run's resolved settings (which also proves the directory
        writable before any training), after clearing the old run's files (--overwrite), and
        remove temporary files a killed save left behind;
        `skipped`: the data files left out (skipped-files.txt), if any."""
        try:
            if self.replacing:
                self.clear()
                self.replacing = False
            self.path.mkdir(parents=True, exist_ok=True)
            for leftover in files.leftovers(self.path, (*RUN_FILES, TRACE)):  # a killed save's
                leftover.unlink(missing_ok=True)
            text = config_toml(config)
            files.atomic_write(self.file(CONFIG), lambda f: f.write(text.encode()))
            if skipped:  # (a name that is no UTF-8: its own bytes)
                listing = "".join(f"{one_line(line)}\n" for line in skipped)  # as on stderr
                listing = listing.encode(errors="surrogateescape")
                files.atomic_write(self.file(SKIPPED), lambda f: f.write(listing))
        except OSError as e:
            raise _unwritable(self.path, e) from None

    def _tracker_ids(self) -> dict:
        try:
            ids = json.loads(files.read_regular(self.file(TRACKERS)))
        except (OSError, ValueError):  # none yet; unreadable: new tracker runs, not a crash
            return {}
        return ids if isinstance(ids, dict) else {}

    def tracker_id(self, tracker: str) -> str | None:
        """The id of this run's run in `tracker` (mlflow, wandb), if it has one."""
        return self._tracker_ids().get(tracker)

    def remember_tracker(self, tracker: str, run_id: str) -> None:
        text = json.dumps({**self._tracker_ids(), tracker: run_id})
        try:
            files.atomic_write(self.file(TRACKERS), lambda f: f.write(text.encode()))
        except OSError as e:
            raise _unwritable(self.path, e) from None

    def _records(self) -> tuple[list[dict], list[int]]:
        try:
            return records.parse(files.read_regular(self.file(METRICS)))
        except FileNotFoundError:
            return [], []

    def read_metrics(self) -> list[dict]:
        """The run's valid records; a bad line (binary, not an object, a field of the wrong
        type) is skipped with one warning per file, and the rest still counts."""
        try:
            found, bad = self._records()
        except OSError as e:  # a directory, no permission: this run's records are unreadable
            warn(f"{self.file(METRICS)}: cannot read it ({e.strerror or e}); its records are "
                 "left out")
            return []
        if bad:
            warn(f"{self.file(METRICS)}: skipped {records.lines(len(bad))} (first: line "
                 f"{bad[0]})")
        return found

    def append_metrics(self, record: dict) -> None:
        try:
            with files.open_append(self.file(METRICS)) as f:
                f.write(json.dumps(json_safe(record)) + "\n")
        except OSError as e:  # a full disk raises at the close's flush, naming no file
            raise PtrainError(f"cannot write {self.file(METRICS)}: {e.strerror or e}") from None

    def metrics_sink(self) -> Callable[[dict], None]:
        """An event sink: keeps the LOGGED records. An abort counts only after a start: a resume
        that could not even begin (no dataset...) leaves the run's record as it was."""
        started = False

        def sink(record: dict) -> None:
            nonlocal started
            started = started or record["kind"] == "start"
            if record["kind"] in LOGGED and (started or record["kind"] != "abort"):
                self.append_metrics(record)
        return sink

    def trim_metrics(self, step: int) -> None:
        """Before a resume: drop the records logged after the checkpoint (they will be logged
        again), any half-written line and any bad one (with a warning); rewritten atomically.
        An unreadable file is an error: rewriting it empty would lose the run's records."""
        if not self.file(METRICS).exists():
            return
        if self.file(METRICS).is_symlink():  # the rewrite would replace it (appends refuse it)
            e = files.no_links(OSError(errno.ELOOP, ""), self.file(METRICS))
            raise PtrainError(f"cannot write {self.file(METRICS)}: {e.strerror}")
        try:
            found, bad = self._records()
        except OSError as e:
            raise PtrainError(f"cannot read {self.file(METRICS)}: {e.strerror or e}; the resume "
                              "appends to it: make it a readable file, or move it away") from None
        if bad:
            warn(f"{self.file(METRICS)}: dropped {records.lines(len(bad))} (first: line "
                 f"{bad[0]}) as the run resumes")
        # a record without a step (early_stop, abort) goes with the one before it
        at = accumulate((r.get("step") for r in found), lambda a, b: a if b is None else b,
                        initial=0)
        kept = [r for r, logged in zip(found, list(at)[1:]) if logged <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        try:
            files.atomic_write(self.file(METRICS), lambda f: f.write(text.encode()))
        except OSError as e:  # the old file stays, whole
            raise PtrainError(f"cannot rewrite {self.file(METRICS)} for the resume: "
                              f"{e.strerror or e}; free some space or fix its folder's "
                              "permissions") from None


def config_toml(values: dict) -> str:
    """config.toml: `ptrain train --config THIS_FILE` re-runs the run. TOML has no null: a None
    is a comment (leaving the key out gives back the default, None)."""
    lines = [f"{CONFIG_HEADER}: re-run with `ptrain train --config THIS_FILE`"]
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"# {key} = (not set)" if value is None else f"{key} = {text}")
    return "\n".join(lines) + "\n"
