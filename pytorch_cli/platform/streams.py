"""Standard output and error as a command finds them: missing (started with `>&-`), on a full
disk, or gone (a reader that exited: cli.py's broken pipe)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys

from pytorch_cli.platform.errors import PtrainError


def no_missing() -> None:
    """Started with stdout or stderr closed (`>&-`), Python has None there: print into
    /dev/null instead, and the run goes on (its record is in its run directory)."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))


def flush_stdout() -> None:
    """Here, where a reader gone away is one line, not at the exit; a full disk under it too
    (`ptrain runs > runs.txt` said only "[Errno 28] No space left on device")."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise PtrainError(stdout_lost(e).removeprefix("ptrain: error: ")) from None


def stdout_lost(e: OSError) -> str:
    """The line for standard output that cannot be written; it goes to /dev/null from here, so
    the exit's own flush fails no more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return f"ptrain: error: cannot write standard output: {e.strerror or e}"


def stdout_full(e: OSError) -> bool:
    """Whether a write that failed for want of space, naming no file, was standard output's:
    its disk is full (or it is /dev/full), as a print into a full disk leaves it."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return False
    try:
        fd = sys.stdout.fileno()
        if stat.S_ISCHR(os.fstat(fd).st_mode):
            os.write(fd, b"")  # /dev/full fails even this; a terminal takes it
            return False
        return os.fstatvfs(fd).f_bavail == 0
    except OSError:
        return True
    except (ValueError, AttributeError, io.UnsupportedOperation):  # closed, or no file
        return False


@contextlib.contextmanager
def native_stderr_quiet():
    """File descriptor 2 on /dev/null for a call into a C++ library that logs there unasked and
    has no switch that works (Kineto's "USDT: ... profiler_start" lines in the middle of a
    run's output: a hostile trial); Python's own stderr is flushed first and back after."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to keep quiet
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
