"""Optimizers and learning-rate schedules. Schedules are counted in optimizer steps: they take the
run's total step count, so fractional epochs and step-based recipes need no change in the loop.

Torch-free to import (torch is imported by the builders): the registries' names are the
--optimizer and --scheduler choices that --help and completion list.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pytorch_cli.platform.errors import UsageError, warn

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pytorch_cli.settings.config import TrainConfig

# name -> (the torch.optim class, its arguments besides the parameter groups and --lr)
OPTIMIZERS = {
    "sgd": ("SGD", lambda c: {"momentum": c.momentum, "nesterov": c.nesterov}),
    "adam": ("Adam", lambda c: {}),
    "adamw": ("AdamW", lambda c: {}),
    "adadelta": ("Adadelta", lambda c: {}),
    "rmsprop": ("RMSprop", lambda c: {"momentum": c.momentum}),
}

# Their fused CUDA kernels read float16's found-inf flag on the device: GradScaler.step then
# calls them directly, where for the others it reads the flag back (.item(), a host sync) first.
FUSED = ("sgd", "adam", "adamw")

# name -> the LR factor after the warmup: f(config, step, steps per epoch, progress from the
# warmup's end to the last step, 0..1). onecycle is torch's OneCycleLR, which warms up itself.
SCHEDULES = {
    "none": lambda c, step, per_epoch, progress: 1.0,
    "step": lambda c, step, per_epoch, progress: c.gamma ** (step // per_epoch),
    "cosine": lambda c, step, per_epoch, progress:
        c.final_lr + (1 - c.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)),
    "linear": lambda c, step, per_epoch, progress: 1 + (c.final_lr - 1) * progress,
    "onecycle": None,
    "plateau": None,
}


def param_groups(model: nn.Module, cfg: TrainConfig, backbone: set[str] = frozenset()
                 ) -> list[dict]:
    """Three groups: weight matrices and conv kernels; norm layers' scales and shifts, at
    --norm-lr-scale times the learning rate; other biases. Weight decay on the first only,
    unless --bias-decay: then on all, at the same rate per step (so divided by the scale,
    since SGD multiplies the decay by the learning rate). With `backbone` (parameter names),
    three for the backbone ("part": "backbone", at --backbone-lr-scale) and three for the head.
    --layer-decay splits each part's three by block, the head's block first (its LR is logged)."""
    norm = norm_params(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = cfg.weight_decay if cfg.bias_decay else 0.0
    everything = {n for n, _ in named}
    parts = ([("backbone", cfg.backbone_lr_scale, backbone), ("head", 1.0, everything - backbone)]
             if backbone else [(None, 1.0, everything)])
    layers = layer_scales(model, cfg.layer_decay)  # name -> factor; {} without --layer-decay
    groups = []
    for part, scale, members in parts:
        for layer in sorted(set(layers.values()) or {1.0}, reverse=True):  # the head's first
            trained = [p for n, p in named if n in members and layers.get(n, 1.0) == layer]
            lr = cfg.lr * scale * layer
            kinds = [{"params": [p for p in trained if p.ndim >= 2], "lr": lr,
                      "weight_decay": cfg.weight_decay},
                     {"params": [p for p in trained if id(p) in norm],
                      "lr": lr * cfg.norm_lr_scale, "weight_decay": decay / cfg.norm_lr_scale},
                     {"params": [p for p in trained if p.ndim < 2 and id(p) not in norm],
                      "lr": lr, "weight_decay": decay}]
            groups += [{**g, "part": part} if part else g for g in kinds]
    return [g for g in groups if g["params"]]


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """The LR the head trains at: --lr as the schedule has it (a split-off backbone's groups,
    at --backbone-lr-scale, come first; the head's weights are its first group)."""
    return next(g["lr"] for g in optimizer.param_groups if g.get("part") != "backbone")


def norm_params(model: nn.Module) -> set[int]:
    """The ids of the norm layers' scales and shifts (BatchNorm, GroupNorm, LayerNorm)."""
    from torch import nn
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return {id(p) for m in model.modules() if isinstance(m, norms)
            for p in m.parameters(recurse=False)}


def layer_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """--layer-decay D: each parameter's LR factor, D ** (blocks between it and the head), the
    blocks as timm's param_groups_layer_decay counts them (the model's group_matcher)."""
    if not decay:
        return {}
    from timm.models import group_parameters
    if not hasattr(model, "group_matcher"):
        raise UsageError(f"--layer-decay: {type(model).__name__} has no group_matcher to say "
                         "which block each parameter is in")
    layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    top = max(layer_of.values())
    return {n: decay ** (top - layer_of.get(n, top)) for n, _ in model.named_parameters()}


def device_kwargs(name: str, device_type: str) -> dict:
    """What the optimizer named `name` takes for parameters on `device_type`: fused on CUDA
    (FUSED); elsewhere torch's default implementation, as before."""
    return {"fused": True} if device_type == "cuda" and name in FUSED else {}


def build_optimizer(model: nn.Module, cfg: TrainConfig, backbone: set[str] = frozenset()
                    ) -> torch.optim.Optimizer:
    import torch
    name, extra = OPTIMIZERS[cfg.optimizer]
    groups = param_groups(model, cfg, backbone)
    on = device_kwargs(cfg.optimizer, groups[0]["params"][0].device.type)
    return getattr(torch.optim, name)(groups, lr=cfg.lr, **extra(cfg), **on)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """optimizer.load_state_dict, keeping this optimizer's own `fused`. Loading takes the saved
    groups' flag: a checkpoint from a CPU run, or from before fused optimizers, would turn it
    off on a GPU, and float16 then fails (the optimizer, built fused, still has GradScaler hand
    its step the found-inf flag, which the unfused step refuses). A fused step also wants its
    step counts on the device, in float32 (where torch's loading puts them for a fused group)."""
    import torch
    fused = [g.get("fused") for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, on in zip(optimizer.param_groups, fused):
        if "fused" not in group:
            continue
        group["fused"] = on
        for p in group["params"] if on else ():
            state = optimizer.state.get(p, {})
            if "step" in state:
                state["step"] = state["step"].to(p.device, torch.float32)


def unfit_state(optimizer: torch.optim.Optimizer, fresh: list[dict]) -> str:
    """What a loaded optimizer state has that its step would fail on, or silently use: a
    hyperparameter that is no finite number where the fresh groups (`fresh`, without params)
    had one, or a state tensor of another shape than its parameter; "" when it fits."""
    import torch

    def finite(v) -> bool:
        if isinstance(v, (tuple, list)):
            return all(finite(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    for i, (group, mine) in enumerate(zip(optimizer.param_groups, fresh)):
        for key, value in mine.items():
            if finite(value) and not finite(group.get(key)):
                return f"group {i}'s {key!r} is {group.get(key)!r}, not a finite number"
    for group in optimizer.param_groups:
        for p in group["params"]:  # (the step count is the one tensor not shaped as its param)
            for key, value in optimizer.state.get(p, {}).items():
                if key != "step" and torch.is_tensor(value) and value.shape != p.shape:
                    return (f"its {key!r} of shape {tuple(value.shape)} is for another "
                            f"parameter than one of shape {tuple(p.shape)}")
    return ""


def lr_factor(cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The schedule as a function of the optimizer step: linear warmup from --warmup-start, then
    the schedule's factor (none: constant; step: times --gamma every epoch, like the examples'
    StepLR; cosine or linear, a triangle with the warmup, down to --final-lr at `total_steps`)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    after = SCHEDULES[cfg.scheduler]

    def factor(step: int) -> float:
        if step < warmup:
            return cfg.warmup_start + (1 - cfg.warmup_start) * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return after(cfg, step, steps_per_epoch, progress)

    return factor


def on_metric(scheduler) -> bool:
    """Whether the schedule follows each epoch's accuracy (plateau) rather than the steps."""
    from torch.optim import lr_scheduler
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)


def advance(scheduler) -> None:
    """The schedule's step after an optimizer step. Plateau's come at epoch ends; onecycle's
    after the run's last step is not taken: torch's OneCycleLR past its total_steps turns back
    up (a hostile trial's records ended on 8.7e-4 after its minimum of 4e-7), and a onecycle
    run is never extended (prepare.py), so nothing would use it."""
    from torch.optim import lr_scheduler
    if on_metric(scheduler) or (isinstance(scheduler, lr_scheduler.OneCycleLR) and
                                scheduler.last_epoch >= scheduler.total_steps - 1):
        return
    scheduler.step()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                    steps_per_epoch: int):
    """Stepped once per optimizer step. steps_per_epoch converts the epoch-based flags
    (--warmup-epochs, --scheduler step's per-epoch decay) into steps."""
    from torch.optim import lr_scheduler
    if cfg.scheduler == "plateau":  # stepped by each epoch's accuracy (on_metric), not per step
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.gamma,
                                              patience=cfg.plateau_patience,
                                              threshold=cfg.min_delta, threshold_mode="abs")
    warmup = cfg.warmup_epochs * steps_per_epoch
    if warmup >= total_steps:  # (only --max-steps can cut a run shorter than its warmup)
        said = (f"--warmup-epochs {cfg.warmup_epochs:g} is {math.ceil(warmup)} optimizer steps, "
                f"and the run has {total_steps} (--max-steps {cfg.max_steps})")
        if cfg.scheduler == "onecycle":  # its warmup is a fraction of the run, below 1
            raise UsageError(f"{said}: onecycle's warmup must end before the run; warm up less")
        warn(f"{said}: the run ends inside its warmup, its LR still rising")  # a quick check
    if cfg.scheduler == "onecycle":
        pct = warmup / total_steps if cfg.warmup_epochs else 0.3
        # cycle_momentum off: --momentum keeps the meaning the user gave it.
        return lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                       total_steps=total_steps, pct_start=pct,
                                       cycle_momentum=False)
    return lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps, steps_per_epoch))
