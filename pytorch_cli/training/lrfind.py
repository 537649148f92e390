"""`ptrain lr-find`: Smith's learning-rate range test (Cyclical Learning Rates, 2017; fastai's
lr_find). The run's own model, data, augmentation and optimizer take one step per LR while the
LR grows exponentially from `start` to `end`; the loss, smoothed as fastai does (an exponential
average, bias-corrected), is recorded until it passes 4x its minimum (diverged). Suggested: the
LR where the smoothed loss falls fastest against log LR. Nothing is written into any run."""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import partial
from typing import TYPE_CHECKING

import torch

from pytorch_cli.training import freezing, step
from pytorch_cli.training.epoch import epoch_batches
from pytorch_cli.training.job import setup

if TYPE_CHECKING:
    from pytorch_cli.settings.config import TrainConfig

SMOOTHING = 0.98  # fastai's beta: about the last 50 steps
DIVERGED = 4.0  # the smoothed loss this many times its minimum ends the test


def run(cfg: TrainConfig, start: float, end: float, steps: int) -> dict:
    """{"lr": [...], "loss": [...], "smoothed": [...], "suggested": lr, "minimum": lr}."""
    # the run's optimizer and parameter groups at lr=start, no schedule; --grad-accum's
    # micro-batches make each step, as in training (the LR is that of their sum's batch)
    cfg = dataclasses.replace(cfg, lr=start, scheduler="none", warmup_epochs=0.0,
                              max_steps=None, save_model=False, compile=False)
    job = setup(cfg)
    growth = (end / start) ** (1 / max(steps - 1, 1))
    state = job.state
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, lambda i: growth ** i)
    freezing.start_epoch(job, 0)  # train mode; a frozen backbone's BatchNorm stays in eval
    out: dict = {"lr": [], "loss": [], "smoothed": []}
    average, best = 0.0, math.inf
    # as many epochs of batches as the steps take, cfg.grad_accum to a step
    micro = itertools.chain.from_iterable(map(partial(epoch_batches, job), itertools.count()))
    while True:
        group = list(itertools.islice(micro, cfg.grad_accum))
        lr = state.optimizer.param_groups[0]["lr"]
        n = sum(len(y) for _, y in group)
        loss = sum(step.forward_backward(state.model, x, y, len(y) / n, cfg.label_smoothing,
                                         i == len(group) - 1, job.amp, state.scaler,
                                         job.class_weight).item() * len(y) / n
                   for i, (x, y) in enumerate(group))
        step.optimizer_step(state, cfg.clip_grad)
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        out["lr"].append(lr)
        out["loss"].append(loss)
        out["smoothed"].append(average / (1 - SMOOTHING ** len(out["lr"])))
        best = min(best, out["smoothed"][-1])
        if out["smoothed"][-1] > DIVERGED * best or len(out["lr"]) >= steps:
            break
    return {**out, **suggest(out["lr"], out["smoothed"]), "model": cfg.model,
            "dataset": cfg.dataset, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size}


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """The LR of the steepest descent of the smoothed loss (its most negative slope against
    log LR, over the points before its minimum) and the LR of the minimum."""
    if len(lrs) < 3:
        return {"suggested": None, "minimum": lrs[0] if lrs else None}
    low = min(range(len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1])
              for i in range(1, max(low, 2))]
    steepest = 1 + min(range(len(slopes)), key=slopes.__getitem__)
    return {"suggested": lrs[steepest], "minimum": lrs[low]}
