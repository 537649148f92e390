"""A found folder (folders.find) as arrays: decoded once at the run's channels and size, or
read from the decode cache when nothing it depends on changed (cache.py), then split into the
run's training, validation and test rows (splits.py)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.data import cache, csvlabels, decode, splits
from pytorch_cli.data.folders import Found, Options, check_classes, find, shape
from pytorch_cli.platform.errors import PtrainError, warn

Arrays = tuple[torch.Tensor, torch.Tensor]  # (N, C, H, W) uint8 images, (N,) int64 labels


@dataclass
class Read:
    """A folder as a run reads it: its splits (val None without --val-split), classes, the
    run's channels and size, the files skipped, the digest of what its splits are drawn from."""
    train: Arrays
    val: Arrays | None
    test: Arrays
    classes: list[str]
    channels: int
    size: tuple[int, int]  # (height, width)
    skipped: list[str]
    listing: str = ""  # splits.listing; "" where nothing is drawn (test/, no --val-split)
    names: dict[str, list[str]] = field(default_factory=dict)  # split -> each row's file


def read(root: Path, opts: Options, seed: int, val_split: float = 0.0) -> Read:
    """The folder at root, split: decoded, or from the decode cache when nothing it depends on
    changed. Splits are row numbers of the decoded arrays (splits.py), written as an entry of
    their own, so a cached folder's splits are memory maps too, never a copy in memory."""
    with decode.status(f"listing {root}"):
        found = listed(root, opts.labels, opts.least_classes)
    arrays, meta, name = _decoded(found, opts)
    train_y = torch.from_numpy(arrays["train_y"])
    check_classes(found.classes, train_y, Path(opts.labels) if opts.labels else
                  root / "train" if meta["has_test"] else root, csv=bool(opts.labels))
    if not opts.hold_out:
        return _whole(found, arrays, meta)
    rows, train_rows = {"test": ("test", None)}, None  # split -> (split read, its rows; None: all)
    if meta["has_test"] and opts.test_split != Options.test_split:  # set, and nothing to do
        warn(f"--test-split {opts.test_split:g} is not used: {root}'s test folder is the test set")
    names = meta["train_files"] if opts.split in splits.NAMED else None
    if not meta["has_test"]:  # held out: the same images for the same files, fraction and seed
        mask = splits.held_out(train_y, opts.test_split, seed, names)
        rows["test"] = ("train", mask.nonzero().flatten())
        train_rows = (~mask).nonzero().flatten()
    if meta.get("has_val"):  # train/, val/ and test/: the val folder is the validation set
        if val_split:
            warn(f"--val-split {val_split:g} is not used: {root}'s validation folder is the "
                 "validation set")
        rows["val"], val_split = ("val", None), 0.0
    if val_split:
        n = len(train_y) if train_rows is None else len(train_rows)
        left = (names if train_rows is None or names is None else
                [names[i] for i in train_rows.tolist()])
        per_class = opts.split == splits.PER_CLASS  # (older runs: over the whole set)
        val, kept = splits.val_rows(n, val_split, seed, left, (
            train_y if train_rows is None else train_y[train_rows]) if per_class else None)
        rows["val"] = ("train", val if train_rows is None else train_rows[val])
        train_rows = kept if train_rows is None else train_rows[kept]
    rows["train"] = ("train", train_rows)
    out = _selected(arrays, rows, name, (opts.test_split, val_split, seed, opts.split))
    if not len(out["test"][1]):
        raise PtrainError(f"{root}: no usable test image (a test/ or val/ folder of class "
                          "folders, or classes of 2 images or more to hold some out)")
    return Read(out["train"], out.get("val"), out["test"], found.classes, meta["channels"],
                tuple(meta["size"]), meta["skipped"],  # what its splits are drawn from:
                splits.listing(meta["train_files"], train_y.tolist())
                if not meta["has_test"] or val_split else "", _names(meta, rows))


def _names(meta: dict, rows: dict) -> dict[str, list[str]]:
    """split -> the file of each of its rows (eval --errors names them); a cache entry made
    before test/ files were named (2026-12-07) names its training rows only."""
    source = {split: meta.get(f"{split}_files") for split in ("train", "test", "val")}
    return {split: files if index is None else [files[i] for i in index.tolist()]
            for split, (read, index) in rows.items() if (files := source[read]) is not None}


def _whole(found: Found, arrays: dict, meta: dict) -> Read:
    """The folder's every image, as read (its test/ as the test split; else none held out)."""
    def split(name: str) -> Arrays:
        return torch.from_numpy(arrays[f"{name}_x"]), torch.from_numpy(arrays[f"{name}_y"])
    train = split("train")
    test = split("test") if meta["has_test"] else (train[0][:0], train[1][:0])
    whole = {s: (s, None) for s in ("train", "test", "val")
             if s == "train" or meta.get(f"has_{s}")}
    return Read(train, split("val") if meta.get("has_val") else None, test, found.classes,
                meta["channels"], tuple(meta["size"]), meta["skipped"], "", _names(meta, whole))


def listed(root: Path, labels: str = "", least: int = 2) -> Found:
    """The folder's classes (at least `least`) and files: from its class subfolders, or from
    --labels' CSV."""
    return (csvlabels.find(root, Path(labels).expanduser(), least) if labels else
            find(root, least))


def _selected(arrays: dict, rows: dict, name: str | None, params: tuple) -> dict[str, Arrays]:
    """split -> (images, labels): rows (None: all) of a decoded split's arrays; from a cache
    entry of their own where any split is a selection (made once per folder, split and seed)."""
    def pick(source: str, index: torch.Tensor | None) -> Arrays:
        x, y = (torch.from_numpy(arrays[f"{source}_{k}"]) for k in ("x", "y"))
        return (x, y) if index is None else (x.index_select(0, index), y[index])
    if all(index is None for _, index in rows.values()) or name is None:
        return {split: pick(*how) for split, how in rows.items()}
    # split -> (its source's images and labels, its row numbers)
    chosen = {split: (arrays[f"{source}_x"], arrays[f"{source}_y"],
                      np.arange(len(arrays[f"{source}_y"])) if index is None else index.numpy())
              for split, (source, index) in rows.items()}

    def disagrees(got: dict, _) -> str:  # each split: its rows' labels, images of their shape
        for split, (x, y, index) in chosen.items():
            if got[f"{split}_x"].shape != (len(index), *x.shape[1:]) or \
                    not np.array_equal(got[f"{split}_y"], y[index]):
                return f"its {split} rows are not the folder's"
        return ""
    derived = cache.derived_key(name, *params)
    hit = cache.load(derived, disagrees)
    if hit is None and (w := cache.writer(derived)) is not None:
        try:
            for split, (x, y, index) in chosen.items():
                cache.copy_rows(w.array(f"{split}_x", (len(index), *x.shape[1:]), np.uint8), x,
                                index)
                w.array(f"{split}_y", (len(index),), np.int64)[:] = y[index]
            w.commit({})
            hit = cache.load(derived)
        except OSError as e:
            w.abort()
            cache.cannot_write(e, "this split's selection of rows")
    if hit is None:
        return {split: pick(*how) for split, how in rows.items()}
    return {split: (torch.from_numpy(hit[0][f"{split}_x"]), torch.from_numpy(hit[0][f"{split}_y"]))
            for split in rows}


def _decoded(found: Found, opts: Options) -> tuple[dict[str, np.ndarray], dict, str | None]:
    """(arrays train_x/_y, test_x/_y (and val_x/_y), meta, cache key or None), from the cache or
    decoded (into the cache's memory maps where it can be written, else into memory). The entry
    is keyed by the channels and size decoded at, and also found by the ones asked (0, None:
    the images'), which eval and resume never ask (a hostile trial: each decoded anew)."""
    check = functools.partial(_disagrees, found)
    try:
        sources = _sources(found)
        with decode.status(f"checking {sum(len(f) for _, f in sources):,} files' dates"):
            files = cache.stamp(sources)
        asked = cache.key(files, found.skipped, opts.channels, opts.image_size, opts.resize)
    except OSError:  # a file gone since the listing: no key; decode what is there
        files = asked = None
    entry = cache.followed(asked) if asked else None
    hit = cache.load(entry, check) if entry else None
    if hit is not None:
        return (*hit, entry)
    channels, size = shape(found, opts.channels, opts.image_size)
    name = asked and cache.key(files, found.skipped, channels, size, opts.resize)
    hit = cache.load(name, check) if name and name != asked else None
    if hit is not None:
        return (*hit, cache.alias(asked, name))
    w = cache.writer(name) if name else None
    try:
        arrays, rows, names = _decode_splits(found, channels, size, opts.resize, w)
    except OSError as e:  # no room in the cache: decode into memory
        w.abort()
        cache.cannot_write(e)
        arrays, rows, names, w = *_decode_splits(found, channels, size, opts.resize, None), None
    except BaseException:  # a stop signal (signals.StoppedEarly): no half-written entry stays
        if w is not None:
            w.abort()
        raise
    meta = {"channels": channels, "size": list(size), "skipped": found.skipped,
            "has_test": found.test is not None, "has_val": found.val is not None,
            **{f"{split}_files": files for split, files in names.items()}}
    if w is not None:
        try:
            w.commit(meta, rows)
        except OSError as e:  # a hostile trial: "cannot write standard output", no run
            cache.cannot_write(e)
        else:
            hit = cache.load(name)
            if hit is not None:
                return (*hit, cache.alias(asked, name))
    return {k: a[:rows[k]] for k, a in arrays.items()}, meta, None


def _disagrees(found: Found, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """What in a cache entry disagrees with itself or with the folder's listing (a damaged
    entry: it would train on other shapes or labels, or blame the folder); "" if nothing."""
    shape_ = [meta["channels"], *meta["size"]]
    for split, files in _sources(found):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if list(x.shape[1:]) != shape_ or y.shape != x.shape[:1] or len(y) > len(files):
            return f"its {split} arrays are {x.shape} and {y.shape} for {len(files)} files"
        listed = np.bincount([label for _, label in files], minlength=len(found.classes))
        if len(y) and (y.min() < 0 or y.max() >= len(found.classes)
                       or (np.bincount(y, minlength=len(listed)) > listed).any()):
            return f"its {split} labels are not the folder's"
    if any(len(meta.get(f"{split}_files", arrays[f"{split}_y"])) != len(arrays[f"{split}_y"])
           for split, _ in _sources(found)):
        return "its file names are not its rows'"
    return ""


def _sources(found: Found) -> list[tuple[str, list]]:
    """The folder's splits as listed: train, test (empty: held out), and a val folder's."""
    return [("train", found.train), ("test", found.test or []),
            *([("val", found.val)] if found.val is not None else [])]


def _decode_splits(found: Found, channels: int, size: tuple[int, int], resize: str,
                   w: cache.Writer | None):
    """Each split decoded into an array of the writer's (or of memory): (arrays, rows filled,
    split -> the file name of each row, relative to the folder given)."""
    arrays, rows, names = {}, {}, {}
    for split, files in _sources(found):
        shape_ = (len(files), channels, *size)
        x = w.array(f"{split}_x", shape_, np.uint8) if w else np.empty(shape_, np.uint8)
        y = w.array(f"{split}_y", (len(files),), np.int64) if w else np.empty(len(files), np.int64)
        labels, kept = decode.into(x, files, found.skipped, resize)
        y[:len(labels)] = labels
        arrays.update({f"{split}_x": x, f"{split}_y": y})
        rows.update({f"{split}_x": len(labels), f"{split}_y": len(labels)})
        # the names the training rows are drawn by (splits.py); eval --errors names every row
        names[split] = [files[i][0].relative_to(found.root).as_posix() for i in kept]
    return arrays, rows, names
