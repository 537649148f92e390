"""The lock a training process holds on its run directory (run.lock): taken once per session,
probed by `ptrain runs` and by a second run on the same directory. No torch here."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from pytorch_cli.platform import files

# The lock a training process holds on its run directory: flock() belongs to the open file and
# dies with the process, SIGKILL and OOM included, so a lock is never stale. The file keeps the
# holder's pid, and goes when the holder lets go (a killed holder leaves it, unlocked: it means
# nothing then).
_held: dict[str, int] = {}  # resolved path -> the open file the lock belongs to


def _forget_in_child() -> None:
    """In a forked child (DataLoader's workers): the lock is the parent's alone. A child that
    kept the open file kept the flock after its parent died: a hostile trial's orphaned decode
    workers held run.lock, and `--resume auto` called the run in use by a dead pid."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def lock(path: Path) -> int | None:
    """Take the lock; returns None, or the pid of the live process that holds it."""
    key = str(Path(path).resolve())
    if key in _held:  # this process holds it already
        return None
    for attempt in range(LOCK_TRIES):
        if attempt:
            time.sleep(LOCK_RETRY_S)
        fd = _open_lock(Path(path))
        taken = _take(fd, Path(path))
        if taken is None:  # ours, on the file the path names
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held[key] = fd
            return None
        os.close(fd)
    return taken


# A holder() probe (`ptrain runs`) holds the lock shared for a moment, and an unlock removes the
# file a second taker may have opened: both pass within microseconds, so a taker that met
# either tries again, 5 times 10 ms, before it calls the directory in use.
LOCK_TRIES, LOCK_RETRY_S = 5, 0.01


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise files.no_links(e, path) from None


def _take(fd: int, path: Path) -> int | None:
    """None: fd is locked, and is still the file `path` names; else the pid of who holds it (or
    -1: a probe's moment, or a file its holder unlinked after we opened it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid(fd)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        same = False
    return None if same else -1  # (the flock on the unlinked file goes with its close)


def unlock(path: Path) -> None:
    key = str(Path(path).resolve())
    if key not in _held:
        return
    fd = _held.pop(key)
    Path(path).unlink(missing_ok=True)  # while still held: a finished run keeps no lock file
    os.close(fd)


def holder(path: Path) -> int | None:
    """The pid of the live process holding the lock (-1 if it wrote none yet); None if free."""
    if str(Path(path).resolve()) in _held:
        return os.getpid()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # none, or a link: no run of ptrain's holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _pid(fd)
    finally:
        os.close(fd)


def _pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or -1)
    except (OSError, ValueError):
        return -1
