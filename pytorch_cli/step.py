"""The training step, apart from the loop: forward/backward of one micro-batch, the optimizer
step, and a loss meter that stays on the device until it is read."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_cli.state import TrainState


def group_of(batch: int, batches: int, grad_accum: int) -> range:
    """The batches of the optimizer step that `batch` belongs to: runs of --grad-accum batches
    from the epoch's start, the last one shorter when they do not divide the epoch."""
    first = batch - batch % grad_accum
    return range(first, min(first + grad_accum, batches))


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight: float,
                     label_smoothing: float = 0.0, sync: bool = True) -> torch.Tensor:
    """Add the gradient of `weight` x this micro-batch's mean loss to .grad; return the loss.

    `weight` is the micro-batch's share of its optimizer step's samples, so the accumulated
    gradient is exactly that of one batch of all of them. `sync` (decided before the forward:
    is this the step's last micro-batch?) lets DistributedDataParallel skip its all-reduce on
    the others."""
    skip_sync = not sync and hasattr(model, "no_sync")
    with model.no_sync() if skip_sync else contextlib.nullcontext():
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        (loss * weight).backward()
    return loss.detach()


def optimizer_step(state: TrainState, clip_grad: float = 0.0) -> None:
    """Clip, step, zero the gradients, advance the schedule and the step count."""
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(state.raw.parameters(), clip_grad)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.pos.step += 1


class Meter:
    """The sample-weighted mean of batch losses, summed on the device: `read()` is its only
    host sync, so the loop syncs at log intervals, epoch ends and checkpoints, never per step."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.samples = 0

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.total += loss.double() * n
        self.samples += n

    def read(self) -> tuple[float, int]:
        """(sum of losses, samples) since the last reset; waits for the device."""
        return self.total.item(), self.samples

    def reset(self) -> None:
        self.total.zero_()
        self.samples = 0
