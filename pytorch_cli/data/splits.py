"""Which rows go where: the seeded, held-out test split of a folder without test/ and the
--val-split of any training set. Both are row numbers, so a folder's splits can be written
from its memory-mapped cache without loading it, and the same seed gives the same rows.

A folder's rows are drawn by their files' names: each name has a seeded rank, and the lowest
ranks of each class are held out. A file keeps its rank as others come and go, so images added
to a folder do not reshuffle the held-out set of the runs made before: after one file is added
or removed, at most one image changes side (one more between training and --val-split's), where
a whole new draw would change most. Runs saved
before 2026-12-06's names (no "split" in their meta) drew by a shuffle of the rows: they still do.
Runs saved before 2026-12-07's PER_CLASS drew --val-split's rows over all classes at once (a small
class could get none, and val accuracy, which picks best.pt, ignored it): they still do.
"""

from __future__ import annotations

import hashlib

import torch

from pytorch_cli.platform.errors import UsageError

# a run's meta["split"]: how its folder's rows were drawn. BY_NAME: the test rows per class,
# --val-split's over the whole set; PER_CLASS (runs since 2026-12-07): both per class
BY_NAME, PER_CLASS = "by-name", "by-name-per-class"
NAMED = (BY_NAME, PER_CLASS)


def ranks(names: list[str], seed: int, salt: str) -> torch.Tensor:
    """A seeded order of the rows named: each name's place depends on it alone (a hash of
    seed, salt and name), so an added or removed name moves no other."""
    def rank(name: str) -> int:
        digest = hashlib.blake2b(f"{seed}\0{salt}\0{name}".encode("utf-8", "surrogateescape"),
                                 digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1  # (int64)
    return torch.tensor([rank(n) for n in names], dtype=torch.int64).argsort(stable=True)


def held_out(labels: torch.Tensor, fraction: float, seed: int,
             names: list[str] | None = None, salt: str = "test") -> torch.Tensor:
    """A stratified, seeded test set: round(fraction x n) of each class's images (at least 1,
    and never all of a class's); a boolean mask over `labels`. With the rows' file names, the
    lowest ranks of each class; without (the runs saved before), a seeded shuffle's first."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    order = ranks(names, seed, salt) if names is not None else None
    for c in labels.unique().tolist():
        n = int((labels == c).sum())
        k = min(n - 1, max(1, round(fraction * n))) if n > 1 else 0
        if order is None:
            members = (labels == c).nonzero().flatten()
            mask[members[torch.randperm(n, generator=g)[:k]]] = True
        else:  # the class's rows in rank order
            mask[order[labels[order] == c][:k]] = True
    return mask


def val_rows(n: int, fraction: float, seed: int, names: list[str] | None = None,
             labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, training rows) of a training set of n, so a resumed run and `ptrain
    eval --split val` get the same split. With `labels` (a folder, PER_CLASS), held_out's rows:
    round(fraction x n) of each class, by the names' ranks; else the lowest ranks of the names
    over the whole set (BY_NAME), or a seeded shuffle's first (a built-in dataset, whose
    classes are balanced; a folder run saved before names)."""
    if labels is not None and names is not None:
        mask = held_out(labels, fraction, seed, names, salt="val")  # (never a whole class)
        if not mask.any():
            raise UsageError(f"--val-split {fraction}: each class has a single training image; "
                             "none can be held out for validation")
        return mask.nonzero().flatten(), (~mask).nonzero().flatten()
    order = (ranks(names, seed, "val") if names is not None
             else torch.randperm(n, generator=torch.Generator().manual_seed(seed)))
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise UsageError(f"--val-split {fraction} leaves no training images (the training set "
                         f"has {n}); use a smaller fraction")
    return order[:n_val], order[n_val:]


def listing(names: list[str], labels: list[int]) -> str:
    """A digest of the files the splits are drawn from (each decoded row's path under the folder
    and class: a file skipped, then mended, counts as added): a run saves it, and eval or resume
    on a folder whose listing differs says that some images may have changed side."""
    text = "\n".join(f"{label}\t{name}" for name, label in zip(names, labels))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
