"""--freeze backbone and --unfreeze-at: what trains in an epoch is a function of the epoch alone,
so a resumed run freezes and releases exactly where the uninterrupted one did.

A frozen backbone is out of the optimizer (its groups hold no parameters until released, so the
optimizer keeps one layout and its saved state loads at any epoch), takes no gradient, and keeps
its BatchNorm layers in eval mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytorch_cli.models import zoo
from pytorch_cli.platform import distributed

if TYPE_CHECKING:
    from pytorch_cli.training.job import Job


def frozen(cfg, epoch: int) -> bool:
    return cfg.freeze == "backbone" and not (cfg.unfreeze_at and epoch >= cfg.unfreeze_at)


def apply(cfg, optimizer, groups: list[list], epoch: int) -> bool:
    """Set the backbone's parameters and optimizer groups (`groups`: each one's parameters, all
    of them) for `epoch`; True if anything changed."""
    if cfg.freeze == "none":
        return False
    return _hold(optimizer, groups, frozen(cfg, epoch))


def as_saved(cfg, optimizer, groups: list[list], saved_optimizer: dict) -> None:
    """Lay the backbone's groups out as they were when `saved_optimizer` was saved, so that it
    loads: an end-of-epoch save before the release holds them empty, though the epoch it
    resumes at releases them (apply then does, after the load)."""
    if cfg.freeze == "none":
        return
    saved = saved_optimizer["param_groups"]
    hold = any(g.get("part") == "backbone" and not g["params"] for g in saved)
    _hold(optimizer, groups, hold)


def _hold(optimizer, groups: list[list], hold: bool) -> bool:
    changed = False
    for group, full in zip(optimizer.param_groups, groups):
        if group.get("part") != "backbone":
            continue
        want = [] if hold else list(full)
        if len(group["params"]) != len(want):  # (untouched otherwise: TRAINED_UNTIL's own)
            group["params"], changed = want, True
            for p in full:
                p.requires_grad_(not hold)
    return changed


def start_epoch(job: Job, epoch: int) -> None:
    """Train mode for the epoch, with what trains in it: --freeze's backbone, airbench's
    TRAINED_UNTIL parameters (after --freeze: they stay frozen once their epochs are over)."""
    changed = apply(job.cfg, job.state.optimizer, job.groups, epoch)
    changed |= zoo.set_trainable_for_epoch(job.state.raw, job.cfg.model, epoch)
    if changed:
        job.state.model = distributed.wrap(job.state.raw, job.device)  # DDP hooks the new set
    job.state.model.train()
    if frozen(job.cfg, epoch):
        for norm in job.frozen_norms:
            norm.eval()
