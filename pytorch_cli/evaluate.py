"""Evaluation over a split: loss, top-1 (and top-5) accuracy and the confusion matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pytorch_cli import batches
from pytorch_cli.datasets import Spec, Split
from pytorch_cli.step import autocast


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, spec: Spec, batch_size: int,
             device: torch.device, max_batches: int | None = None, tta: bool = False,
             amp: torch.dtype | None = None) -> dict:
    """Mean cross-entropy, top-1 (and top-5) accuracy and the confusion matrix over a split,
    in eval mode, without label smoothing. With tta, logits are a weighted mean over the views;
    `amp`: the autocast dtype training used."""
    model.eval()
    n = spec.num_classes
    loss_sum = torch.zeros((), device=device)  # float32: MPS has no float64
    confusion = torch.zeros(n * n, device=device, dtype=torch.int64)
    top5 = torch.zeros((), device=device, dtype=torch.int64)
    total = 0
    for i, (views, y) in enumerate(batches.eval_batches(split, spec, batch_size, device, tta)):
        if max_batches is not None and i >= max_batches:
            break
        with autocast(device, amp):
            logits = sum(weight * model(v).float() for weight, v in views)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n)
        if n > 10:
            top5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum()
        total += len(y)
    confusion = confusion.view(n, n).cpu()  # rows: true class, columns: predicted
    correct = int(confusion.trace())
    out = {"loss": loss_sum.item() / total, "acc": correct / total, "correct": correct,
           "total": total, "confusion": confusion}
    if n > 10:
        out["top5_acc"] = int(top5.item()) / total
    return out
