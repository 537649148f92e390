"""Evaluation over a split: loss, top-1 (and top-5) accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pytorch_cli.data import batches
from pytorch_cli.data.catalog import Spec
from pytorch_cli.data.datasets import Split
from pytorch_cli.platform import distributed, runtime
from pytorch_cli.platform.errors import PtrainError, first_line
from pytorch_cli.training.compiling import OFF, Watch
from pytorch_cli.training.step import autocast
from pytorch_cli.training.stopping import Stopped


class OutOfMemory(PtrainError):
    """An evaluation batch its device could not hold."""


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, spec: Spec, batch_size: int,
             device: torch.device, max_batches: int | None = None, tta: str = "",
             amp: torch.dtype | None = None, watch: Watch = OFF,
             stop: Callable[[int], bool] | None = None, per_image: list | None = None) -> dict:
    """Mean cross-entropy, top-1 (and top-5) accuracy and the confusion matrix over a split,
    in eval mode, without label smoothing. With tta (batches.tta_views' kind), logits are a
    weighted mean over the views;
    `amp`: the autocast dtype training used; `watch`: finds and times --compile's compiles.
    With several processes each evaluates its part of the split and the sums are added up, so
    every rank returns the whole split's figures. `stop(i)`, asked before batch i while every
    rank has one (the ranks' votes meet), raises Stopped when it says so. A batch its device's
    memory cannot hold raises OutOfMemory, naming the batch size. `per_image` (one process): a
    list that gets, batch by batch, each image's (loss, predicted class, its probability, the
    true class's probability), on the CPU."""
    model.eval()
    try:
        loss_sum, confusion, top5 = _sums(model, split, spec, batch_size, device, max_batches,
                                          tta, amp, watch, stop, per_image)
    except RuntimeError as e:
        if not runtime.out_of_memory(e):
            raise
        # without its traceback, whose frames hold the failed batch's tensors: freed, so that
        # a caller can save at once
        raise OutOfMemory(f"out of memory evaluating in batches of {batch_size} "
                          f"({first_line(e)})") from e.with_traceback(None)
    n = spec.num_classes
    for t in (loss_sum, confusion, top5):
        distributed.all_sum_(t)
    confusion = confusion.view(n, n).cpu()  # rows: true class, columns: predicted
    correct, total = int(confusion.trace()), int(confusion.sum())
    out = {"loss": loss_sum.item() / total, "acc": correct / total, "correct": correct,
           "total": total, "confusion": confusion}
    if n > 10:
        out["top5_acc"] = int(top5.item()) / total
    return out


def merged(results: list[dict]) -> dict:
    """One result from the evaluations of several splits (eval --split all): their sums added."""
    if len(results) == 1:
        return results[0]
    confusion = sum(r["confusion"] for r in results)
    correct, total = int(confusion.trace()), int(confusion.sum())
    out = {"loss": sum(r["loss"] * r["total"] for r in results) / total, "acc": correct / total,
           "correct": correct, "total": total, "confusion": confusion}
    if "top5_acc" in results[0]:
        out["top5_acc"] = sum(round(r["top5_acc"] * r["total"]) for r in results) / total
    return out


def _sums(model: torch.nn.Module, split: Split, spec: Spec, batch_size: int,
          device: torch.device, max_batches: int | None, tta: str, amp: torch.dtype | None,
          watch: Watch, stop: Callable[[int], bool] | None, per_image: list | None):
    """This rank's summed loss, confusion counts and top-5 hits, on the device."""
    world = distributed.world()
    n = spec.num_classes
    loss_sum = torch.zeros((), device=device)  # float32: MPS has no float64
    confusion = torch.zeros(n * n, device=device, dtype=torch.int64)
    top5 = torch.zeros((), device=device, dtype=torch.int64)
    shared = batches.eval_batch_count(len(split), batch_size, world.size)
    for i, (views, y) in enumerate(batches.eval_batches(split, spec, batch_size, device, tta,
                                                          world.rank, world.size)):
        if max_batches is not None and i >= max_batches:
            break
        if stop is not None and i < shared and stop(i):
            raise Stopped
        with autocast(device, amp), watch("evaluation"):
            logits = sum(weight * model(watch.batch(v)).float() for weight, v in views)
        if per_image is None:
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
        else:  # (a copy to the host a batch: eval --errors only)
            losses = F.cross_entropy(logits, y, reduction="none")
            loss_sum += losses.sum()
            probs = logits.softmax(1)
            best = probs.max(1)
            per_image.append(torch.stack([losses, best.indices.float(), best.values,
                                          probs.gather(1, y[:, None])[:, 0]], 1).cpu())
        # not bincount: on CUDA it reads the indices' min and max back, a sync per batch
        cells = y * n + logits.argmax(1)
        confusion.scatter_add_(0, cells, torch.ones_like(cells))
        if n > 10:
            top5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum()
    return loss_sum, confusion, top5


def class_scores(confusion: torch.Tensor, classes: list[str]) -> dict:
    """Per class (rows: true, columns: predicted): precision (of the images called it, the share
    that are), recall (of its images, the share found: its accuracy), F1 (their harmonic mean),
    images; and their unweighted means over the classes ("macro"). A class never predicted has
    precision 0, as scikit-learn's zero_division=0. A class with no image has no recall nor F1
    (None: "0.00% of 0 images" misled a hostile trial), and no precision either where nothing
    was called it; each mean is over the classes that have that score, so the macro recall is
    scikit-learn's balanced_accuracy_score (a test set lacking a class would otherwise lower
    them). "most_confused": the 5 largest off-diagonal cells, (true, predicted, images),
    fastai's most_confused: what a matrix too large to print (more than 20 classes) still
    shows."""
    c = confusion.double()
    hit, images = c.diag(), c.sum(1) > 0
    present = images | (c.sum(0) > 0)  # images, or some called it
    precision = hit / c.sum(0).clamp(min=1)
    recall = hit / c.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    rows = {name: {"precision": float(p) if here else None, "recall": float(r) if some else None,
                   "f1": float(f) if some else None, "images": int(n)}
            for name, p, r, f, n, here, some in zip(classes, precision, recall, f1, c.sum(1),
                                                   present, images)}
    macro = {k: float(v[has].mean()) if has.any() else 0.0
             for k, v, has in (("precision", precision, present), ("recall", recall, images),
                               ("f1", f1, images))}
    counts, cells = c.clone().fill_diagonal_(0).flatten().sort(descending=True, stable=True)
    n = len(classes)  # (stable: ties in the matrix's order, the same on every run)
    confused = [{"true": classes[int(i) // n], "predicted": classes[int(i) % n], "images": int(k)}
                for k, i in zip(counts[:5], cells[:5]) if k > 0]
    return {"per_class": rows, "macro": macro, "most_confused": confused}
