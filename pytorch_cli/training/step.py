"""The training step, apart from the loop: forward/backward of one micro-batch, the optimizer
step, and a loss meter that stays on the device until it is read."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from pytorch_cli.data.mixing import Mixed
from pytorch_cli.training import optim
from pytorch_cli.training.state import TrainState


def group_of(batch: int, batches: int, grad_accum: int) -> range:
    """The batches of the optimizer step that `batch` belongs to: runs of --grad-accum batches
    from the epoch's start, the last one shorter when they do not divide the epoch."""
    first = batch - batch % grad_accum
    return range(first, min(first + grad_accum, batches))


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for forward and loss (a no-op for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def loss_of(logits: torch.Tensor, y: torch.Tensor | Mixed, label_smoothing: float = 0.0,
            class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's mean cross-entropy. Mixed labels (--mixup/--cutmix): lam x the loss against
    labels a plus (1 - lam) x against b, which is the loss against the mixed target (cross-entropy
    is linear in it), label smoothing and class weights included."""
    if isinstance(y, Mixed):
        return (y.lam * loss_of(logits, y.a, label_smoothing, class_weight)
                + (1 - y.lam) * loss_of(logits, y.b, label_smoothing, class_weight))
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing,
                           reduction="mean" if class_weight is None else "none")
    return loss if class_weight is None else (loss * class_weight[y]).mean()


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor | Mixed, weight: float,
                     label_smoothing: float = 0.0, sync: bool = True,
                     amp: torch.dtype | None = None, scaler=None,
                     class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Add the gradient of `weight` x this micro-batch's mean loss to .grad; return the loss.

    `weight` is the micro-batch's share of its optimizer step's samples, so the accumulated
    gradient is exactly that of one batch of all of them. `sync` (decided before the forward:
    is this the step's last micro-batch?) lets DistributedDataParallel skip its all-reduce on
    the others. `amp`: the autocast dtype; `scaler`: float16's GradScaler. `class_weight`
    (--class-weights auto) scales each sample's loss by its class's weight, before the mean: the
    loss stays a sum over samples, so accumulation and DDP still add up to one batch."""
    skip_sync = not sync and hasattr(model, "no_sync")
    with model.no_sync() if skip_sync else contextlib.nullcontext():
        with autocast(x.device, amp):
            loss = loss_of(model(x), y, label_smoothing, class_weight)
        scaled = loss if weight == 1 else loss * weight  # x 1 is exact: no op to run
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return loss.detach()


def optimizer_step(state: TrainState, clip_grad: float = 0.0) -> None:
    """Clip, step, zero the gradients, advance the schedule and the step count. With a
    GradScaler, the gradients are unscaled before clipping and a step with inf/NaN is skipped."""
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(state.raw.parameters(), clip_grad)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.last_lr = optim.head_lr(state.optimizer)
    optim.advance(state.scheduler)
    state.pos.step += 1


@torch.no_grad()
def lookahead(state: TrainState, decay: float) -> None:
    """Lookahead with an averaged copy (the airbench recipe): move the average toward the
    weights by 1 - decay, then put the weights (and BatchNorm statistics) at the average."""
    for name, value in state.raw.state_dict().items():
        if name in state.lookahead_avg:
            state.lookahead_avg[name].lerp_(value, 1 - decay)
            value.copy_(state.lookahead_avg[name])


@torch.no_grad()
def ema_update(state: TrainState, decay: float) -> None:
    """After an optimizer step: the average moves toward the weights (and float buffers: the
    BatchNorm statistics) by 1 - d, d = min(decay, (1 + t) / (10 + t)) at step t, TensorFlow's
    ExponentialMovingAverage warm-up, so early averages do not hold the random init; integer
    buffers (BatchNorm's batch count) are copied."""
    t = state.pos.step
    d = min(decay, (1 + t) / (10 + t))
    live = state.raw.state_dict()
    averaged = [(v, live[k]) for k, v in state.ema.state_dict().items()]
    floats = [(a, w) for a, w in averaged if a.is_floating_point()]
    torch._foreach_lerp_([a for a, _ in floats], [w for _, w in floats], 1 - d)
    for a, w in averaged:
        if not a.is_floating_point():
            a.copy_(w)


def lookahead_decay(step: int, total_steps: int, every: int, decay: float) -> float:
    """How much of the average is kept at `step`: none at first (the weights lead), rising as
    (step / total)^3 to decay^every at the end."""
    return decay ** every * (step / total_steps) ** 3


def lookahead_after_step(state: TrainState, total_steps: int, every: int, decay: float) -> None:
    """After an optimizer step: the lookahead every `every` steps, and at the run's last step
    the weights end at the average."""
    done = state.pos.step
    if done % every == 0:
        lookahead(state, lookahead_decay(done, total_steps, every, decay))
    if done == total_steps:
        lookahead(state, 1.0)


class Meter:
    """Batch losses kept on the device until `read()`, its only host sync: the loop syncs at log
    intervals, epoch ends and checkpoints, never per step. Each batch's loss tensor is kept as it
    is (no device op per batch; a copy into a preallocated slot cost 13 us a batch on a CPU),
    stacked in float32 when read (MPS has no float64) and summed on the host in float64, in batch
    order, so a run resumed mid-epoch reports bit for bit what the uninterrupted run reports."""

    def __init__(self, device: torch.device):
        self.device = device
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def add(self, loss: torch.Tensor, n: int) -> None:
        self.losses.append(loss)
        self.sizes.append(n)

    def _stacked(self) -> torch.Tensor:
        if not self.losses:
            return torch.zeros(0, device=self.device)
        return torch.stack(self.losses).to(torch.float32)

    def read(self, carried: float = 0.0) -> tuple[float, int]:
        """(`carried` plus the sample-weighted losses, samples) since the last reset: one sync.
        One running sum from `carried` on: where it was cut (a save, a resume) changes no bit."""
        losses = self._stacked().tolist()
        return sum((loss * n for loss, n in zip(losses, self.sizes)), carried), sum(self.sizes)

    def first_bad(self, default: int = 0) -> int:
        """Index of the first non-finite loss since the last reset (a sync; only on the way
        out of a failed run)."""
        bad = (~self._stacked().isfinite()).nonzero()
        return int(bad[0, 0]) if len(bad) else default

    def reset(self) -> None:
        self.losses, self.sizes = [], []
