"""--dataset folder: the user's own images, found the way torchvision's ImageFolder finds them
(a class is a subfolder, in sorted order; images in nested folders count), in one of two layouts:

  DIR/train/<class>/...  with  DIR/test/<class>/... (or DIR/val/); train/ alone: as below
  DIR/<class>/...        a seeded, stratified --test-split of each class is held out for testing

Every image is decoded once at the run's channels and size (images.read_image, as in eval and
predict); a file that is no usable image is skipped, counted in a warning, listed in the run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.data import cache, catalog, decode, images, splits
from pytorch_cli.platform.errors import PtrainError, UsageError, plural, warn

# torchvision.datasets.folder.IMG_EXTENSIONS (tested equal), any case; torchvision is not
# imported for it: it takes seconds (it imports torch._dynamo)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FOLDERS = ("test", "val")


@dataclass(frozen=True)
class Options:
    """What a folder run is decoded as: 0 and None = from the images (auto); image_size is
    (height, width); `stats`: the mean and std a saved model was trained with (else computed
    from the training images)."""
    channels: int = 0
    image_size: tuple[int, int] | None = None
    test_split: float = 0.2
    stats: tuple[list[float], list[float]] | None = None
    split: str = splits.BY_NAME  # how rows are held out (splits.py); "": as runs saved before


@dataclass
class Found:
    classes: list[str]
    train: list[tuple[Path, int]]  # (file, class index)
    test: list[tuple[Path, int]] | None  # None: held out by --test-split
    skipped: list[str] = field(default_factory=list)  # "path: why"
    root: Path = Path()  # the folder given: file names are relative to it


def _class_files(folder: Path, skipped: list[str]) -> list[Path]:
    """The image files under a class folder, at any depth, in sorted order. Links are followed
    (as ImageFolder does), each real folder once: a link back up would loop."""
    top = os.path.realpath(folder)
    out, seen = [], {top}

    def unreadable(e: OSError) -> None:
        skipped.append(f"{e.filename}: cannot read it ({e.strerror})")
    for parent, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(Path(parent, d))
            if d.startswith("."):  # .ipynb_checkpoints, .git...
                skipped.append(f"{Path(parent, d)}: a hidden folder")
            elif real in seen or top.startswith(real + os.sep):  # read, or above: a loop
                skipped.append(f"{Path(parent, d)}: a link to a folder read already")
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept  # walked in sorted order
        for name in sorted(names):
            path = Path(parent, name)
            if name.startswith("."):
                skipped.append(f"{path}: a hidden file")
            elif not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped.append(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            else:
                out.append(path)
    return out


def images_in(folder: Path) -> list[Path]:
    """The image files under a folder, at any depth, in sorted order (what predict takes for a
    folder; hidden files and other extensions are left out, as in training)."""
    return _class_files(folder, [])


def _classes(root: Path, skipped: list[str]) -> dict[str, list[Path]]:
    """class name -> its files, for the class folders directly in root."""
    found = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            skipped.append(f"{entry}: hidden")
        elif entry.is_dir():
            found[entry.name] = _class_files(entry, skipped)
        else:
            skipped.append(f"{entry}: a file beside the class folders")
    return found


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(the folder of the training classes, the test folder or None: --test-split held out).
    train/ is a layout beside test/ or val/, or alone; among other folders it is a class. Other
    folders beside train/ and test/ are an error: one reading or the other would drop images."""
    names = {e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")}
    test = next((t for t in TEST_FOLDERS if t in names), None)
    others = sorted(names - {"train", *TEST_FOLDERS})
    if "train" not in names or (test is None and others):
        return root, None
    if others:
        raise PtrainError(f"{root} holds train/ and {test}/ beside other folders "
                          f"({', '.join(others[:3])}): put every class folder inside train/ "
                          f"and {test}/, or use one folder per class and no train/")
    if test == "test" and "val" in names:
        warn(f"{root / 'val'} is not read: {root / 'test'} is the test set (--val-split F holds "
             "a validation set out of train/)")
    return root / "train", root / test if test else None


def find(root: Path) -> Found:
    """The classes and files under root, in either layout; bad folders are one error line."""
    if not root.is_dir():
        raise PtrainError(f"--dataset folder: {root} is not a folder; pass --data-dir DIR, a "
                          "folder of class subfolders (or of train/ and test/ ones)")
    skipped: list[str] = []
    where, test_dir = _layout(root)
    train = _classes(where, skipped)
    test = _classes(test_dir, skipped) if test_dir else None
    unknown = sorted(set(test or ()) - set(train))
    if unknown:
        raise PtrainError(f"{test_dir}: class folder {unknown[0]!r} is not in {where}; a test "
                          "class must be one the model learns")
    if len(train) < 2:
        raise PtrainError(f"{where}: {plural(len(train), 'class folder')} found; a classifier "
                          "needs at least 2 (one subfolder of images per class)")
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}

    def files(tree):
        return [(p, index[c]) for c in sorted(tree) for p in tree[c]]
    return Found(classes, files(train), files(test) if test is not None else None, skipped,
                 root)


def shape(found: Found, channels: int, size: tuple[int, int] | None) -> tuple[int, tuple]:
    """(channels, (height, width)) of the run: as given, or from the images' headers: 1 channel
    when every image is grayscale, else 3; the images' own size when they all share one. A file
    whose header is unreadable leaves the file lists here (and is added to the skipped ones)."""
    sizes, gray = set(), True

    def readable(files):
        nonlocal gray
        kept = []
        for (path, label), (header, error) in zip(files, decode.headers([p for p, _ in files])):
            if error:
                found.skipped.append(error)
                continue
            kept.append((path, label))
            sizes.add((header[1][1], header[1][0]))  # PIL's (width, height)
            gray = gray and header[0] in images.GRAY_MODES
        return kept
    found.train = readable(found.train)
    found.test = readable(found.test) if found.test is not None else None
    if not sizes:
        raise PtrainError("--dataset folder: no readable images in the class folders")
    if not size:
        if len(sizes) > 1:
            seen = ", ".join(map(catalog.size_text, sorted(sizes)[:4]))
            more = f" and {len(sizes) - 4} more" if len(sizes) > 4 else ""
            raise UsageError(f"--dataset folder: the images are {seen}{more} (height x width); "
                             "pass --image-size N or HxW (every image is then resized to it)")
        size = next(iter(sizes))
    if max(size) > catalog.MAX_IMAGE_SIZE:
        most = catalog.MAX_IMAGE_SIZE
        raise UsageError(f"--dataset folder: images of {catalog.size_text(size)} are over the "
                         f"{most} px a side ptrain decodes into memory; pass --image-size N or "
                         f"HxW (at most {most} a side)")
    return channels or (1 if gray else 3), size


def check_classes(classes: list[str], labels: torch.Tensor, where: Path) -> None:
    counts = torch.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts.tolist()) if n == 0]
    if empty:
        raise PtrainError(f"{where}: class folder {empty[0]!r} holds no usable image; add "
                          "images or remove the folder")


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


def read(root: Path, opts: Options, seed: int, val_split: float = 0.0) -> Read:
    """The folder at root, split: decoded, or from the decode cache when nothing it depends on
    changed. Splits are row numbers of the decoded arrays (splits.py), written as an entry of
    their own, so a cached folder's splits are memory maps too, never a copy in memory."""
    found = find(root)
    arrays, meta, name = _decoded(found, opts)
    train_y = torch.from_numpy(arrays["train_y"])
    check_classes(found.classes, train_y, root / "train" if meta["has_test"] else root)
    rows, train_rows = {"test": ("test", None)}, None  # split -> (split read, its rows; None: all)
    if meta["has_test"] and opts.test_split != Options.test_split:  # set, and nothing to do
        warn(f"--test-split {opts.test_split:g} is not used: {root}'s test folder is the test set")
    names = meta["train_files"] if opts.split == splits.BY_NAME else None
    if not meta["has_test"]:  # held out: the same images for the same files, fraction and seed
        mask = splits.held_out(train_y, opts.test_split, seed, names)
        rows["test"] = ("train", mask.nonzero().flatten())
        train_rows = (~mask).nonzero().flatten()
    if val_split:
        n = len(train_y) if train_rows is None else len(train_rows)
        left = names if train_rows is None or names is None else [names[i] for i in train_rows]
        val, kept = splits.val_rows(n, val_split, seed, left)
        rows["val"] = ("train", val if train_rows is None else train_rows[val])
        train_rows = kept if train_rows is None else train_rows[kept]
    rows["train"] = ("train", train_rows)
    out = _selected(arrays, rows, name, (opts.test_split, val_split, seed, opts.split))
    if not len(out["test"][1]):
        raise PtrainError(f"{root}: no usable test image (a test/ or val/ folder of class "
                          "folders, or classes of 2 images or more to hold some out)")
    return Read(out["train"], out.get("val"), out["test"], found.classes, meta["channels"],
                tuple(meta["size"]), meta["skipped"],  # what its splits are drawn from:
                splits.listing(found.train, root) if not meta["has_test"] or val_split else "")


def _selected(arrays: dict, rows: dict, name: str | None, params: tuple) -> dict[str, Arrays]:
    """split -> (images, labels): rows (None: all) of a decoded split's arrays; from a cache
    entry of their own where any split is a selection (made once per folder, split and seed)."""
    def pick(source: str, index: torch.Tensor | None) -> Arrays:
        x, y = (torch.from_numpy(arrays[f"{source}_{k}"]) for k in ("x", "y"))
        return (x, y) if index is None else (x.index_select(0, index), y[index])
    if all(index is None for _, index in rows.values()) or name is None:
        return {split: pick(*how) for split, how in rows.items()}
    derived = cache.derived_key(name, *params)
    hit = cache.load(derived)
    if hit is None and (w := cache.writer(derived)) is not None:
        try:
            for split, (source, index) in rows.items():
                x, y = arrays[f"{source}_x"], arrays[f"{source}_y"]
                index = torch.arange(len(y)) if index is None else index
                cache.copy_rows(w.array(f"{split}_x", (len(index), *x.shape[1:]), np.uint8), x,
                                index.numpy())
                w.array(f"{split}_y", (len(index),), np.int64)[:] = y[index.numpy()]
            w.commit({})
            hit = cache.load(derived)
        except OSError as e:
            w.abort()
            cache.cannot_write(e)
    if hit is None:
        return {split: pick(*how) for split, how in rows.items()}
    return {split: (torch.from_numpy(hit[0][f"{split}_x"]), torch.from_numpy(hit[0][f"{split}_y"]))
            for split in rows}


def _decoded(found: Found, opts: Options) -> tuple[dict[str, np.ndarray], dict, str | None]:
    """(arrays train_x/_y and test_x/_y, meta, cache key or None), from the cache or decoded
    (into the cache's memory maps where it can be written, else into memory)."""
    try:
        name = cache.key([("train", found.train), ("test", found.test or [])], found.skipped,
                         opts.channels, opts.image_size)
    except OSError:  # a file gone since the listing: no key; decode what is there
        name = None
    hit = cache.load(name) if name else None
    if hit is not None:
        return (*hit, name)
    channels, size = shape(found, opts.channels, opts.image_size)
    w = cache.writer(name) if name else None
    try:
        arrays, rows, names = _decode_splits(found, channels, size, w)
    except OSError as e:  # no room in the cache: decode into memory
        w.abort()
        cache.cannot_write(e)
        arrays, rows, names, w = *_decode_splits(found, channels, size, None), None
    meta = {"channels": channels, "size": list(size), "skipped": found.skipped,
            "has_test": found.test is not None, "train_files": names}
    if w is not None:
        w.commit(meta, rows)
        hit = cache.load(name)
        if hit is not None:
            return (*hit, name)
    return {k: a[:rows[k]] for k, a in arrays.items()}, meta, None


def _decode_splits(found: Found, channels: int, size: int, w: cache.Writer | None):
    """Each split decoded into an array of the writer's (or of memory): (arrays, rows filled,
    the file name of each training row, relative to the folder given)."""
    arrays, rows = {}, {}
    for split, files in (("train", found.train), ("test", found.test or [])):
        shape_ = (len(files), channels, *size)
        x = w.array(f"{split}_x", shape_, np.uint8) if w else np.empty(shape_, np.uint8)
        y = w.array(f"{split}_y", (len(files),), np.int64) if w else np.empty(len(files), np.int64)
        labels, kept = decode.into(x, files, found.skipped)
        y[:len(labels)] = labels
        arrays.update({f"{split}_x": x, f"{split}_y": y})
        rows.update({f"{split}_x": len(labels), f"{split}_y": len(labels)})
        if split == "train":  # the names its rows are drawn by (splits.py)
            names = [files[i][0].relative_to(found.root).as_posix() for i in kept]
    return arrays, rows, names
