"""Files a command writes where the user says (-o, --features): never onto what it reads (the
checkpoint, an input image) nor onto a run's own files, which a later command would then find
damaged. Checked before any work, so a refusal costs nothing."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pytorch_cli.platform.errors import UsageError
from pytorch_cli.store.rundir import LOCK, RUN_FILES, TRACE, holds_run


def same_file(a: Path, b: Path) -> bool:
    """The same file: by inode where both exist (links, a case-blind disk), else by name."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return a.absolute() == b.absolute()


def refuse_overwrite(outputs: list[Path], read: dict[Path, str], option: str) -> None:
    """One line if any of `outputs` is a file being read (`read`: path -> what it is, e.g. "the
    checkpoint being exported"), or a file of a run: the run of a checkpoint read, or the one
    in the output's own folder."""
    runs = {p.parent for p in read if p.is_file() and holds_run(p.parent)}
    runs |= {out.parent for out in outputs if holds_run(out.parent)}
    kept = {**{run / name: "a file of a run" for run in runs
               for name in (*RUN_FILES, LOCK, TRACE)}, **read}  # what is read says so first
    for out in outputs:
        hit = next((k for k in kept if same_file(out, k)), None)
        if hit is not None:
            also = f" ({hit})" if str(hit) != str(out) else ""
            raise UsageError(f"refusing to write {out}: it is {kept[hit]}{also}; "
                             f"name another output with {option}")
