"""Files that survive crashes: atomic writes, reads of regular files only, appends that never
follow a link. (The lock a live run holds on its directory: runlock.py.) No torch here: `ptrain
runs` and `plot` start without it."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

TMP_SUFFIX = ".ptrain-tmp"  # atomic_write's temporary files: .NAME.RANDOM.ptrain-tmp
_UMASK = os.umask(0)
os.umask(_UMASK)  # (read once: os.umask can only be read by setting it)


_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def special(path: Path) -> str:
    """What path is if it is a device, pipe or socket ("a character device"...), which a rename
    would replace with a plain file (/dev/full, as root); "" otherwise (missing, a file, a link:
    a rename replaces the link, never what it points to)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return ""
    return next((what for test, what in _SPECIAL if test(mode)), "")


def _refuse_special(path: Path) -> None:
    what = special(path)
    if what:
        raise OSError(errno.EEXIST, f"it is {what}, never replaced by a file", str(path))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: a crash at
    any moment leaves either the old file or the new one, never a torn one. The temp file has
    an unpredictable name and is created exclusively (mkstemp: never an existing file or a link
    someone planted), and the rename replaces a link at `path` itself, never what it points to."""
    path = Path(path)
    _refuse_special(path)
    tmp = _written_beside(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


class PairTorn(OSError):
    """The second rename of atomic_write_pair failed and the first could not be undone (the
    disk has no hard links to keep the previous file by): the first file is new, the second
    old."""


def atomic_write_pair(first: Path, data: bytes, second: Path, more: bytes) -> None:
    """Both files or neither (an export and its sidecar): each is written whole beside its place
    before either is renamed; should the second rename fail, the previous first file comes back
    from a hard link kept to it. An OSError names the user's file, never a temporary one."""
    temps: list[Path] = []
    backup, at = None, first
    _refuse_special(first)
    _refuse_special(second)
    try:
        for at, blob in ((first, data), (second, more)):
            temps.append(_written_beside(at, lambda f, blob=blob: f.write(blob)))
        at, had, backup = first, first.is_file(), _hard_link(first)
        os.replace(temps[0], first)
        try:
            at = second
            os.replace(temps[1], second)
        except OSError as e:
            if had and backup is None:
                raise PairTorn(e.errno, e.strerror, str(second)) from None
            with contextlib.suppress(OSError):  # the previous one back, or none, as before
                os.replace(backup, first) if backup is not None else first.unlink()
            raise
    except PairTorn:
        raise
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(at)) from None
    finally:
        for leftover in (*temps, *([backup] if backup else [])):
            leftover.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # both are in place; a disk that cannot sync a folder
        _sync_folder(first.parent)      # (some network ones) makes them no less written


def _written_beside(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """A new temporary file beside path holding what `write` wrote, fsynced; its name is
    .NAME.RANDOM.ptrain-tmp, its mode what open() would give (not mkstemp's owner-only)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _hard_link(path: Path) -> Path | None:
    """A hard link to the file, so that it can be put back; None if there is none, or where the
    disk has no hard links."""
    if not path.is_file():
        return None
    link = Path(tempfile.mktemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    try:
        os.link(path, link)  # fails, never overwrites, if the name was taken meanwhile
    except OSError:
        return None
    return link


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)  # make the renames themselves durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotRegular(OSError):
    """A path to read that is a FIFO, device, socket or folder: `kind` says which."""

    def __init__(self, path: Path, kind: str):
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", str(path))
        self.kind = kind


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def read_regular(path: Path, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes (at most max_bytes + 1 of them: the caller sees it is too big).
    Opened without blocking and checked by the open file itself: a FIFO would block a plain
    read forever, /dev/zero never end; either raises NotRegular."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(path, next((k for test, k in _KINDS if test(mode)), "a special file"))
    with open(fd, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes + 1)


def read_text(path: Path, max_bytes: int, what: str, error: type[Exception]) -> str:
    """A regular file's UTF-8 text (a spreadsheet's or Notepad's byte-order mark dropped), or
    `error` with one line: `what` names the file there ("config file x.toml", "--labels x")."""
    try:
        data = read_regular(path, max_bytes)
    except FileNotFoundError:
        raise error(f"{what}: no such file") from None
    except NotRegular as e:
        raise error(f"{what}: not a regular file ({e.kind})") from None
    except OSError as e:
        raise error(f"{what}: cannot read it ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise error(f"{what}: larger than {max_bytes >> 20} MiB, the most it may be")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def leftovers(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The temporary files a killed atomic_write of one of `names` left in `folder`: exactly
    its patterns (and older versions' .NAME.tmpPID), never a user's .notes.tmp or .env.tmpl."""
    made = re.compile(rf"\.({'|'.join(map(re.escape, names))})\."
                      rf"(\w+{re.escape(TMP_SUFFIX)}|tmp\d+)")  # mkstemp's letters: [a-z0-9_]
    return [p for p in folder.glob(".*") if made.fullmatch(p.name)]


def open_append(path: Path):
    """Open a text file for appending, never through a symbolic link (a link in a run directory
    could send the writes anywhere)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise no_links(e, path) from None
    return open(fd, "a")


def no_links(e: OSError, path: Path) -> OSError:
    if e.errno == errno.ELOOP:  # O_NOFOLLOW met a link
        return OSError(errno.ELOOP, "it is a symbolic link, and ptrain does not write through "
                       "links in a run directory; remove it", str(path))
    return e
