"""Finding, loading and splitting datasets: each is read once into (N, C, H, W) uint8 tensors
(MNIST: 47 MB, CIFAR: 150 MB), from torchvision's layout or a plain folder of the original files.
Reading and checking each file is readers.py's job; batching them on the device is batches.py's."""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.data import catalog, folder_arrays, folders, readers, splits
from pytorch_cli.data.catalog import SPECS, Spec
from pytorch_cli.platform import distributed
from pytorch_cli.platform.errors import PtrainError, UsageError, plural, warn

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Data:
    spec: Spec
    classes: list[str]
    train: Split
    val: Split | None
    test: Split
    source: str  # the folder the files were read from
    skipped: list[str] = field(default_factory=list)  # --dataset folder: "file: why", not read
    listing: str = ""  # --dataset folder: what its splits are drawn from (splits.listing)
    split: str = ""  # and how (splits.PER_CLASS; "": a shuffle of the rows, as runs saved before)
    names: dict[str, list[str]] = field(default_factory=dict)  # a folder's: split -> row's file


def normalised(data: Data, mean, std) -> Data:
    """The data as a model trained with this mean and std sees it (pretrained weights, a run)."""
    spec = dataclasses.replace(data.spec, mean=tuple(mean), std=tuple(std))
    return dataclasses.replace(data, spec=spec)


# ---------------------------------------------------------------- finding and reading files

def stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1], summed in float64 over chunks (a
    float copy of a large folder would not fit in memory); a flat channel's std is 1/255."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares, n = total.clone(), images.numel() // images.shape[1]
    per_image = max(1, images[0].numel()) if len(images) else 1
    for chunk in images.split(max(1, 4_000_000 // per_image)):  # 32 MB of float64 a chunk
        x = chunk.to(torch.float64) / 255
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    mean = total / n
    std = (squares / n - mean * mean).clamp(min=0).sqrt().clamp(min=1 / 255)
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]


def search_dirs(name: str, data_dir: str = "") -> list[Path]:
    """Where to look: --data-dir alone; else $PTRAIN_DATA_DIR or ./data (+ Debian's package's)."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    dirs = [Path(os.environ.get("PTRAIN_DATA_DIR") or "data").expanduser()]
    if name == "fashion-mnist":
        dirs.append(Path(DEBIAN_FASHION_DIR))
    return dirs


def _places(spec: Spec, root: Path) -> list[tuple[Path, list[str], tuple | None]]:
    """Where a dataset's files may lie under root: (folder, the files it holds, the CIFAR layout;
    None: the MNIST family's, plain or in torchvision's root/MNIST/raw/, gzipped or not)."""
    if spec.name in ("mnist", "fashion-mnist"):
        raw = (root / "raw", root / spec.tv_class / "raw")
        return [(f, list(MNIST_FILES), None) for f in (root, *raw)]
    return [(f, [*layout[1], layout[2]], layout) for layout in CIFAR_LAYOUTS[spec.name]
            for f in (root / layout[0], root)]


def _file(folder: Path, name: str, gz: bool) -> Path | None:  # (name, or name.gz if gz)
    return next((p for p in (folder / name, folder / f"{name}.gz")[:1 + gz] if p.is_file()), None)


def _find_mnist(root: Path, spec: Spec) -> dict[str, Path] | None:
    for folder, names, _ in _places(spec, root):
        found = {n: p for n in names if (p := _file(folder, n, True))}
        if len(found) == len(names):
            return found


def _read_mnist(files: dict[str, Path], spec: Spec) -> tuple[Split, Split, list[str]]:
    import torchvision  # here, not above: it imports torch._dynamo (seconds) for --dataset fake
    splits = []
    for images, labels in (MNIST_FILES[:2], MNIST_FILES[2:]):
        x, y = readers.mnist_split(files[images], files[labels], spec)
        splits.append(Split(torch.from_numpy(x), torch.from_numpy(y)))
    return splits[0], splits[1], list(getattr(torchvision.datasets, spec.tv_class).classes)


CIFAR_LAYOUTS = {
    # dataset: [(folder name, train files, test file, meta file, label key or byte offset)]
    "cifar10": [("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                 "batches.meta", "labels"),
                ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)],
                 "test_batch.bin", "batches.meta.txt", 0)],
    "cifar100": [("cifar-100-python", ["train"], "test", "meta", "fine_labels"),
                 ("cifar-100-binary", ["train.bin"], "test.bin", "fine_label_names.txt", 1)],
}


def _find_cifar(root: Path, spec: Spec):
    for folder, names, layout in _places(spec, root):
        if all(_file(folder, n, False) for n in names):
            return folder, *layout[1:]
    return None


def _read_cifar(found, spec: Spec) -> tuple[Split, Split, list[str]]:
    folder, train_files, test_file, meta, label = found
    counts = {}  # file -> (images, the original file's)

    def read(names: list[str], original: int) -> Split:
        parts = [readers.cifar_pickle(folder / name, label, spec) if isinstance(label, str)
                 else readers.cifar_binary(folder / name, label, spec) for name in names]
        counts.update({n: (len(y), original // len(names)) for n, (_, y) in zip(names, parts)})
        return Split(torch.from_numpy(np.concatenate([x for x, _ in parts])),
                     torch.from_numpy(np.concatenate([y for _, y in parts])))

    classes = [str(i) for i in range(spec.num_classes)]  # no meta file: numbered
    if (folder / meta).is_file():
        key = ("label_names" if spec.name == "cifar10" else "fine_label_names"
               ) if isinstance(label, str) else ""
        classes = readers.class_names(folder / meta, spec, key)
    train, test = read(train_files, 50_000), read([test_file], 10_000)
    short = [f"{n} ({got:,})" for n, (got, original) in counts.items() if got != original]
    if short and len(short) < len(counts) and distributed.world().main:  # some whole: the others
        # were cut at a record boundary (all smaller: a subset made on purpose)
        warn(f"{spec.name}: {folder}: {', '.join(short)} images, where the original files "
             f"hold {50_000 // len(train_files):,} a training file and 10,000 the test file; "
             "replace any file that is not whole")
    return train, test, classes


def _fake() -> tuple[Split, Split, list[str]]:
    """A small learnable stand-in (class templates plus noise), the same on every machine."""
    g = torch.Generator().manual_seed(0)
    templates = torch.rand(10, 1, 7, 7, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)

    def make(n: int) -> Split:
        labels = torch.randint(0, 10, (n,), generator=g)
        x = templates[labels] * 0.7 + torch.rand(n, 1, 28, 28, generator=g) * 0.3
        return Split((x * 255).round().to(torch.uint8), labels)

    return make(2000), make(500), [str(i) for i in range(10)]


def _partial(spec: Spec, root: Path) -> str | None:
    """Where a folder under root holds some of the dataset's files but not all: which lack."""
    for folder, names, layout in _places(spec, root):
        missing = [n for n in names if not _file(folder, n, gz := layout is None)]
        if 0 < len(missing) < len(names):
            return (f"{folder} holds {len(names) - len(missing)} of its {len(names)} files; "
                    f"missing: {', '.join(n + ('(.gz)' if gz else '') for n in missing)}")


def _locate(spec: Spec, root: Path):
    """(folder the files are in, function that reads them), or None if they are not under root."""
    if spec.name in ("mnist", "fashion-mnist"):
        found = _find_mnist(root, spec)
        if not found:
            return None
        return next(iter(found.values())).parent, lambda: _read_mnist(found, spec)
    found = _find_cifar(root, spec)
    return (found[0], lambda: _read_cifar(found, spec)) if found else None


def _download(spec: Spec, root: Path) -> None:
    import torchvision
    cls = getattr(torchvision.datasets, spec.tv_class)
    created = None  # the outermost folder the download creates: removed again if it fails
    path = root / spec.tv_class
    while not path.exists():
        created, path = path, path.parent
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # URLError, HTTP errors, checksum failures: all mean "not here"
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise PtrainError(
            f"{spec.name}: not found in {root} and the download failed ({reason}); with no "
            "network, "
            f"put the dataset's original files in a folder and pass --data-dir DIR") from None


def _read(spec: Spec, data_dir: str, download: bool) -> tuple[Split, Split, list[str], str]:
    if spec.name == "fake":
        return *_fake(), "generated"
    dirs = search_dirs(spec.name, data_dir)
    located = next(filter(None, (_locate(spec, d) for d in dirs)), None)
    partial = None if located else next(filter(None, (_partial(spec, d) for d in dirs)), None)
    if partial:  # a copy missing a file: no download beside it
        raise PtrainError(f"{spec.name}: {partial}; copy what is missing there from the "
                          "original files")
    if not located:
        if not download:
            raise PtrainError(
                f"{spec.name}: no dataset files found in {', '.join(map(str, dirs))}; pass "
                f"--data-dir DIR (a folder with the original files), or --download to fetch it")
        _download(spec, dirs[0])
        located = _locate(spec, dirs[0])
        if not located:
            raise PtrainError(f"{spec.name}: downloaded to {dirs[0]} but the files are not there")
    folder, reader = located
    try:
        return *reader(), str(folder)
    except PtrainError:  # readers' own checks: they name the file and the fault
        raise
    except Exception as e:
        raise PtrainError(f"{spec.name}: the files in {folder} are unreadable or corrupt "
                          f"({type(e).__name__}: {e}); replace them with the original "
                          "files") from None


def _read_folder(data_dir: str, opts: folders.Options, seed: int, val_split: float) -> Data:
    if not data_dir:
        raise UsageError("--dataset folder needs --data-dir DIR: a folder of class subfolders "
                         "(or of train/ and test/ ones)")
    root = Path(data_dir).expanduser()
    got = folder_arrays.read(root, opts, seed, val_split)
    if got.skipped and distributed.world().main:
        first = "; ".join(got.skipped[:3]) + ("; ..." if len(got.skipped) > 3 else "")
        n = len(got.skipped)
        warn(f"{root}: skipped {plural(n, 'file')} that {'is' if n == 1 else 'are'} no usable "
             f"image ({first}); a run lists them all in its skipped-files.txt")
    train = Split(*got.train)
    mean, std = opts.stats or stats(train.images)  # of the images it trains on: saved with it
    spec = catalog.folder_spec(got.channels, got.size, len(got.classes), mean, std)
    return Data(spec, got.classes, train, Split(*got.val) if got.val is not None else None,
                Split(*got.test), str(root), got.skipped, got.listing,
                opts.split if got.listing else "", got.names)


def load(name: str, data_dir: str = "", download: bool = True, val_split: float = 0.0,
         seed: int = 1, folder: folders.Options | None = None) -> Data:
    """Read a dataset; with val_split, hold out a seeded fraction of its training set.
    `folder`: how a folder's images are decoded; its image_size a built-in's too (resized)."""
    if name == catalog.FOLDER:  # its splits are made as it is read: memory maps of its cache
        return _read_folder(data_dir, folder or folders.Options(), seed, val_split)
    spec, val = SPECS[name], None
    train, test, classes, source = _read(spec, data_dir, download)
    if folder is not None and folder.image_size:
        spec = dataclasses.replace(spec, size=tuple(folder.image_size))
    if val_split:
        val_idx, train_idx = splits.val_rows(len(train), val_split, seed)
        val = Split(train.images[val_idx], train.labels[val_idx])
        train = Split(train.images[train_idx], train.labels[train_idx])
    return Data(spec, classes, train, val, test, source)
