"""Which rows go where: the seeded, held-out test split of a folder without test/ and the
--val-split of any training set. Both are row numbers, so a folder's splits can be written
from its memory-mapped cache without loading it, and the same seed gives the same rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pytorch_cli.platform.errors import UsageError


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


def val_rows(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, training rows) of a training set of n: a seeded shuffle, so a resumed
    run and `ptrain eval --split val` get the same split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise UsageError(f"--val-split {fraction} leaves no training images (the training set "
                         f"has {n}); use a smaller fraction")
    return order[:n_val], order[n_val:]


def listing(files: list[tuple[Path, int]], root: Path) -> str:
    """A digest of the files the splits are drawn from (path under root, class): a run saves
    it, and eval or resume on a folder whose listing differs says that its held-out images
    are drawn anew (an added file reshuffles them: some may have been trained on)."""
    text = "\n".join(f"{label}\t{path.relative_to(root).as_posix()}" for path, label in files)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
