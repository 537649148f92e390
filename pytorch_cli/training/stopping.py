"""When a run ends early: the agreement that makes every rank stop at the same step once a stop
is asked (the flag is platform/signals.py's), --patience (early stopping), and the non-finite
loss check that stops a diverged run before it saves."""

from __future__ import annotations

import math

import torch

from pytorch_cli.platform import distributed
from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.platform.signals import StopFlag
from pytorch_cli.training.state import Position, TrainState
from pytorch_cli.training.step import Meter


class Stopped(Exception):
    """Out of an evaluation that the stop flag cut short (the loop saves, then stops)."""


def agreed(stop: StopFlag, world_size: int, step: int, every: int = 1) -> bool:
    """Stop now? Alone: the flag. Several processes agree first (a collective every `every`
    steps: all ranks call this at the same steps), so that all stop at the same step although
    a signal reaches each at its own moment."""
    if world_size == 1:
        return bool(stop)
    if step % every:
        return False
    if distributed.all_sum(1.0 if stop else 0.0)[0] > 0:
        stop.request("SIGTERM")  # a rank that got no signal stops with the others
        return True
    return False


def out_of_patience(pos: Position, acc: float, patience: int, min_delta: float) -> bool:
    """--patience after an epoch's evaluation: whether the run should end (Keras' EarlyStopping
    on an accuracy: a gain counts when it is over min_delta, measured from the last gain that
    counted). Every rank holds the same all-reduced accuracy, so they all decide alike."""
    if acc > pos.gained_at + min_delta:
        pos.gained_at, pos.stale_epochs = acc, 0
    else:
        pos.stale_epochs += 1
    return bool(patience) and pos.stale_epochs >= patience


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter is finite: reduced on the device and read once (a read per
    parameter is a host round trip each, 62 for resnet18)."""
    return bool(torch.stack([p.isfinite().all() for p in module.parameters()]).all())


class NonFiniteLoss(PtrainError):
    """The run diverged (exit code 3)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


def check_finite(loss_sum: float, meter: Meter, state: TrainState, lr: float, main: bool) -> None:
    """A non-finite training loss ends the run before anything is saved from it (the checks
    sit where the loss is read anyway: log intervals, saves, epoch ends; no extra host sync).
    With float16's GradScaler an overflowing step is skipped by design; only non-finite
    weights stop that run."""
    if math.isfinite(loss_sum):
        return
    if state.scaler is not None and weights_finite(state.raw):
        return
    pos = state.pos
    batch = pos.batch - len(meter.sizes) + meter.first_bad(len(meter.sizes) - 1) + 1
    error = NonFiniteLoss(
        f"the training loss became {'NaN' if math.isnan(loss_sum) else 'infinite'} in epoch "
        f"{pos.epoch + 1} at batch {batch} (found at step {pos.step}); stopped, and nothing was "
        f"saved from it (last.pt, if any, is the last good state). Try a lower --lr (now {lr:g}), "
        "--clip-grad 1.0, or --precision 32; --detect-anomaly names the operation"
    )
    error.echo = not main  # rank 0 says it
    raise error


def check_weights(state: TrainState) -> None:
    """Before any save: a last step can turn the weights non-finite after its loss was read
    (finite) for the last time; such a state is never written over a good one."""
    if not weights_finite(state.raw):
        raise NonFiniteLoss(f"the weights became non-finite by step {state.pos.step}; stopped "
                            "without saving them (last.pt, if any, is the last good state). Try a "
                            "lower --lr, --clip-grad 1.0, or --precision 32")
