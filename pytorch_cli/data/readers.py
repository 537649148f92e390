"""Reading and checking each kind of dataset file ptrain is given: MNIST's IDX files, CIFAR's
pickled and binary batches, their class-name files (images: images.py). A bad file is one
PtrainError line naming the user's file, what is wrong and what to do, raised as it is read
(not a ZeroDivisionError after an epoch of training, nor a misaligned label)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from pytorch_cli.data.catalog import Spec
from pytorch_cli.platform import files
from pytorch_cli.platform.errors import PtrainError

REPLACE = "replace it with the original file"
CIFAR_PIXELS = 3 * 32 * 32
CIFAR100_COARSE = 20  # cifar100's superclasses: its coarse labels are 0-19


def read_bytes(path: Path, advice: str) -> bytes:
    """A regular file's bytes, never empty: a FIFO (it would block), a folder, a device, an
    unreadable or empty file is one line naming it."""
    try:
        raw = files.read_regular(path)
    except files.NotRegular as e:
        raise PtrainError(f"{path} is not a regular file ({e.kind}); {advice}") from None
    except OSError as e:
        raise PtrainError(f"cannot read {path}: {e.strerror or e}") from None
    if not raw:
        raise PtrainError(f"{path} is empty (0 bytes); {advice}")
    return raw


def _file_bytes(path: Path, gunzip: bool = False) -> bytes:
    """A data file's bytes; with gunzip, unpacked if it is gzipped (told by its first bytes, not
    its name: a browser may have unpacked a .gz, or not)."""
    raw = read_bytes(path, REPLACE)
    if gunzip and raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise PtrainError(f"{path} is a damaged or incomplete gzip file ({e}); {REPLACE}"
                              ) from None
        if not raw:
            raise PtrainError(f"{path} is empty once unpacked; {REPLACE}")
    return raw


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x0000 08 NDIM, NDIM big-endian uint32 sizes, data."""
    raw = _file_bytes(path, gunzip=True)
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise PtrainError(f"{path} is not an IDX file (it starts with 0x{raw[:4].hex()}, not "
                          f"0x000008{ndim:02x}); {REPLACE}")
    if raw[2] != 0x08:
        raise PtrainError(f"{path} holds IDX data of type 0x{raw[2]:02x}, not unsigned bytes "
                          f"(0x08); {REPLACE}")
    if raw[3] != ndim:
        raise PtrainError(f"{path} holds {raw[3]}-dimensional data, not {ndim}-dimensional "
                          f"({'images' if ndim == 3 else 'labels'}); {REPLACE}")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise PtrainError(f"{path} is truncated: it ends inside its header; {REPLACE}")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    expected, found = int(np.prod(dims)), len(raw) - start
    if found != expected:
        shape = "x".join(map(str, dims))
        fault = "is truncated" if found < expected else "has bytes after its data"
        raise PtrainError(f"{path} {fault}: its header says {shape} ({expected} bytes) but it "
                          f"holds {found} bytes of data; {REPLACE}")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims).copy()


def check_labels(path: Path, labels: np.ndarray, num_classes: int, what: str = "label") -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise PtrainError(f"{path}: {what} {labels[bad[0]]} (record {bad[0]}) is out of range "
                          f"0-{num_classes - 1} ({num_classes} classes); {REPLACE}")


# MNIST's and Fashion-MNIST's files share names, sizes and headers: a --data-dir of the other
# set's trained "Sneaker" on digits without a word (a hostile trial). Each split is known by a
# hash of its first 1,000 images (blake2b-128 of the decoded bytes, so gzip or not alike)
KNOWN_FIRST_1000 = {
    "9a9441905069f55742c5d7c7912018d2": "mnist", "04388257f403b1fefd3a8b3a3f4bb76a": "mnist",
    "d6eec0c01a7b89e66531b94cb8c0d4e9": "fashion-mnist",
    "9c8dea39f9a789c01e89fa9404bcae17": "fashion-mnist"}


def _whose(images: np.ndarray) -> str | None:
    """The dataset these are the original images of, if one of the two it knows."""
    if len(images) < 1000:
        return None
    return KNOWN_FIRST_1000.get(hashlib.blake2b(np.ascontiguousarray(images[:1000]).tobytes(),
                                                digest_size=16).hexdigest())


def mnist_split(images_path: Path, labels_path: Path, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """One split's (N, 1, H, W) uint8 images and (N,) int64 labels, checked against each other and
    the spec."""
    images = read_idx(images_path, 3)
    n, h, w = images.shape
    if n == 0:
        raise PtrainError(f"{images_path} holds no images; {REPLACE}")
    if (h, w) != spec.size:
        raise PtrainError(f"{images_path} holds {h}x{w} images, but {spec.name}'s are "
                          f"{spec.size[0]}x{spec.size[1]}; {REPLACE}")
    if (whose := _whose(images)) not in (None, spec.name):
        raise PtrainError(f"{images_path} holds {whose}'s images, not {spec.name}'s: pass "
                          f"--data-dir the folder of {spec.name}'s files (or --dataset {whose})")
    labels = read_idx(labels_path, 1).astype(np.int64)
    if len(labels) != n:
        raise PtrainError(f"{images_path} holds {n} images but {labels_path} {len(labels)} "
                          "labels; replace them with the original files")
    check_labels(labels_path, labels, spec.num_classes)
    return images[:, None], labels


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and plain containers, nothing that
    could run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how protocol 2 stores bytes; only builds a bytes object

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def unpickle(path: Path) -> dict:
    """A CIFAR pickle (a dict), safely: a truncated, crafted or foreign one is one line."""
    raw = _file_bytes(path)
    try:
        loaded = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # truncated (EOFError), refused class, bad numpy state: all "corrupt"
        raise PtrainError(f"{path} is unreadable or corrupt ({type(e).__name__}: "
                          f"{' '.join(str(e).split())}); {REPLACE}") from None
    if not isinstance(loaded, dict):
        raise PtrainError(f"{path} holds a pickled {type(loaded).__name__}, not a CIFAR dict; "
                          f"{REPLACE}")
    return loaded


def _describe(value) -> str:
    """'a uint8 array of shape (10, 3000)', 'a str', 'a list of float'."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    items = f" of {type(value[0]).__name__}" if isinstance(value, list) and value else ""
    return f"a {type(value).__name__}{items}"


def _entry(path: Path, batch: dict, key: str, ndim: int) -> np.ndarray:
    """batch[key] as an integer array of ndim dimensions."""
    if key not in batch:
        raise PtrainError(f'{path} has no "{key}" entry (it has {", ".join(map(repr, batch))}); '
                          f"{REPLACE}")
    try:
        array = np.asarray(batch[key])
    except (ValueError, TypeError):  # ragged lists
        array = np.asarray(None)
    if array.dtype.kind not in "ui" or array.ndim != ndim:
        want = "rows of 3072 pixel bytes" if ndim == 2 else "a list of whole numbers"
        raise PtrainError(f'{path}: its "{key}" is {_describe(batch[key])}, not {want}; '
                          f"{REPLACE}")
    return array


def _labels(path: Path, batch: dict, key: str, n: int, num_classes: int) -> np.ndarray:
    labels = _entry(path, batch, key, 1).astype(np.int64)
    if len(labels) != n:
        raise PtrainError(f'{path} holds {n} images but {len(labels)} "{key}"; {REPLACE}')
    check_labels(path, labels, num_classes, "coarse label" if key.startswith("coarse") else "label")
    return labels


def cifar_pickle(path: Path, label_key: str, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: (N, 3, 32, 32) uint8 images and (N,) int64 labels."""
    batch = unpickle(path)
    data = _entry(path, batch, "data", 2)
    if data.shape[1] != CIFAR_PIXELS:
        raise PtrainError(f'{path}: its "data" rows are {data.shape[1]} values wide, not '
                          f"{CIFAR_PIXELS} (3x32x32 pixels); {REPLACE}")
    if len(data) == 0:
        raise PtrainError(f"{path} holds no images; {REPLACE}")
    if data.dtype != np.uint8 and (data.min() < 0 or data.max() > 255):
        raise PtrainError(f'{path}: its "data" holds values outside 0-255; {REPLACE}')
    labels = _labels(path, batch, label_key, len(data), spec.num_classes)
    if "coarse_labels" in batch:  # cifar100's: unused, but wrong ones are a sign of damage
        _labels(path, batch, "coarse_labels", len(data), CIFAR100_COARSE)
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def cifar_binary(path: Path, label_byte: int, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """One binary-version batch: records of label byte(s) (cifar100: coarse, fine) and 3072
    pixel bytes."""
    width = CIFAR_PIXELS + label_byte + 1
    raw = np.frombuffer(_file_bytes(path), np.uint8)
    if raw.size % width:
        raise PtrainError(f"{path} is {raw.size} bytes, not a whole number of {width}-byte "
                          f"records (truncated?); {REPLACE}")
    records = raw.reshape(-1, width)
    if label_byte:
        check_labels(path, records[:, 0], CIFAR100_COARSE, "coarse label")
    labels = records[:, label_byte].astype(np.int64)
    check_labels(path, labels, spec.num_classes)
    return records[:, width - CIFAR_PIXELS:].reshape(-1, 3, 32, 32).copy(), labels


def class_names(path: Path, spec: Spec, key: str = "") -> list[str]:
    """The names in a meta file: pickled under key, else one a line of text."""
    if key:
        meta = unpickle(path)
        if key not in meta:
            raise PtrainError(f'{path} has no "{key}" entry; {REPLACE}')
        names = meta[key]
        names = names.tolist() if isinstance(names, np.ndarray) else names
    else:
        try:
            names = [line.strip() for line in _file_bytes(path).decode().splitlines()]
        except UnicodeDecodeError:
            raise PtrainError(f"{path} is not a text file of class names; {REPLACE}") from None
        names = [n for n in names if n]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise PtrainError(f"{path}: the class names are not a list of text; {REPLACE}")
    if len(names) != spec.num_classes:
        raise PtrainError(f"{path} names {len(names)} classes but {spec.name} has "
                          f"{spec.num_classes}; {REPLACE}")
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise PtrainError(f'{path} names the class "{twice}" twice; {REPLACE}')
    return list(names)
