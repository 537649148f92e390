"""The data the GPU check's steps read (benchmarks/gpu_check.sh calls it, on the lent machine):
CIFAR-10 assembled from the batches that travelled, airbench's train.pt/test.pt, and the tiny
files of the CPU dry run. benchmarks/gpu_data.sh puts what travels into gpu_data/ beforehand.

    python benchmarks/gpu_data.py cifar-data --src DIR... --dest DIR
    python benchmarks/gpu_data.py airbench-data --cifar-dir DIR --dest DIR
    python benchmarks/gpu_data.py tiny-data --dest DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]
RECORD = 3073  # CIFAR-10 binary record: 1 label byte, 3072 pixel bytes


def cifar_files(folder: Path) -> Path | None:
    """The folder holding the binary batches: DIR/cifar-10-batches-bin or DIR itself."""
    for f in (folder / "cifar-10-batches-bin", folder):
        if f.is_dir() and any((f / n).is_file() for n in [*TRAIN_BATCHES, "test_batch.bin"]):
            return f
    return None


def cmd_cifar_data(a) -> None:
    """Print MODE|DIR|DESCRIPTION: MODE full, subset or missing, DIR what ptrain's --data-dir
    gets. The first complete set of the folders given is used as it is. Else a subset, preferably
    one with a test file: ptrain's reader needs all five training batches and the test batch, so
    the training batches present are linked in turn under the five names in DEST (the same 50000
    images an epoch, so the same steps and seconds; fewer distinct images, so accuracy is not
    CIFAR-10's)."""
    found = []  # (folder, training batches present, test file or None)
    for given in a.src:
        src = cifar_files(Path(given))
        if src is None:
            continue
        present = [n for n in TRAIN_BATCHES if (src / n).is_file()]
        test = src / "test_batch.bin" if (src / "test_batch.bin").is_file() else None
        if len(present) == 5 and test is not None:
            root = src.parent if src.name == "cifar-10-batches-bin" else src
            print(f"full|{root.resolve()}|full: all six batches in {src}")
            return
        if present:
            found.append((src, present, test))
    if not found:
        print(f"missing||missing: no CIFAR-10 binary batches in {' or '.join(a.src)}")
        return
    src, present, test = min(found, key=lambda f: f[2] is None)  # one with a test file first
    dest = Path(a.dest, "cifar-10-batches-bin").resolve()
    dest.mkdir(parents=True, exist_ok=True)
    test_src = test or src / present[-1]  # no test file travelled: test on a training batch
    links = {name: src / present[i % len(present)] for i, name in enumerate(TRAIN_BATCHES)}
    for name, target in {**links, "test_batch.bin": test_src}.items():
        (dest / name).unlink(missing_ok=True)
        os.symlink(target.resolve(), dest / name)
    if (src / "batches.meta.txt").is_file():
        shutil.copy(src / "batches.meta.txt", dest / "batches.meta.txt")
    n_test = test_src.stat().st_size // RECORD
    what = (f"subset: {len(present)}/5 training batches ({', '.join(present)}) linked as all five, "
            f"{n_test} test images" + ("" if test else " (a TRAINING batch: no test file "
                                       "travelled)") + f", from {src}")
    print(f"subset|{dest.parent}|{what}")


def cmd_airbench_data(a) -> None:
    """airbench's CifarLoader reads DEST/cifar10/{train,test}.pt when they exist (else it asks
    torchvision to download, which cannot work offline): uint8 NHWC images, int64 labels,
    class names, here from the same binary batches ptrain read."""
    import numpy as np
    import torch
    src = cifar_files(Path(a.cifar_dir))

    def read(names):
        raw = np.concatenate([np.fromfile(src / n, dtype=np.uint8).reshape(-1, RECORD)
                              for n in names])
        images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(
            raw[:, 0].astype(np.int64))

    meta = src / "batches.meta.txt"
    classes = ([c for c in meta.read_text().split() if c] if meta.is_file()
               else [str(i) for i in range(10)])
    folder = Path(a.dest, "cifar10")
    folder.mkdir(parents=True, exist_ok=True)
    for name, files in (("train.pt", TRAIN_BATCHES), ("test.pt", ["test_batch.bin"])):
        images, labels = read(files)
        torch.save({"images": images, "labels": labels, "classes": classes}, folder / name)
        print(f"{folder / name}: {len(labels)} images")


def cmd_tiny_data(a) -> None:
    """The CPU dry run's data: tests/conftest.py's small learnable MNIST and CIFAR-10 files, the
    CIFAR one with only its first training batch and test batch, as the subset that travels."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_cifar10_binary, write_mnist
    write_mnist(Path(a.dest, "mnist"))
    write_cifar10_binary(Path(a.dest, "cifar10-subset"), per_batch=200, n_test=200)
    for name in TRAIN_BATCHES[1:]:
        Path(a.dest, "cifar10-subset", "cifar-10-batches-bin", name).unlink()
    print(f"{a.dest}/mnist: 512 + 256 images; {a.dest}/cifar10-subset: data_batch_1 (200 images) "
          "+ test_batch (200)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cifar = sub.add_parser("cifar-data")
    cifar.set_defaults(fn=cmd_cifar_data)
    cifar.add_argument("--src", nargs="+", required=True)
    airbench = sub.add_parser("airbench-data")
    airbench.set_defaults(fn=cmd_airbench_data)
    airbench.add_argument("--cifar-dir", required=True)
    tiny = sub.add_parser("tiny-data")
    tiny.set_defaults(fn=cmd_tiny_data)
    for s in (cifar, airbench, tiny):
        s.add_argument("--dest", required=True)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
