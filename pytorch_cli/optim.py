"""Optimizers and learning-rate schedules. Schedules are counted in optimizer steps: they take the
run's total step count, so fractional epochs and step-based recipes need no change in the loop."""

from __future__ import annotations

import math

import torch
from torch import nn

from pytorch_cli.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only, never on biases or norm weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


OPTIMIZERS = {
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum,
                                             nesterov=c.nesterov),
    "adam": lambda groups, c: torch.optim.Adam(groups, lr=c.lr),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, lr=c.lr),
    "adadelta": lambda groups, c: torch.optim.Adadelta(groups, lr=c.lr),
    "rmsprop": lambda groups, c: torch.optim.RMSprop(groups, lr=c.lr, momentum=c.momentum),
}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](param_groups(model, cfg.weight_decay), cfg)


def lr_factor(cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The schedule as a function of the optimizer step: linear warmup, then
    none (constant), step (times --gamma every epoch, like the examples' StepLR) or cosine to 0
    at `total_steps`."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "step":
            return cfg.gamma ** (step // steps_per_epoch)
        if cfg.scheduler == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                    steps_per_epoch: int):
    """Stepped once per optimizer step. steps_per_epoch converts the epoch-based flags
    (--warmup-epochs, --scheduler step's per-epoch decay) into steps."""
    if cfg.scheduler == "onecycle":
        pct = cfg.warmup_epochs * steps_per_epoch / total_steps if cfg.warmup_epochs else 0.3
        # cycle_momentum off: --momentum keeps the meaning the user gave it.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=pct, cycle_momentum=False)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps, steps_per_epoch))
