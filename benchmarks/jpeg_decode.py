"""JPEG photos decoded for a small model, side by side, one core:

  full     the whole file decoded, then converted and resized (ptrain before draft mode)
  ptrain   images.read_image: PIL's draft mode first, so libjpeg decodes at 1/2, 1/4 or 1/8
           scale where the model's size allows (never below it), then the same resize

For each --sizes entry (a square side): ms per image of each (the median over --rounds, the
two alternated within a round), their ratio, and how far ptrain's pixels are from the full
decode's (mean and largest absolute difference, 0-255).

    python benchmarks/jpeg_decode.py DIR [--sizes 32,64,96,224] [--rounds 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pytorch_cli.data import images


def full_decode(path: Path, side: int) -> np.ndarray:
    """read_image without draft mode: what every file cost before."""
    with Image.open(path) as img:
        img = images._convert(img, "RGB").resize((side, side), Image.BILINEAR)
    return np.asarray(img).transpose(2, 0, 1)


def ptrain_decode(path: Path, side: int) -> np.ndarray:
    return images.read_image(path, 3, (side, side)).numpy()


def _time(fn, paths: list[Path], side: int) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p, side)
    return (time.perf_counter() - t0) / len(paths) * 1e3


def measure(paths: list[Path], side: int, rounds: int) -> dict:
    ms: dict[str, list[float]] = {"full": [], "ptrain": []}
    for r in range(rounds):  # alternated, so a slow moment of the machine hits both
        order = (("full", full_decode), ("ptrain", ptrain_decode))
        for name, fn in order if r % 2 == 0 else order[::-1]:
            ms[name].append(_time(fn, paths, side))
    diff = [np.abs(full_decode(p, side).astype(int) - ptrain_decode(p, side).astype(int))
            for p in paths]
    full, ours = statistics.median(ms["full"]), statistics.median(ms["ptrain"])
    return {"side": side, "full_ms": full, "ptrain_ms": ours, "speedup": full / ours,
            "mean_abs_diff": float(np.mean([d.mean() for d in diff])),
            "max_abs_diff": int(max(d.max() for d in diff))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a folder with .jpg/.jpeg files (searched deeply)")
    ap.add_argument("--sizes", default="32,64,96,224", help="square sides, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"no .jpg or .jpeg file under {args.folder}")
    sizes = sorted({Image.open(p).size for p in paths})
    print(f"{len(paths)} JPEG files of {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x"
          f"{sizes[-1][1]} px, median of {args.rounds} rounds, one process")
    print(f"{'side':>5} {'full ms':>8} {'ptrain ms':>10} {'speed-up':>9} {'mean |diff|':>12} "
          f"{'max |diff|':>11}")
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        row = measure(paths, side, args.rounds)
        rows.append(row)
        print(f"{side:>5} {row['full_ms']:>8.2f} {row['ptrain_ms']:>10.2f} "
              f"{row['speedup']:>8.2f}x {row['mean_abs_diff']:>12.2f} {row['max_abs_diff']:>11}")
    if args.json:
        args.json.write_text(json.dumps({"files": len(paths), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
