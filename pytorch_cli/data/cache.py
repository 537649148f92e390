"""Decoded image folders kept on disk, so that a second run on the same folder decodes nothing,
and a folder larger than memory is read from the disk as it trains.

An entry is a folder of .npy arrays and a meta.json, keyed by everything its arrays depend on:
each file's path, class, size, mtime and ctime (and the files the listing skipped), the channels
and size it was decoded at, and this file's VERSION. A changed folder has another key, so it
is decoded again. A run that leaves the channels or size to the images finds its entry through
a link named by what it asked (`alias`): eval and resume, which ask the values the run found,
read the same entry. Arrays are written in place (decoding fills them, row by row) in a hidden
folder that is renamed into place when complete (one left by a killed process goes at the next
decode), and read back memory-mapped: pages come from
the disk as batches need them, so the images need not fit in memory (--workers streams them).
The cache lives outside the user's folder ($PTRAIN_CACHE_DIR, else ~/.cache/ptrain), holds at
most MAX_BYTES (the least recently used entries go first), and `ptrain cache --clear` empties
it. A cache that cannot be read or written costs a warning, never the run."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pytorch_cli.data.catalog import SQUASH
from pytorch_cli.platform.errors import PtrainError, UsageError, warn

VERSION = 4  # of what an entry holds and how it is decoded: a new one misses every old entry
MAX_BYTES = 20 * 2**30  # ImageNet-1k's training set at 64x64 is ~15 GiB
META = "meta.json"


def root() -> Path:
    return Path(os.environ.get("PTRAIN_CACHE_DIR") or "~/.cache/ptrain").expanduser() / "folders"


def stamp(listing: list[tuple[str, list]]) -> bytes:
    """What a key takes from the files (one stat each), computed once for the keys of a run.
    listing: (split, [(path, label)...]) in order."""
    lines = []
    for split, found in listing:
        for path, label in found:
            info = os.stat(path)  # ctime too: a copy that keeps mtimes (cp -p, rsync -a, tar)
            lines.append(f"{split}\0{os.path.abspath(path)}\0{label}\0{info.st_size}\0"  # still
                         f"{info.st_mtime_ns}\0{info.st_ctime_ns}\n"  # changes it; a name that
                         .encode(errors="surrogateescape"))  # is no UTF-8: its own bytes
    return b"".join(lines)


def key(files: bytes, skipped: list[str], channels: int, size: tuple[int, int] | None,
        resize: str = SQUASH) -> str:
    """files: stamp()'s; size (height, width), None: the images'. (--resize squash adds nothing:
    the entries made before --resize keep their keys.)"""
    h = hashlib.sha256(json.dumps([VERSION, channels, size, skipped,
                                   *([resize] if resize != SQUASH else [])]).encode())
    h.update(files)
    return h.hexdigest()[:32]


def alias(asked: str, name: str) -> str:
    """Entry `name` also found by key `asked` (a link beside it); returns `name`."""
    if asked != name:
        with contextlib.suppress(OSError):  # there already (another run), or a read-only cache
            os.symlink(name, root() / asked)
    return name


def followed(name: str) -> str:
    """The entry a key names: itself, or the one its alias links to."""
    link = root() / name
    return os.readlink(link) if link.is_symlink() and KEY.fullmatch(os.readlink(link)) else name


def derived_key(name: str, *params) -> str:
    """The key of an entry made from entry `name` by `params` (a split's fraction and seed): a
    folder inside that entry, so that it counts, and is evicted, with it."""
    return f"{name}/{hashlib.sha256(json.dumps(params).encode()).hexdigest()[:12]}"


def load(name: str, check=None) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays, meta) of an entry, or None if there is none (or it is unreadable, or `check`,
    given arrays and meta, says what in it disagrees). The arrays are copy-on-write memory
    maps: writable in memory (torch takes them as they are), while the file is never changed;
    each is cut to the rows meta["rows"] says were filled."""
    entry = root() / name
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / META).read_text())
        arrays = {k: np.load(entry / f"{k}.npy", mmap_mode="c")[:rows]
                  for k, rows in meta["rows"].items()}
        problem = check(arrays, meta) if check else ""
        if problem:
            raise ValueError(problem)
        with contextlib.suppress(OSError):  # used: the last to be evicted (a read-only cache,
            os.utime(root() / name.split("/")[0])  # shared, is read all the same)
        return arrays, meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        warn(f"the decode cache entry {entry} is unreadable ({e}); decoding the folder again")
        shutil.rmtree(entry, ignore_errors=True)  # damaged: decoded again, replaced
        return None


@dataclass
class Writer:
    """An entry being written, in a hidden folder beside the entries; `array` gives arrays to
    fill in place, `commit` publishes them. Space is reserved as each array is made, so a full
    disk is an OSError there, never a crash while filling a memory map."""
    name: str
    folder: Path = field(init=False)
    rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        final = root() / self.name
        self.folder = final.parent / f".{final.name}.{os.getpid()}@{HOST}.tmp"
        for dead, _ in writing(live=False):  # what killed writers left (on this host)
            shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def array(self, k: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        path = self.folder / f"{k}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
        self.rows[k] = shape[0]
        return out

    def commit(self, meta: dict, rows: dict[str, int] | None = None) -> None:
        """Publish the entry; `rows`: how many rows of an array were filled, where fewer. No
        room for its meta.json (2 MB of file names for 50,000 images) is an OSError, the
        folder removed: the caller goes on with the arrays it filled (still mapped)."""
        try:
            (self.folder / META).write_text(json.dumps({**meta, "rows": {**self.rows,
                                                                         **(rows or {})}}))
        except OSError:
            self.abort()
            raise
        try:
            os.rename(self.folder, root() / self.name)
        except OSError:  # another process published the same entry first: it is the same
            self.abort()
        _evict(MAX_BYTES)

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def copy_rows(out: np.ndarray, source: np.ndarray, index: np.ndarray) -> None:
    """out[i] = source[index[i]], a chunk at a time (in file order within it): the memory a
    copy between two memory maps needs is a chunk's."""
    for lo in range(0, len(index), 4096):
        chunk = index[lo:lo + 4096]
        out[lo:lo + len(chunk)] = source[np.sort(chunk)][np.argsort(np.argsort(chunk))]


def writer(name: str) -> Writer | None:
    """A Writer for a new entry, or None (and a warning) where the cache cannot be written."""
    try:
        return Writer(name)
    except OSError as e:
        cannot_write(e)
        return None


def cannot_write(e: OSError, part: str = "") -> None:
    """The warning for an entry not written: the folder's images (`part` ""), decoded again by
    the next run, or `part` of an entry whose images were read from the cache (a split's rows:
    it had said "decodes the folder again", untrue, a hostile trial); and what to do."""
    dangling = next((p for p in (root().parent, root()) if p.is_symlink() and not p.exists()),
                    None)  # (mkdir says "File exists" of it)
    if e.errno == errno.ENOSPC:  # full of its own entries, maybe: it never evicts for room
        advice = "its disk is full (`ptrain cache` says what the cache holds, --clear frees it)"
    elif dangling is not None:
        advice = (f"{dangling} is a link to {os.readlink(dangling)}, which is not there: make "
                  "that folder, or point PTRAIN_CACHE_DIR at one")
    else:
        advice = "set PTRAIN_CACHE_DIR to a writable folder"
    said = (f"{part} is not kept (the images were read from it)" if part else
            "the next run decodes the folder again")
    warn(f"cannot write the decode cache in {root()} ({e.strerror or e}); {said}; {advice}")


KEY = re.compile(r"[0-9a-f]{32}")  # key()'s names: only those are ptrain's to remove
# a Writer's folder, beside the entries or in one (a split's): .NAME.PID@HOST.tmp
WRITING = re.compile(r"\.([0-9a-f]{32}|[0-9a-f]{12})\.(\d+)(?:@([\w.-]*))?\.tmp")
HOST = re.sub(r"[^\w.-]", "-", socket.gethostname())[:64]  # a shared cache (NFS home): whose pid


def entries() -> list[Path]:
    """The cache's entries: its own folders only. PTRAIN_CACHE_DIR may name a folder that
    holds a user's files (a hostile trial's ~/folders/taxes went with `cache --clear`)."""
    return sorted(p for p in root().iterdir() if p.is_dir() and not p.is_symlink()
                  and KEY.fullmatch(p.name)) if root().is_dir() else []


def writing(live: bool) -> list[tuple[Path, int]]:
    """(folder, pid) of the entries being written by a live process (live), or left by a dead
    one: a Writer's folders on this host whose pid is gone (another host's are never judged)."""
    found = []
    for parent in [root(), *entries()] if root().is_dir() else []:
        for p in parent.iterdir():
            m = WRITING.fullmatch(p.name)
            if m and p.is_dir() and not p.is_symlink() and (m[3] or HOST) == HOST:
                if _alive(int(m[2])) == live:
                    found.append((p, int(m[2])))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        pass
    return True


def size(entry: Path) -> int:
    return sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())


def _evict(limit: int) -> None:
    """The least recently used entries go until the cache holds at most `limit` bytes."""
    for old in root().glob("*.np[z]"):  # VERSION 1's entries, one file each
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    found = sorted(entries(), key=lambda p: p.stat().st_mtime)
    total = sum(map(size, found))
    while found and total > limit:
        oldest = found.pop(0)
        total -= size(oldest)
        shutil.rmtree(oldest, ignore_errors=True)
    for link in _aliases():
        if not link.exists():  # its entry went
            link.unlink(missing_ok=True)


def _aliases() -> list[Path]:
    return [p for p in root().iterdir() if p.is_symlink() and KEY.fullmatch(p.name)
            and KEY.fullmatch(os.readlink(p))] if root().is_dir() else []


def check_root() -> None:
    """`ptrain cache`: one line if $PTRAIN_CACHE_DIR (or its folders/) is no folder."""
    for at in (root().parent, root()):
        if at.exists() and not at.is_dir():
            raise UsageError(f"the decode cache {at} is not a folder; point PTRAIN_CACHE_DIR "
                             "at one")  # a setting's error (exit 2), as PTRAIN_RUNS_DIR's


def usage() -> str:
    """`ptrain cache`'s line: the entries, and the decodes under way or left by killed ones."""
    found = entries()  # (an entry's own writers count in it)
    live, dead = ([w for w in writing(alive) if w[0].parent == root()] for alive in (True, False))
    mib = [sum(map(size, paths)) / 2**20 for paths in (found, [p for p, _ in live],
                                                        [p for p, _ in dead])]
    return (f"{root()}: {len(found)} {'entry' if len(found) == 1 else 'entries'}, {mib[0]:.1f} "
            f"MiB (at most {MAX_BYTES // 2**30} GiB: the least recently used go first)"
            + (f"; {mib[1]:.1f} MiB being decoded (pid {', '.join(str(p) for _, p in live)})"
               if live else "")
            + (f"; {mib[2]:.1f} MiB left by killed decodes (the next decode or --clear removes "
               "them)" if dead else ""))


def clear() -> tuple[int, int, list[int]]:
    """Remove every entry, its aliases, and what killed writers left: (entries, bytes removed,
    the pids of decodes under way, whose folders stay); anything else in the folder stays. A
    cache it may not change is one line."""
    found = entries()
    dead = [p for p, _ in writing(live=False) if p.parent == root()]  # (an entry's go with it)
    removed = sum(map(size, found + dead))
    try:
        for entry in dead + found:
            shutil.rmtree(entry)
        for link in _aliases():
            link.unlink()
    except OSError as e:
        raise PtrainError(f"cannot clear the decode cache {root()}: {e.strerror} "
                          f"({e.filename}); what could not be removed stays") from None
    return len(found), removed, [pid for _, pid in writing(live=True)]
