"""Decoded image folders kept on disk, so that a second run on the same folder decodes nothing.

An entry is keyed by everything its arrays depend on: each file's path, class, size and mtime
(and the files the listing skipped), the --channels and --image-size asked for, and this
file's VERSION. A changed folder has another key, so it is decoded again. The cache lives
outside the user's folder ($PTRAIN_CACHE_DIR, else ~/.cache/ptrain), holds at most
MAX_BYTES (the least recently used entries go first), and `ptrain cache --clear` empties it.
A cache that cannot be read or written costs a warning, never the run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from pytorch_cli.platform import files
from pytorch_cli.platform.errors import warn

VERSION = 1  # of what an entry holds and how it is decoded: a new one misses every old entry
MAX_BYTES = 20 * 2**30  # ImageNet-1k's training set at 64x64 is ~15 GiB


def root() -> Path:
    return Path(os.environ.get("PTRAIN_CACHE_DIR") or "~/.cache/ptrain").expanduser() / "folders"


def key(listing: list[tuple[str, list]], skipped: list[str], channels: int, size: int) -> str:
    """listing: (split, [(path, label)...]) in order."""
    h = hashlib.sha256(json.dumps([VERSION, channels, size, skipped]).encode())
    for split, found in listing:
        for path, label in found:
            info = os.stat(path)
            h.update(f"{split}\0{os.path.abspath(path)}\0{label}\0{info.st_size}\0"
                     f"{info.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def load(name: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays, meta) of an entry, or None if there is none (or it is unreadable)."""
    entry = root() / f"{name}.npz"
    try:
        with np.load(entry, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads((root() / f"{name}.json").read_text())
        os.utime(entry)  # used: the last to be evicted
        return arrays, meta
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as e:  # damaged: decode again, and replace it
        warn(f"the decode cache entry {entry} is unreadable ({e}); decoding the folder again")
        return None


def save(name: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    folder = root()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.atomic_write(folder / f"{name}.json", lambda f: f.write(json.dumps(meta).encode()))
        files.atomic_write(folder / f"{name}.npz", lambda f: np.savez(f, **arrays))
    except OSError as e:
        warn(f"cannot write the decode cache in {folder} ({e.strerror or e}); the next run "
             "decodes the folder again (set PTRAIN_CACHE_DIR to a writable folder)")
        return
    _evict(folder, MAX_BYTES)


def entries() -> list[Path]:
    return sorted(root().glob("*.npz")) if root().is_dir() else []


def _evict(folder: Path, limit: int) -> None:
    """The least recently used entries go until the cache holds at most `limit` bytes."""
    found = sorted(entries(), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in found)
    while found and total > limit:
        oldest = found.pop(0)
        total -= oldest.stat().st_size
        oldest.unlink(missing_ok=True)
        oldest.with_suffix(".json").unlink(missing_ok=True)


def clear() -> tuple[int, int]:
    """Remove every entry: (entries, bytes) removed."""
    found = entries()
    size = sum(p.stat().st_size for p in found)
    if root().is_dir():
        shutil.rmtree(root())
    return len(found), size
