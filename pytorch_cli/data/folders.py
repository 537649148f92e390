"""--dataset folder: the user's own images, found the way torchvision's ImageFolder finds them
(a class is a subfolder, in sorted order; images in nested folders count), in one of two layouts:

  DIR/train/<class>/...  with  DIR/test/<class>/... (or DIR/val/); train/ alone: as below
  DIR/<class>/...        a seeded, stratified --test-split of each class is held out for testing

Every image is then decoded once at the run's channels and size (folder_arrays.py, with
images.read_image, as in eval and predict); a file that is no usable image is skipped, counted in
a warning, listed in the run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pytorch_cli.data import catalog, decode, images, splits
from pytorch_cli.platform.errors import PtrainError, UsageError, plural

# torchvision.datasets.folder.IMG_EXTENSIONS (tested equal), any case; torchvision is not
# imported for it: it takes seconds (it imports torch._dynamo)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# a split's folder, in any case: GTSRB ships Train/ and Test/, Fruits-360 Training/ and Test/
TRAIN_FOLDERS = ("train", "training")
VAL_FOLDERS = ("val", "valid", "validation")  # ImageNet's, Roboflow's, Keras' names
TEST_FOLDERS = ("test", "testing", *VAL_FOLDERS)  # beside train/ alone, a val folder: the test set


@dataclass(frozen=True)
class Options:
    """What a folder run is decoded as: 0 and None = from the images (auto); image_size is
    (height, width); `stats`: the mean and std a saved model was trained with (else computed
    from the training images)."""
    channels: int = 0
    image_size: tuple[int, int] | None = None
    test_split: float = 0.2
    stats: tuple[list[float], list[float]] | None = None
    split: str = splits.PER_CLASS  # how rows are held out (splits.py); "": as runs saved before
    labels: str = ""  # --labels: the CSV file that names each image's class (csvlabels.py)
    least_classes: int = 2  # a classifier learns 2 or more; a set to evaluate may hold 1
    resize: str = catalog.SQUASH  # --resize: how an image of another shape meets image_size
    hold_out: bool = True  # False: every image in train, none held out (eval --split all)


@dataclass
class Found:
    classes: list[str]
    train: list[tuple[Path, int]]  # (file, class index)
    test: list[tuple[Path, int]] | None  # None: held out by --test-split
    skipped: list[str] = field(default_factory=list)  # "path: why"
    root: Path = Path()  # the folder given: file names are relative to it
    val: list[tuple[Path, int]] | None = None  # train/, val/ and test/: the validation set


@dataclass
class _Claims:
    """What a layout's class folders have read: real folder -> the class folder that read it,
    the linked image files (their target, class folder, path), and the subfolders they could
    not list (each with its line, "cannot read SUB: why")."""
    folders: dict[str, Path] = field(default_factory=dict)
    links: list[tuple[str, Path, Path]] = field(default_factory=list)
    unread: list[tuple[Path, str]] = field(default_factory=list)


def _class_files(folder: Path, skipped: list[str], claimed: _Claims | None = None) -> list[Path]:
    """The image files under a class folder, at any depth, in sorted order. Links are followed
    (as ImageFolder does), each real folder once: a link back up would loop. `claimed`: real
    folder -> the class folder that read it, shared by a layout's classes: a folder linked into
    two classes would label its images twice, and is one error line, as two CSV rows are."""
    top = os.path.realpath(folder)
    claimed = claimed or _Claims()
    _claim(claimed, top, folder, folder)
    out, seen = [], {top}

    def unreadable(e: OSError) -> None:
        if os.path.abspath(e.filename) == os.path.abspath(folder):  # all of it: not "empty"
            raise _cannot_read(folder, e) from None
        skipped.append(f"{e.filename}: cannot read it ({e.strerror})")
        claimed.unread.append((Path(e.filename), str(_cannot_read(Path(e.filename), e))))
    for parent, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(Path(parent, d))
            if d.startswith("."):  # .ipynb_checkpoints, .git...
                skipped.append(f"{Path(parent, d)}: a hidden folder")
            elif real in seen or top.startswith(real + os.sep):  # read, or above: a loop
                skipped.append(f"{Path(parent, d)}: a link to a folder read already")
            else:
                _claim(claimed, real, folder, Path(parent, d))
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
                if os.path.islink(path):  # checked once every class is read: _linked_twice
                    claimed.links.append((os.path.realpath(path), folder, path))
                out.append(path)
    return out


def _claim(claimed: _Claims, real: str, cls: Path, path: Path) -> None:
    """Record that class folder `cls` reads the real folder `real` (through `path`)."""
    other = claimed.folders.setdefault(real, cls)
    if other != cls:
        raise PtrainError(f"{path}: class folder {other} reads it too (through a link), so its "
                          f"images would be labelled {other.name!r} and {cls.name!r}; remove "
                          "the link")


def _linked_twice(claimed: _Claims) -> None:
    """A linked image file whose target another class holds (or links to): one error line."""
    owner: dict[str, Path] = {}
    for real, cls, path in claimed.links:
        other = claimed.folders.get(os.path.dirname(real)) or owner.setdefault(real, cls)
        if other != cls:
            raise PtrainError(f"{path}: a link to {real}, an image of {other}, so it would be "
                              f"labelled {other.name!r} and {cls.name!r}; remove the link")


def _cannot_read(folder: Path, e: OSError) -> PtrainError:
    """A folder of the data it may not list: the line (predict's too), not "holds no image"."""
    return PtrainError(f"cannot read {folder}: {e.strerror}")


def images_in(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files under a folder, at any depth, in sorted order (what predict takes for a
    folder; hidden files and other extensions are left out, as in training), and (subfolder,
    "cannot read SUB: why") for each subfolder it may not list; an unreadable folder is one line."""
    claims = _Claims()
    found = _class_files(folder, [], claims)
    return found, claims.unread


def _classes(root: Path, skipped: list[str]) -> dict[str, list[Path]]:
    """class name -> its files, for the class folders directly in root."""
    found, claimed = {}, _Claims()
    try:
        entries = sorted(root.iterdir())
    except OSError as e:  # train/ or test/ unreadable
        raise _cannot_read(root, e) from None
    for entry in entries:
        if entry.name.startswith("."):
            skipped.append(f"{entry}: hidden")
        elif entry.is_dir():
            found[entry.name] = _class_files(entry, skipped, claimed)
        else:
            skipped.append(f"{entry}: a file beside the class folders")
    _linked_twice(claimed)
    return found


def _named(names: set[str], wanted: tuple[str, ...]) -> str | None:
    """The folder among `names` that is one of `wanted` in any case (the first wanted), or None."""
    for w in wanted:
        hits = sorted(n for n in names if n.lower() == w)
        if hits:
            return hits[0]
    return None


def _layout(root: Path, top: list[Path]) -> tuple[Path, Path | None, Path | None]:
    """(the folder of the training classes, the test folder or None: --test-split held out, the
    validation folder or None). train/ is a layout beside test/ (and val/, valid/ or
    validation/), beside one of those alone (then the test set), or alone; among other folders
    it is a class. Other folders beside them are an error: one reading would drop images."""
    names = {e.name for e in top if e.is_dir() and not e.name.startswith(".")}
    train, test = _named(names, TRAIN_FOLDERS), _named(names, TEST_FOLDERS)
    val = _named(names, VAL_FOLDERS) if test and test.lower() not in VAL_FOLDERS else None
    others = sorted(names - {train, test, val})
    if train is None or (test is None and others):
        _no_split_among(root, names)
        return root, None, None
    if others:
        raise PtrainError(f"{root} holds {train}/ and {test}/ beside other folders "
                          f"({', '.join(others[:3])}): put every class folder inside {train}/ "
                          f"and {test}/, or use one folder per class and no {train}/")
    return root / train, root / test if test else None, root / val if val else None


def _no_split_among(root: Path, names: set[str]) -> None:
    """Class folders beside a folder named as a split (test/, Train/...) that holds folders named
    as they are: a split misplaced, not a class; one error line, not a class "test"."""
    for name in sorted(n for n in names if n.lower() in TRAIN_FOLDERS + TEST_FOLDERS):
        try:
            inside = {e.name for e in (root / name).iterdir() if e.is_dir()}
        except OSError:  # said when the class is read: cannot read it
            continue
        common = sorted(inside & (names - {name}))
        if common:
            raise PtrainError(f"{root / name} holds folders named as the classes beside it "
                              f"({', '.join(common[:3])}): it is a split, not a class; put the "
                              f"classes in a train/ folder beside it, or move {name}/ out")


def find(root: Path, least: int = 2) -> Found:
    """The classes (at least `least`) and files under root, in either layout; bad folders are
    one error line."""
    if not root.is_dir():
        raise PtrainError(f"--dataset folder: {root} is not a folder; pass --data-dir DIR, a "
                          "folder of class subfolders (or of train/ and test/ ones)")
    skipped: list[str] = []
    try:
        top = sorted(root.iterdir())  # listed once: a network mount's listing is slow
        where, test_dir, val_dir = _layout(root, top)
    except OSError as e:  # no permission to list it
        raise _cannot_read(root, e) from None
    if where != root:  # train/ (and test/): what lies beside it is no class's either
        beside = f"{where.name}/" + (f" and {test_dir.name}/" if test_dir else "")
        skipped += [f"{e}: hidden" if e.name.startswith(".") else f"{e}: a file beside {beside}"
                    for e in top if not e.is_dir()]
    train = _classes(where, skipped)
    test = _classes(test_dir, skipped) if test_dir else None
    val = _classes(val_dir, skipped) if val_dir else None
    for folder, held in ((test_dir, test), (val_dir, val)):
        unknown = sorted(set(held or ()) - set(train))
        if unknown:
            raise PtrainError(f"{folder}: class folder {unknown[0]!r} is not in {where}; a "
                              f"{folder.name} class must be one the model learns")
    if len(train) < least:
        raise PtrainError(f"{where}: {plural(len(train), 'class folder')} found; " + (
            "a classifier needs at least 2 (one subfolder of images per class)" if least > 1
            else "images go in a subfolder named for their class"))
    classes = sorted(train)
    index = {c: i for i, c in enumerate(classes)}

    def files(tree):
        return [(p, index[c]) for c in sorted(tree) for p in tree[c]]
    return Found(classes, files(train), files(test) if test is not None else None, skipped,
                 root, files(val) if val is not None else None)


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
    found.val = readable(found.val) if found.val is not None else None
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


def check_classes(classes: list[str], labels: torch.Tensor, where: Path, csv: bool = False,
                  ) -> None:
    counts = torch.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts.tolist()) if n == 0]
    if empty and csv:
        raise PtrainError(f"{where}: class {empty[0]!r} has no usable image (each file listed "
                          "for it is unreadable); add images or remove its rows")
    if empty:
        raise PtrainError(f"{where}: class folder {empty[0]!r} holds no usable image; add "
                          "images or remove the folder")
