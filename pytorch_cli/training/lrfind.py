"""`ptrain lr-find`: Smith's learning-rate range test (Cyclical Learning Rates, 2017; fastai's
lr_find). The run's own model, data, augmentation and optimizer take one step per LR while the
LR grows exponentially from `start` to `end`; the loss, smoothed as fastai does (an exponential
average, bias-corrected), is recorded until it passes 4x its minimum (diverged). Suggested: the
LR where the smoothed loss falls fastest against log LR, once it has fallen beyond its batch-to-
batch noise. Nothing is written into any run."""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from functools import partial
from typing import TYPE_CHECKING

import torch

from pytorch_cli.platform.errors import warn
from pytorch_cli.training import freezing, step
from pytorch_cli.training.epoch import epoch_batches
from pytorch_cli.training.job import given_flags, setup

if TYPE_CHECKING:
    from pytorch_cli.settings.config import TrainConfig

SMOOTHING = 0.98  # fastai's beta: about the last 50 steps
DIVERGED = 4.0  # the smoothed loss this many times its minimum ends the test
NOISE_POINTS = 8  # the fewest first losses the noise is read from (MAD of 7 differences)


def run(cfg: TrainConfig, start: float, end: float, steps: int) -> dict:
    """{"lr": [...], "loss": [...], "smoothed": [...], "suggested": lr, "minimum": lr}."""
    # the run's optimizer and parameter groups at lr=start, no schedule; --grad-accum's
    # micro-batches make each step, as in training (the LR is that of their sum's batch)
    _unused(cfg)
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
    return {**out, **suggest(out["lr"], out["smoothed"], out["loss"]), "model": cfg.model,
            "dataset": cfg.dataset, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size}


# what shapes a run but not the test: its schedule, length, averages, evaluations, compile,
# and what a run writes (it writes nothing: the trackers had been taken silently, a trial)
NOT_TESTED = ("scheduler", "warmup_epochs", "epochs", "max_steps", "ema", "patience",
              "min_delta", "tta", "unfreeze_at", "compile", "log_interval", "save_interval",
              "save_model", "tensorboard", "mlflow", "wandb")


def _unused(cfg: TrainConfig) -> None:
    """One warning naming the settings given that the test does not use (a training config
    passed as it is, as the recipe says, or a flag typed): not taken silently."""
    given = given_flags(cfg, NOT_TESTED)
    if given:
        warn(f"lr-find does not use {', '.join(given)}: the test takes one step per LR, from "
             "the LR it sets, and evaluates nothing; the suggestion is for the run that has them")


def suggest(lrs: list[float], smoothed: list[float], losses: list[float]) -> dict:
    """The LR of the steepest descent of the smoothed loss (its most negative slope against
    log LR, up to its minimum) and the LR of the minimum, both past the first tenth of the
    steps, as fastai skips it: the average is still settling there, and its first points are
    single batches. No suggestion (`unsuggested` says why) before 3 points, where the loss only
    rose, or where it never fell beyond its noise."""
    if len(lrs) < 3:
        return {"suggested": None, "minimum": lrs[0] if lrs else None, "unsuggested":
                "too few steps before the loss diverged to suggest an LR: lower --start-lr"}
    skip, window = len(lrs) // 10, max(len(lrs) // 10, NOISE_POINTS)
    low = min(range(skip, len(smoothed)), key=smoothed.__getitem__)
    fall = smoothed[skip] - smoothed[low]
    if len(lrs) <= window:  # (a hostile trial's --steps 20 at 1e-12: "suggested 1.62e-12")
        why = (f"{len(lrs)} steps are too few to tell a fall of the loss from its batch noise "
               f"(read from the first {NOISE_POINTS}): pass --steps 20 or more, or a lower "
               "--start-lr if the loss diverged first")
    elif fall <= 0:
        # (a trained model's start is a batch's noise, which a lower LR cannot help: a
        # hostile trial's --init-from run got this advice; the next branch already said so)
        why = (f"the smoothed loss only rose from its start (LR {lrs[skip]:.3g}): no LR to "
               "suggest; a lower --start-lr may find where it falls, while a trained model "
               "(--init-from) may gain nothing at any LR")
    elif fall <= (noise := _noise(losses[:window])):
        why = (f"the smoothed loss never fell beyond its noise ({noise:.3g}; it fell {fall:.3g}) "
               f"between LR {lrs[0]:.3g} and {lrs[-1]:.3g}: no LR to suggest (a trained model "
               f"may gain nothing at any; else widen --start-lr to --end-lr, or add --steps)")
    else:
        slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1])
                  for i in range(max(skip, 1), max(low, 2))}
        return {"suggested": lrs[min(slopes, key=slopes.get)], "minimum": lrs[low],
                "unsuggested": None}
    return {"suggested": None, "minimum": lrs[low], "unsuggested": why}


def _noise(first: list[float]) -> float:
    """How far the smoothed loss must fall to be no noise: a flat curve's steepest 'fall' is
    noise (a hostile trial's --start-lr 1e-300, three decades a step, suggested 1.3e-300). The
    batches' scatter s is read from the first tenth's step-to-step differences, robustly (their
    median absolute deviation x 1.4826, over sqrt 2 for a difference of two): a falling trend
    or a few steep first steps are no scatter. Where the curve starts is known to s/sqrt(n)
    (n: the first tenth's points), and an average with beta 0.98 scatters by
    s*sqrt(0.02/1.98) = 0.1 s: a fall must pass 2.5 times both together."""
    steps = [b - a for a, b in zip(first, first[1:])]
    middle = statistics.median(steps)
    scatter = 1.4826 * statistics.median(abs(d - middle) for d in steps) / math.sqrt(2)
    return 2.5 * scatter * math.sqrt(1 / len(first) + (1 - SMOOTHING) / (1 + SMOOTHING))
