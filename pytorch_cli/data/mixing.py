"""Mixup and CutMix, for the whole batch at once on the device (timm's "batch" mode): one draw
per global batch, from (seed, epoch, batch) like every other random choice, so a resumed run,
--workers and every process of a --nproc run see the same draws.

Each image is mixed with its neighbour (rows 2k and 2k+1 swap partners; an odd last row keeps
itself): partners are pairs within every even-sized part of a batch, so N processes at batch B
(even) mix exactly the pairs one process at N x B mixes. The labels come as `Mixed`, and the
loss is lam x loss(a) + (1 - lam) x loss(b): cross-entropy is linear in its target, so that is
the loss against the mixed (and label-smoothed) target distribution, without a one-hot matrix.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mix:
    """What --mixup, --cutmix and --mix-prob ask for (alphas of Beta(alpha, alpha); 0: off)."""
    mixup: float = 0.0
    cutmix: float = 0.0
    prob: float = 1.0

    def __bool__(self) -> bool:
        return bool(self.mixup or self.cutmix)


@dataclass(frozen=True)
class Draw:
    """One batch's mixing: kind none | mixup | cutmix, the weight of the image itself, and
    CutMix's box (top, bottom, left, right) with lam already corrected to its exact area."""
    kind: str = "none"
    lam: float = 1.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True)
class Mixed:
    """A mixed batch's labels: the images are lam x the image labelled `a` and (1 - lam) x its
    partner, labelled `b`."""
    a: torch.Tensor
    b: torch.Tensor
    lam: float

    def __len__(self) -> int:
        return len(self.a)


def cut_box(lam: float, size: tuple[int, int], r: random.Random) -> tuple[int, int, int, int]:
    """CutMix's box (timm's rand_bbox): sides sqrt(1 - lam) of the image's, centred anywhere,
    clipped to the image."""
    h, w = size
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = r.randrange(h), r.randrange(w)
    return (max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w))


def draw(mix: Mix, size: tuple[int, int], seed: int) -> Draw:
    """A batch's draw, on the host (stdlib random: no device, no torch generator state)."""
    if not mix:
        return Draw()
    r = random.Random(seed)
    if r.random() >= mix.prob:
        return Draw()
    cut = bool(mix.cutmix) and (not mix.mixup or r.random() < 0.5)  # both: half and half
    alpha = mix.cutmix if cut else mix.mixup
    lam = r.betavariate(alpha, alpha)
    if not cut:
        return Draw("mixup", lam)
    top, bottom, left, right = box = cut_box(lam, tuple(size), r)
    return Draw("cutmix", 1 - (bottom - top) * (right - left) / (size[0] * size[1]), box)


def partners(n: int, device: torch.device) -> torch.Tensor:
    """Each row's partner: 2k <-> 2k+1; an odd last row is its own."""
    return (torch.arange(n, device=device) ^ 1).clamp_(max=n - 1)


def apply(x: torch.Tensor, y: torch.Tensor, d: Draw) -> tuple[torch.Tensor, torch.Tensor | Mixed]:
    """Mix normalised images `x` in place as `d` says; returns them and their labels (Mixed
    when mixed). Device ops only: the draw's numbers are host floats and ints."""
    if d.kind == "none":
        return x, y
    p = partners(len(x), x.device)
    other = x.index_select(0, p)
    if d.kind == "mixup":
        x.lerp_(other, 1 - d.lam)  # lam x + (1 - lam) x_partner
    else:
        top, bottom, left, right = d.box
        x[:, :, top:bottom, left:right] = other[:, :, top:bottom, left:right]
    return x, Mixed(y, y.index_select(0, p), d.lam)
