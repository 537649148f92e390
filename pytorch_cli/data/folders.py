"""--dataset folder: the user's own images, found the way torchvision's ImageFolder finds them
(a class is a subfolder, in sorted order; images in nested folders count), in one of two layouts:

  DIR/train/<class>/...  with  DIR/test/<class>/... (or DIR/val/)
  DIR/<class>/...        a seeded, stratified --test-split of each class is held out for testing

Every image is decoded once at the run's channels and size (images.read_image: the same in
train, eval and predict). A file that is no usable image is skipped, never a crash: the skipped
files are counted in one warning and listed in the run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.data import cache, catalog, images
from pytorch_cli.platform.errors import PtrainError, UsageError, plural

# torchvision.datasets.folder.IMG_EXTENSIONS (tested equal), any case; torchvision is not
# imported for it: it takes seconds (it imports torch._dynamo)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FOLDERS = ("test", "val")


@dataclass(frozen=True)
class Options:
    """What a folder run is decoded as: 0 = from the images (auto); `stats`: the mean and std a
    saved model was trained with (else computed from the training images)."""
    channels: int = 0
    image_size: int = 0
    test_split: float = 0.2
    stats: tuple[list[float], list[float]] | None = None


@dataclass
class Found:
    classes: list[str]
    train: list[tuple[Path, int]]  # (file, class index)
    test: list[tuple[Path, int]] | None  # None: held out by --test-split
    skipped: list[str] = field(default_factory=list)  # "path: why"


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


def find(root: Path) -> Found:
    """The classes and files under root, in either layout; bad folders are one error line."""
    if not root.is_dir():
        raise PtrainError(f"--dataset folder: {root} is not a folder; pass --data-dir DIR, a "
                          "folder of class subfolders (or of train/ and test/ ones)")
    skipped: list[str] = []
    test_dir = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if (root / "train").is_dir() and test_dir is None:
        root = root / "train"  # train/ alone: its class folders, a --test-split held out
    if (root / "train").is_dir() and test_dir is not None:
        train, test = _classes(root / "train", skipped), _classes(test_dir, skipped)
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise PtrainError(f"{test_dir}: class folder {unknown[0]!r} is not in "
                              f"{root / 'train'}; a test class must be one the model learns")
        where = root / "train"
    else:
        train, test, where = _classes(root, skipped), None, root
    if len(train) < 2:
        raise PtrainError(f"{where}: {plural(len(train), 'class folder')} found; a classifier "
                          "needs at least 2 (one subfolder of images per class)")
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}

    def files(tree):
        return [(p, index[c]) for c in sorted(tree) for p in tree[c]]
    return Found(classes, files(train), files(test) if test is not None else None, skipped)


def shape(found: Found, channels: int, size: int) -> tuple[int, int]:
    """(channels, size) of the run: as given, or from the images' headers: 1 channel when every
    image is grayscale, else 3; the images' own size when they all share one, square."""
    sizes, gray = set(), True

    def readable(files):
        nonlocal gray
        kept = []
        for path, label in files:
            try:
                mode, (w, h) = images.image_header(path)
            except PtrainError as e:
                found.skipped.append(str(e))  # it names the file
                continue
            kept.append((path, label))
            sizes.add((w, h))
            gray = gray and mode in images.GRAY_MODES
        return kept
    found.train = readable(found.train)
    found.test = readable(found.test) if found.test is not None else None
    if not sizes:
        raise PtrainError("--dataset folder: no readable images in the class folders")
    if not size:
        if len(sizes) > 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
            seen = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
            more = f" and {len(sizes) - 4} more" if len(sizes) > 4 else ""
            raise UsageError(f"--dataset folder: the images are {seen}{more}; pass --image-size N "
                             "(every image is then resized to NxN)")
        size = next(iter(sizes))[0]
    if size > catalog.MAX_IMAGE_SIZE:
        most = catalog.MAX_IMAGE_SIZE
        raise UsageError(f"--dataset folder: images of {size}x{size} are over the {most} px "
                         f"ptrain decodes into memory; pass --image-size N (at most {most})")
    return channels or (1 if gray else 3), size


def decode(files: list[tuple[Path, int]], channels: int, size: int, skipped: list[str]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, size, size) uint8 images and their labels; an image that fails to decode is
    skipped."""
    decoded, labels = [], []
    for path, label in files:
        try:
            decoded.append(images.read_image(path, channels, size).numpy())
        except PtrainError as e:
            skipped.append(str(e))  # it names the file
            continue
        labels.append(label)
    if not decoded:
        return torch.zeros(0, channels, size, size, dtype=torch.uint8), torch.zeros(0).long()
    return torch.from_numpy(np.stack(decoded)), torch.tensor(labels, dtype=torch.int64)


def held_out(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A stratified, seeded test set: round(fraction x n) of each class's images (at least 1,
    and never all of a class's); a boolean mask over `labels`."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        n = len(members)
        k = min(n - 1, max(1, round(fraction * n))) if n > 1 else 0
        mask[members[torch.randperm(n, generator=g)[:k]]] = True
    return mask


def check_classes(classes: list[str], labels: torch.Tensor, where: Path) -> None:
    counts = torch.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts.tolist()) if n == 0]
    if empty:
        raise PtrainError(f"{where}: class folder {empty[0]!r} holds no usable image; add "
                          "images or remove the folder")


Arrays = tuple[torch.Tensor, torch.Tensor]  # (N, C, H, W) uint8 images, (N,) int64 labels


def read(root: Path, opts: Options, seed: int) -> tuple[Arrays, Arrays, list[str], int, int,
                                                          list[str]]:
    """(train, test, classes, channels, size, skipped files) of the folder at root: decoded, or
    from the decode cache when nothing it depends on changed."""
    found = find(root)
    train, test, channels, size, skipped = _decoded(found, opts)
    check_classes(found.classes, train[1], root / "train" if test is not None else root)
    if test is None:  # held out: the same images for the same folder, fraction and seed
        mask = held_out(train[1], opts.test_split, seed)
        test, train = (train[0][mask], train[1][mask]), (train[0][~mask], train[1][~mask])
    if not len(test[1]):
        raise PtrainError(f"{root}: no usable test image (a test/ or val/ folder of class "
                          "folders, or classes of 2 images or more to hold some out)")
    return train, test, found.classes, channels, size, skipped


def _decoded(found: Found, opts: Options):
    """(train, test or None, channels, size, skipped), from the cache or decoded (and cached)."""
    try:
        name = cache.key([("train", found.train), ("test", found.test or [])], found.skipped,
                         opts.channels, opts.image_size)
    except OSError:  # a file gone since the listing: no key; decode what is there
        name = None
    hit = cache.load(name) if name else None
    if hit is not None:
        arrays, meta = hit
        train = torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"])
        test = (torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"])
                ) if meta["has_test"] else None
        return train, test, meta["channels"], meta["size"], meta["skipped"]
    channels, size = shape(found, opts.channels, opts.image_size)
    train = decode(found.train, channels, size, found.skipped)
    test = decode(found.test, channels, size, found.skipped) if found.test is not None else None
    if name:
        held = test or (train[0][:0], train[1][:0])  # none: the split is made on each load
        cache.save(name, {"train_x": train[0].numpy(), "train_y": train[1].numpy(),
                          "test_x": held[0].numpy(), "test_y": held[1].numpy()},
                   {"channels": channels, "size": size, "skipped": found.skipped,
                    "has_test": test is not None})
    return train, test, channels, size, found.skipped


def stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1], summed in float64 over chunks (a
    float copy of a large folder would not fit in memory); a flat channel's std is 1/255."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares, n = total.clone(), images.numel() // images.shape[1]
    for chunk in images.split(1024):
        x = chunk.to(torch.float64) / 255
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    mean = total / n
    std = (squares / n - mean * mean).clamp(min=0).sqrt().clamp(min=1 / 255)
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
