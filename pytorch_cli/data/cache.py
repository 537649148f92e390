"""Decoded image folders kept on disk, so that a second run on the same folder decodes nothing,
and a folder larger than memory is read from the disk as it trains.

An entry is a folder of .npy arrays and a meta.json, keyed by everything its arrays depend on:
each file's path, class, size, mtime and ctime (and the files the listing skipped), the --channels
and --image-size asked for, and this file's VERSION. A changed folder has another key, so it
is decoded again. Arrays are written in place (decoding fills them, row by row) in a hidden
folder that is renamed into place when complete, and read back memory-mapped: pages come from
the disk as batches need them, so the images need not fit in memory (--workers streams them).
The cache lives outside the user's folder ($PTRAIN_CACHE_DIR, else ~/.cache/ptrain), holds at
most MAX_BYTES (the least recently used entries go first), and `ptrain cache --clear` empties
it. A cache that cannot be read or written costs a warning, never the run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
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


def key(listing: list[tuple[str, list]], skipped: list[str], channels: int,
        size: tuple[int, int] | None, resize: str = SQUASH) -> str:
    """listing: (split, [(path, label)...]) in order; size (height, width), None: the images'.
    (--resize squash adds nothing: the entries made before --resize keep their keys.)"""
    h = hashlib.sha256(json.dumps([VERSION, channels, size, skipped,
                                   *([resize] if resize != SQUASH else [])]).encode())
    for split, found in listing:
        for path, label in found:
            info = os.stat(path)  # ctime too: a copy that keeps mtimes (cp -p, rsync -a, tar)
            h.update(f"{split}\0{os.path.abspath(path)}\0{label}\0{info.st_size}\0"  # still
                     f"{info.st_mtime_ns}\0{info.st_ctime_ns}\n"  # changes it; a name that
                     .encode(errors="surrogateescape"))  # is no UTF-8: its own bytes
    return h.hexdigest()[:32]


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
        self.folder = final.parent / f".{final.name}.{os.getpid()}.tmp"
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
        """Publish the entry; `rows`: how many rows of an array were filled, where fewer."""
        (self.folder / META).write_text(json.dumps({**meta, "rows": {**self.rows,
                                                                     **(rows or {})}}))
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


def cannot_write(e: OSError) -> None:
    warn(f"cannot write the decode cache in {root()} ({e.strerror or e}); the next run "
         "decodes the folder again (set PTRAIN_CACHE_DIR to a writable folder)")


KEY = re.compile(r"[0-9a-f]{32}")  # key()'s names: only those are ptrain's to remove
WRITING = re.compile(r"\.[0-9a-f]{32}\.\d+\.tmp")  # a Writer's folder (a killed one's too)


def entries(named: re.Pattern = KEY) -> list[Path]:
    """The cache's entries (`named`: or a Writer's folders): its own folders only.
    PTRAIN_CACHE_DIR may name a folder that holds a user's files (a hostile trial's
    ~/folders/taxes went with `cache --clear`)."""
    return sorted(p for p in root().iterdir() if p.is_dir() and not p.is_symlink()
                  and named.fullmatch(p.name)) if root().is_dir() else []


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


def check_root() -> None:
    """`ptrain cache`: one line if $PTRAIN_CACHE_DIR (or its folders/) is no folder."""
    for at in (root().parent, root()):
        if at.exists() and not at.is_dir():
            raise UsageError(f"the decode cache {at} is not a folder; point PTRAIN_CACHE_DIR "
                             "at one")  # a setting's error (exit 2), as PTRAIN_RUNS_DIR's


def clear() -> tuple[int, int]:
    """Remove every entry, and what killed writers left: (entries, bytes) removed; anything
    else in the folder stays. A cache it may not change is one line."""
    found = entries()
    removed = sum(map(size, found))
    try:
        for entry in found + entries(WRITING):
            shutil.rmtree(entry)
    except OSError as e:
        raise PtrainError(f"cannot clear the decode cache {root()}: {e.strerror} "
                          f"({e.filename}); what could not be removed stays") from None
    return len(found), removed
