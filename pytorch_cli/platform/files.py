"""Files that survive crashes and show who uses them: atomic writes, and the lock a live run
holds on its directory. No torch here: `ptrain runs` and `plot` start without it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: a crash at
    any moment leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


# The lock a training process holds on its run directory: flock() belongs to the open file and
# dies with the process, SIGKILL and OOM included, so a lock is never stale. The file keeps the
# holder's pid, and goes when the holder lets go (a killed holder leaves it, unlocked: it means
# nothing then).
_held: dict[str, int] = {}  # resolved path -> the open file the lock belongs to


def lock(path: Path) -> int | None:
    """Take the lock; returns None, or the pid of the live process that holds it."""
    key = str(Path(path).resolve())
    if key in _held:  # this process holds it already
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid(fd)
        os.close(fd)
        return pid
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    return None


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
        fd = os.open(path, os.O_RDONLY)
    except OSError:
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
