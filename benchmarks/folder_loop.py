"""A folder of real images (DIR/train/<class>/*.png, DIR/test/<class>/*.png), trained side by side:

  classic W=N    torchvision's ImageFolder with per-sample PIL transforms (RandomCrop(size,
                 padding=4), RandomHorizontalFlip, ToTensor, Normalize) and a DataLoader with
                 N workers (--workers, default 0 2): it decodes every image in every epoch;
  ptrain cold    `ptrain train --dataset folder` with an empty decode cache: decodes once;
  ptrain cached  the same command again, on the same cache: reloads the decoded arrays.

Same net (cifar-net), SGD lr 0.01 momentum 0.9, batch 64, crop-flip augmentation, --epochs,
--seed; the classic loop normalizes with the mean/std ptrain computed (from its model.pth).
Reported per contender: the seconds reading the data (ptrain's data_s; the classic loop has no
such step: its epoch-1 seconds, PIL decoding included, come below the table), training images/s
of epoch 1 and of the last epoch (training loop only, evaluation excluded), final test accuracy.

    python benchmarks/folder_loop.py /tmp/cifar_folder --epochs 2
    python benchmarks/folder_loop.py /tmp/cifar_folder --limit 100 --workers 0 --json f.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from pytorch_cli.models import zoo

BATCH, LR, MOMENTUM, MODEL = 64, 0.01, 0.9, "cifar-net"


def first_per_class(dataset: datasets.ImageFolder, limit: int | None) -> list[int]:
    """Indices of the first `limit` samples of each class, in ImageFolder's (sorted) order."""
    taken: dict[int, int] = {}
    keep = []
    for i, (_, label) in enumerate(dataset.samples):
        if limit is None or taken.get(label, 0) < limit:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return keep


def limited_folder(root: Path, limit: int, out: Path) -> Path:
    """A folder of the same files the classic loop's Subset takes, so both train on the same
    images: hard links (copies where the file system refuses), at the same relative paths."""
    for split in ("train", "test"):
        found = datasets.ImageFolder(root / split)
        for i in first_per_class(found, limit):
            src = Path(found.samples[i][0])
            dest = out / split / src.relative_to(root / split)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copy2(src, dest)
    return out


def run_ptrain(folder: Path, run_dir: Path, cache: Path, args) -> dict:
    """One `ptrain train` subprocess; its figures, read back from the run's metrics.jsonl."""
    cmd = [sys.executable, "-m", "pytorch_cli", "train", "--dataset", "folder", "--data-dir",
           str(folder), "--model", MODEL, "--epochs", str(args.epochs), "--batch-size",
           str(BATCH), "--lr", str(LR), "--momentum", str(MOMENTUM), "--seed", str(args.seed),
           "--augment", "crop-flip", "--device", "cpu", "--run-dir", str(run_dir), "--json"]
    env = {**os.environ, "PTRAIN_CACHE_DIR": str(cache)}  # its own cache, never the user's
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"ptrain failed ({done.returncode}):\n{done.stderr}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["kind"] == "start")
    epochs = [r for r in records if r["kind"] == "epoch"]
    images = start["train_size"] + start["test_size"]
    return {"data_s": start["data_s"], "images": images,
            "decode_images_per_s": images / max(start["data_s"], 1e-9),
            "first_epoch_s": epochs[0]["train_s"],
            "images_per_s": [r["images_per_s"] for r in epochs],
            "test_acc": epochs[-1]["test_acc"]}


def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / max(total, 1)


def run_classic(train, test, meta: dict, workers: int, args) -> dict:
    """The textbook loop: the DataLoader decodes and augments each sample, every epoch."""
    torch.manual_seed(args.seed)
    model = zoo.build(MODEL, meta["in_channels"], meta["num_classes"], meta["image_size"])
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loader = DataLoader(train, batch_size=BATCH, shuffle=True, num_workers=workers)
    test_loader = DataLoader(test, batch_size=1000)
    rates, seconds, acc = [], [], 0.0
    for _ in range(args.epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
        seconds.append(time.perf_counter() - t0)  # the training loop only: eval comes after
        rates.append(seen / max(seconds[-1], 1e-9))
        acc = accuracy(model, test_loader)
    return {"workers": workers, "data_s": None, "first_epoch_s": seconds[0],
            "images_per_s": rates, "test_acc": acc}


def classic_sets(root: Path, meta: dict, limit: int | None):
    """(train, test) ImageFolders under the transforms of the classic examples, limited by Subset
    to the images ptrain was given."""
    size, norm = meta["image_size"], transforms.Normalize(meta["mean"], meta["std"])
    train = datasets.ImageFolder(root / "train", transform=transforms.Compose([
        transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), norm]))
    test = datasets.ImageFolder(root / "test",
                                transform=transforms.Compose([transforms.ToTensor(), norm]))
    return (Subset(train, first_per_class(train, limit)),
            Subset(test, first_per_class(test, limit)))


def measure(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="folder-loop-") as tmp:
        tmp = Path(tmp)
        folder = limited_folder(args.dir, args.limit, tmp / "data") if args.limit else args.dir
        rows = {}
        # cold first, then the same cache again: the second run finds the decoded arrays
        for name, run in (("ptrain cold", "run1"), ("ptrain cached", "run2")):
            rows[name] = run_ptrain(folder, tmp / run, tmp / "cache", args)
        # the mean/std ptrain computed from the training images: both normalize alike
        meta = torch.load(tmp / "run1" / "model.pth", weights_only=True)["meta"]
    train, test = classic_sets(args.dir, meta, args.limit)
    for w in args.workers:
        rows[f"classic W={w}"] = run_classic(train, test, meta, w, args)
    order = [f"classic W={w}" for w in args.workers] + ["ptrain cold", "ptrain cached"]
    return {"machine": machine(), "dir": str(args.dir), "epochs": args.epochs, "seed": args.seed,
            "limit": args.limit, "batch_size": BATCH, "lr": LR, "momentum": MOMENTUM,
            "model": MODEL, "train_size": len(train), "test_size": len(test),
            "contenders": [{"name": n, **rows[n]} for n in order]}


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_count": os.cpu_count(),
            "date": datetime.date.today().isoformat()}


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"torch {m['torch']}, {m['cpu_count']} CPUs, {m['date']}; {MODEL}, "
             f"{result['train_size']} train / {result['test_size']} test images, "
             f"epochs {result['epochs']}, batch {BATCH}", "",
             "| contender | data (decode or reload) s | epoch 1 img/s | last epoch img/s "
             "| test acc |", "|---|---:|---:|---:|---:|"]
    for c in result["contenders"]:
        data = "-" if c["data_s"] is None else f"{c['data_s']:.2f}"
        lines.append(f"| {c['name']} | {data} | {c['images_per_s'][0]:.0f} "
                     f"| {c['images_per_s'][-1]:.0f} | {c['test_acc']:.2%} |")
    classic = [c for c in result["contenders"] if c["data_s"] is None]
    if classic:  # its decoding is inside the epochs: say how long the first one took
        took = ", ".join(f"{c['first_epoch_s']:.2f} s ({c['name']})" for c in classic)
        lines += ["", f"The classic loop decodes with PIL in every epoch; epoch 1 took {took}."]
    cold = next(c for c in result["contenders"] if c["name"] == "ptrain cold")
    lines.append(f"ptrain decoded {cold['images']} images once: "
                 f"{cold['decode_images_per_s']:.0f} images/s.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description="The classic ImageFolder loop and ptrain (cold, cached) on one image folder.")
    p.add_argument("dir", type=Path, help="folder with train/<class>/ and test/<class>/")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="DataLoader workers of the classic loop, one contender each")
    p.add_argument("--limit", type=int, help="only the first N images per class and split")
    p.add_argument("--json", type=Path, help="write all figures to this file")
    args = p.parse_args()
    result = measure(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
