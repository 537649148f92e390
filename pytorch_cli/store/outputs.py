"""Files a command writes where the user says (-o, --features, --errors): never onto what it
reads (the checkpoint, an input image) nor onto a run's own files, which a later command would
then find damaged. Checked before any work, so a refusal costs nothing."""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path

from pytorch_cli.data.catalog import FOLDER
from pytorch_cli.platform import files
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.platform.files import atomic_write
from pytorch_cli.store.rundir import CONFIG, LOCK, MODEL, RUN_FILES, TRACE, holds_run


def same_file(a: Path, b: Path) -> bool:
    """The same file: by inode where both exist (links, a case-blind disk), else by name."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return a.absolute() == b.absolute()


def inside(path: Path, folder: Path) -> bool:
    """path is in folder or below it (links resolved: another name for it counts)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return False


def refuse_overwrite(outputs: list[Path], read: dict[Path, str], option: str) -> None:
    """One line if any of `outputs` is a file being read (`read`: path -> what it is, e.g. "the
    checkpoint being exported"), or a file of a run: the run of a checkpoint read, or the one
    in the output's own folder."""
    runs = {p.parent for p in read if p.is_file() and holds_run(p.parent)}
    runs |= {out.parent for out in outputs if holds_run(out.parent)}
    kept = {**{run / name: "a file of a run" for run in runs
               for name in (*RUN_FILES, LOCK, TRACE)}, **read}  # what is read says so first
    for out in outputs:
        if what := files.special(out):  # /dev/full, a FIFO: a rename would put a file there
            raise UsageError(f"refusing to write {out}: it is {what}, not a file; "
                             f"name a file with {option}")
        hit = next((k for k in kept if same_file(out, k)), None)
        if hit is not None:
            also = f" ({hit})" if str(hit) != str(out) else ""
            raise UsageError(f"refusing to write {out}: it is {kept[hit]}{also}; "
                             f"name another output with {option}")


def image_folders(config: dict, data_dir: str | Path | None = None) -> dict[Path, str]:
    """A `--dataset folder` run's image folders (folder -> what it is): the one it trained on
    (its config's data_dir) and `data_dir`, the one a command reads; {} for other datasets."""
    if config.get("dataset") != FOLDER:
        return {}
    found = {Path(data_dir).expanduser(): "the image folder being read"} if data_dir else {}
    if isinstance(config.get("data_dir"), str) and config["data_dir"]:
        found.setdefault(Path(config["data_dir"]).expanduser(),
                         "the image folder the run trained on")
    return found


def run_image_folders(run: Path) -> dict[Path, str]:
    """image_folders of the run directory `run`, from its config.toml ({} where unreadable)."""
    try:
        return image_folders(tomllib.loads(files.read_regular(run / CONFIG).decode()))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def refuse_in_image_folders(outputs: list[tuple[str, Path]], folders: dict[Path, str]) -> None:
    """One line if a picture (option, path) would land inside an image folder: a later run or
    eval would take it for one of its images, or it replaces one (a hostile trial: `plot -o`
    onto a training image changed the run's accuracy, and no listing of the folder noticed)."""
    for option, out in outputs:
        for folder, what in folders.items():
            if inside(out, folder):
                raise UsageError(f"refusing to write {out}: it is inside {folder}, {what}, "
                                 f"whose next read would take it for an image; name a {option} "
                                 "file outside it")


def checkpoint_read(source: Path) -> dict[Path, str]:
    """refuse_overwrite's `read` for a command reading a checkpoint, or a run directory's
    model.pth."""
    return {source / MODEL if source.is_dir() else source: "the checkpoint being read"}


def check_new_file(out: Path, option: str, suffix: str, wanted: str, source: Path,
                   also: dict[Path, str] | None = None) -> None:
    """Before any work: `option` names a new `suffix` file (`wanted` says which, with an
    example), not the checkpoint `source` reads (a run directory: its model.pth), a file in
    `also` (path -> what it is) or a run's own files."""
    refuse_overwrite([out], {**checkpoint_read(source), **(also or {})}, option)
    if out.suffix.lower() != suffix or out.is_dir():
        raise UsageError(f"{option} {out}: name {wanted}")


def write_new_file(out: Path, data: bytes) -> None:
    """A file check_new_file allowed, written atomically, its folder made where missing; a
    failure (a full disk, no permission) is one line naming it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda f: f.write(data))
    except OSError as e:
        raise PtrainError(f"cannot write {out}: {e.strerror or e}") from None
