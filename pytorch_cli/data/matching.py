"""A saved run's data against the data at hand. Training on and resuming from a folder needs
its classes, in its order (the head's rows are numbered so); evaluating may also read another
labelled set of the run's classes, or of some of them (a new test set): its labels are then
renumbered as the run's by their names."""

from __future__ import annotations

import dataclasses

import torch

from pytorch_cli.data import splits
from pytorch_cli.data.datasets import Data, Split
from pytorch_cli.platform.errors import UsageError, warn


def _names(classes: list) -> str:
    return ", ".join(map(str, classes[:4])) + (f", ... ({len(classes)})" if len(classes) > 4
                                               else "")


def same_as_trained(meta: dict, data: Data, command: str) -> None:
    """A saved run (its meta) read with the data it trained on: a folder whose classes differ
    (another folder, or one changed since) would score or load the head onto other labels, one
    line; one whose files differ, a warning of what that moves (splits.py)."""
    theirs, mine = list(meta.get("classes") or data.classes), list(data.classes)
    if mine != theirs:
        raise UsageError(f"{data.source}: its classes ({_names(mine)}) are not the run's "
                         f"({_names(theirs)}); {command} with --data-dir set to the folder the "
                         "run trained on")
    moved_warning(meta, data)


def moved_warning(meta: dict, data: Data, split: str = "test", other: bool = False) -> None:
    """Warn that a folder's held-out images may have changed side since the run was saved; for
    a folder named as another set (`other`), that only its held-out part is scored."""
    listing = meta.get("listing")
    # a run that drew nothing (its folder had test/) has no listing: another folder it holds
    # out from differs all the same (a hostile trial: 8 of 40 new images scored, unsaid)
    if not (data.listing and listing != data.listing and (listing or other)):
        return
    if other:
        n = sum(len(s) for s in (data.train, data.val, data.test) if s is not None)
        part = getattr(data, split)
        warn(f"{data.source} is not the folder the run trained on (its files differ): --split "
             f"{split} scores the {len(part) if part is not None else 0:,} of its {n:,} images "
             "the run's settings hold out; --split all scores every one")
    else:
        warn(f"{data.source}: its files are not the ones the run trained on (added, removed or "
             "renamed since): " + ("each file added or removed moves at most one other image "
                                   "into or out of its held-out ones, and one more between "
                                   "training and --val-split's (drawn by name)"
                                   if meta.get("split") in splits.NAMED else
                                   "its held-out images are drawn anew, so some were trained on"))


def onto_run_classes(meta: dict, data: Data, where: str = "") -> Data:
    """The data, its labels numbered as the run's classes: a folder (or --labels CSV: `where`
    the classes came from) holding the run's classes or some of them. A class the run never
    learnt is one line (its head has no row for it)."""
    theirs, mine = list(meta.get("classes") or data.classes), list(data.classes)
    if mine == theirs:
        return data
    unknown = [c for c in mine if c not in theirs]
    if unknown:
        raise UsageError(f"{where or data.source}: {'class' if len(unknown) == 1 else 'classes'} "
                         f"{_names(unknown)} {'is' if len(unknown) == 1 else 'are'} not the "
                         f"run's ({_names(theirs)}); evaluate images of the run's classes (or "
                         "of some of them)")
    number = torch.tensor([theirs.index(c) for c in mine], dtype=torch.int64)

    def renumbered(split: Split | None) -> Split | None:
        return None if split is None else Split(split.images, number[split.labels])
    spec = dataclasses.replace(data.spec, num_classes=len(theirs))
    return dataclasses.replace(data, spec=spec, classes=theirs, train=renumbered(data.train),
                               val=renumbered(data.val), test=renumbered(data.test))
