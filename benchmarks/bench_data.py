"""Data for the benchmarks: the real files when they are found, else synthetic images of the same
shape written in the same on-disk format, so ptrain's own readers load them either way. Also the
torchvision datasets the classic loop reads, built from the same images."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torchvision

from pytorch_cli.data import datasets

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000)}


def default_dir(name: str) -> str:
    """Where the real files usually are: ../shared/data/mnist; CIFAR-10 in $PTRAIN_CIFAR10_DIR
    or ~/data (a folder holding cifar-10-batches-bin or cifar-10-batches-py)."""
    if name == "mnist":
        return str(ROOT.parent / "shared/data/mnist")
    return os.environ.get("PTRAIN_CIFAR10_DIR", str(Path.home() / "data"))


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _synthetic(name: str, folder: Path) -> None:
    """Random images and labels of the real dataset's shape and size, in its original format."""
    rng = np.random.default_rng(0)
    shape = (1, 28, 28) if name == "mnist" else (3, 32, 32)
    for split, n in zip(("train", "test"), SIZES[name]):
        images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        if name == "mnist":
            prefix = "train" if split == "train" else "t10k"
            _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[:, 0], True)
            _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, True)
            continue
        binary = folder / "cifar-10-batches-bin"
        binary.mkdir(exist_ok=True)
        records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
        names = (
            [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        )
        for part, file in zip(np.array_split(records, len(names)), names):
            part.tofile(binary / file)
        (binary / "batches.meta.txt").write_text("\n".join(map(str, range(10))) + "\n")


def prepare(name: str, given: str, tmp: Path) -> tuple[str, str, datasets.Data]:
    """(folder ptrain reads, "real" or "synthetic", the data as ptrain read it)."""
    try:
        return given, "real", datasets.load(name, given, download=False)
    except Exception:
        folder = tmp / f"{name}-synthetic"
        folder.mkdir(parents=True, exist_ok=True)
        _synthetic(name, folder)
        return str(folder), "synthetic", datasets.load(name, str(folder), download=False)


class _CIFAR10(torchvision.datasets.CIFAR10):
    # Our python batches are re-written from the same images, so their md5s are not the published
    # ones; everything else (the pickle reading, the per-sample PIL conversion) is torchvision's.
    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        self.classes = [str(i) for i in range(10)]


def classic_dataset(name: str, data: datasets.Data, tmp: Path, transform):
    """torchvision's own MNIST / CIFAR10 dataset over the same training images, with `transform`
    applied per sample, as the classic examples do."""
    images = data.train.images.numpy()
    labels = data.train.labels.numpy().astype(np.uint8)
    root = tmp / f"classic-{name}"
    if name == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        test_images, test_labels = data.test.images.numpy(), data.test.labels.numpy()
        for prefix, x, y in (("train", images, labels), ("t10k", test_images, test_labels)):
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0], False)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, False)
        return torchvision.datasets.MNIST(str(root), train=True, transform=transform)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    parts = zip(np.array_split(images.reshape(len(images), -1), 5), np.array_split(labels, 5))
    for i, (x, y) in enumerate(parts, start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": x, "labels": y.tolist()}, f)
    return _CIFAR10(str(root), train=True, transform=transform)
