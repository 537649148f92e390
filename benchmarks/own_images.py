"""A folder of the user's own images, end to end, as real commands in fresh processes: CIFAR-10's
binary batches written out as PNG files (train/CLASS/, test/CLASS/), then `ptrain train
--dataset folder` (decoded by --workers, resized-crop augmentation), `ptrain eval --errors
--plot-errors --heatmap` (Grad-CAM on the device too) and `ptrain predict --csv` of the test
folder, each timed; then a fine-tuning run on the same folder (torchvision:resnet18 from a
weights file, --freeze backbone --unfreeze-at 1, the images resized to 64 px: the model-zoo path,
with the backbone released mid-run). predict must get right exactly the test
images eval counts right (the same images, decoded the same way, under the run's precision):
the JSON says whether it did. The GPU check's step 7 (benchmarks/gpu_check.sh); on a CPU it
times the folder path too.

    python benchmarks/own_images.py --cifar-dir DIR --dest SCRATCH [--device cuda]
        [--train 5000] [--test 1000] [--epochs 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_data import RECORD, cifar_files  # noqa: E402 (beside this file)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def write_pngs(batch: Path, folder: Path, count: int) -> int:
    """The first `count` images of a binary batch as folder/CLASS/ROW.png; how many written."""
    raw = np.fromfile(batch, dtype=np.uint8).reshape(-1, RECORD)[:count]
    for row, record in enumerate(raw):
        (folder / CLASSES[record[0]]).mkdir(parents=True, exist_ok=True)
        pixels = record[1:].reshape(3, 32, 32).transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / CLASSES[record[0]] / f"{row}.png")
    return len(raw)


def ptrain(*args: str, label: str = "") -> dict:
    """One command in a fresh process: its exit code, wall seconds and stdout."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytorch_cli", *args], capture_output=True,
                          text=True)
    row = {"command": "ptrain " + args[0] + label, "rc": done.returncode,
           "seconds": round(time.perf_counter() - t0, 2), "out": done.stdout}
    if done.returncode:
        row["error"] = done.stderr.strip()[-800:]
    print(f"{row['command']}: exit {row['rc']}, {row['seconds']} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar-dir", required=True, help="a folder of CIFAR-10's binary batches")
    p.add_argument("--dest", required=True, help="scratch: the images and the run go here")
    p.add_argument("--device", default="auto")
    p.add_argument("--train", type=int, default=5000, help="images from data_batch_1.bin")
    p.add_argument("--test", type=int, default=1000, help="images from test_batch.bin")
    p.add_argument("--epochs", default="2")
    p.add_argument("--json", help="write the result here too")
    a = p.parse_args(argv)
    src, images, run = cifar_files(Path(a.cifar_dir)), Path(a.dest, "images"), Path(a.dest, "run")
    if src is None:
        sys.exit(f"own_images: no CIFAR-10 binary batches in {a.cifar_dir}")
    t0 = time.perf_counter()
    written = [write_pngs(src / "data_batch_1.bin", images / "train", a.train),
               write_pngs(src / "test_batch.bin", images / "test", a.test)]
    result = {"images": {"train": written[0], "test": written[1],
                         "write_s": round(time.perf_counter() - t0, 2)}, "rows": []}
    dev = ["--device", a.device]
    steps = [("train", "--dataset", "folder", "--data-dir", str(images), "--model", "cifar-net",
              "--optimizer", "adamw", "--lr", "0.003", "--epochs", a.epochs, "--workers", "4",
              "--augment", "resized-crop", "--crop-scale", "0.35", "--run-dir", str(run),
              "--quiet", "--json", *dev),
             ("eval", str(run), "--errors", str(run / "errors.csv"), "--plot-errors",
              str(run / "worst.png"), "--heatmap", "--json", *dev),  # (Grad-CAM on the device)
             ("predict", str(run), str(images / "test"), "--csv", *dev)]
    for args in steps:
        result["rows"].append(ptrain(*args))
        if result["rows"][-1]["rc"]:
            break
        if args[0] == "train":  # its summary: accuracy, speed, where the time went
            result["train"] = summary(result["rows"][-1])
    else:
        result.update(agreement(result["rows"], run / "errors.csv", images))
        result["rows"].append(fine_tune(images, Path(a.dest), dev))
        if not result["rows"][-1]["rc"]:
            result["fine_tune"] = summary(result["rows"][-1])
    for row in result["rows"]:
        row.pop("out")
    print(json.dumps(result, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(result))
    sys.exit(0 if result.get("agree") and "fine_tune" in result else 1)


def summary(row: dict) -> dict:
    end = json.loads(row["out"])
    return {k: end.get(k) for k in ("test_acc", "images_per_s", "train_s_total", "eval_s",
                                    "device")}


def fine_tune(images: Path, dest: Path, dev: list[str]) -> dict:
    """torchvision:resnet18 started from a weights file: its own fresh weights, saved (the lent
    machine downloads nothing), so the accuracy says little; the path is what is checked."""
    import torch
    import torchvision
    weights = dest / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    return ptrain("train", "--dataset", "folder", "--data-dir", str(images), "--model",
                  "torchvision:resnet18", "--weights", str(weights), "--freeze", "backbone",
                  "--unfreeze-at", "1", "--backbone-lr-scale", "0.1", "--image-size", "64",
                  "--epochs", "2", "--workers", "4", "--run-dir", str(dest / "fine-tune"),
                  "--quiet", "--json", *dev, label=" (fine-tune)")


def agreement(rows: list[dict], errors: Path, images: Path) -> dict:
    """eval's accuracy, predict's (its top class against the folder it came from), and whether
    predict's wrong files are exactly the ones eval --errors lists."""
    evaluated = json.loads(rows[1]["out"])
    answers = list(csv.DictReader(io.StringIO(rows[2]["out"])))
    wrong = {str(Path(r["image"]).resolve()) for r in answers
             if r["class"] != Path(r["image"]).parent.name}
    listed = {str(Path(r["image"]).resolve()) for r in csv.DictReader(errors.open())}
    return {"eval_acc": evaluated["acc"], "precision": evaluated["precision"],
            "predict_acc": 1 - len(wrong) / max(len(answers), 1), "predicted": len(answers),
            "agree": wrong == listed and len(answers) == evaluated["total"]}


if __name__ == "__main__":
    main()
