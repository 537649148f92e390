"""Training augmentation, batched on the device: random crops and flips, torchvision's automatic
policies (policies.py) and random erasing. Every random choice is drawn on the host, per image,
into int64 rows (draw), from the batch's own generator; the device only applies them (apply,
erase), so a batch's augmentation does not depend on the device, the --workers or where an
epoch was resumed.

Rows of a batch's draws: 0-2 crop offsets dy, dx and the flip; then resized-crop's box (top,
left, height, width); then the policy's rows (its op indices, magnitude bins, signs); then
erasing's top, left, height, width (0: none).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from pytorch_cli.data import policies

ERASE_SCALE = (0.02, 0.33)  # torchvision RandomErasing's defaults: the share of the area...
ERASE_RATIO = (0.3, 3.3)  # ...and the aspect ratio
ERASE_TRIES = 10  # as torchvision: a box that does not fit is drawn again, then left out
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's aspect ratios, and its...
CROP_TRIES = 10  # ...tries before it falls back to the centre


def pad_for(size: tuple[int, int]) -> int:
    return 4 if min(size) >= 32 else 2  # the CIFAR standard; 2 px for 28x28 digits


@dataclass(frozen=True)
class Augment:
    """What --augment, --crop-pad, --pad-mode, --flip and --random-erasing ask for."""
    kind: str = "none"  # none | crop | crop-flip | a policy of policies.KINDS (after crop-flip)
    pad: int = 0  # crop padding in pixels; 0: the dataset's usual (pad_for)
    pad_mode: str = "zero"  # zero | reflect
    flip: str = "random"  # random: each image, each epoch | alternate: every other epoch
    erasing: float = 0.0  # the probability that an image has a box erased
    scale: float = 0.08  # resized-crop: the smallest share of the area a crop covers

    def padding(self, size: tuple[int, int]) -> int:
        return self.pad or pad_for(size)

    @property
    def policy(self) -> str:
        return self.kind if self.kind in policies.KINDS else ""

    @property
    def flips(self) -> bool:
        return self.kind in ("crop-flip", "resized-crop") or bool(self.policy)

    @property
    def box_rows(self) -> slice:
        return slice(3, 3 + (4 if self.kind == "resized-crop" else 0))

    @property
    def policy_rows(self) -> slice:
        start = self.box_rows.stop
        return slice(start, start + (policies.ROWS if self.policy else 0))

    @property
    def erase_rows(self) -> slice:
        start = self.policy_rows.stop
        return slice(start, start + (4 if self.erasing else 0))

    @property
    def rows(self) -> int:
        return self.erase_rows.stop


def draw_crop_flip(n: int, aug: Augment, size: tuple[int, int], g: torch.Generator
                   ) -> torch.Tensor:
    """Random crop offsets and flips: (3, n) int64 rows dy, dx, flip."""
    pad = aug.padding(size)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = ((torch.rand(n, generator=g) < 0.5) if aug.flips
            else torch.zeros(n, dtype=torch.bool))
    return torch.stack([dy, dx, flip.long()])


def draw_erasing(n: int, p: float, size: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """torchvision RandomErasing's boxes, for n images at once: (4, n) rows top, left, height,
    width (height 0: not erased). Each image is erased with probability p; its box's area is a
    uniform share of the image in ERASE_SCALE and its aspect log-uniform in ERASE_RATIO, drawn
    up to ERASE_TRIES times until it fits inside (torchvision's rule)."""
    h, w = size
    chosen = torch.rand(n, generator=g) < p
    area = h * w * torch.empty(n, ERASE_TRIES).uniform_(*ERASE_SCALE, generator=g)
    aspect = torch.empty(n, ERASE_TRIES).uniform_(*map(math.log, ERASE_RATIO), generator=g).exp()
    eh, ew = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(1, keepdim=True)  # the first box that fits
    keep = (chosen & fits.any(1)).long()
    eh, ew = eh.gather(1, first)[:, 0] * keep, ew.gather(1, first)[:, 0] * keep
    top = (torch.rand(n, generator=g) * (h - eh + 1)).floor().long()
    left = (torch.rand(n, generator=g) * (w - ew + 1)).floor().long()
    return torch.stack([top, left, eh, ew])


def draw_resized_crop(n: int, scale: float, size: tuple[int, int], g: torch.Generator
                      ) -> torch.Tensor:
    """torchvision RandomResizedCrop's boxes, for n images at once: (4, n) rows top, left,
    height, width. The area a uniform share of the image's in [scale, 1], the aspect
    log-uniform in CROP_RATIO, drawn up to CROP_TRIES times until it fits; else (torchvision's
    fallback) the whole image, its aspect clamped to CROP_RATIO, centred."""
    h, w = size
    area = h * w * torch.empty(n, CROP_TRIES).uniform_(scale, 1.0, generator=g)
    aspect = torch.empty(n, CROP_TRIES).uniform_(*map(math.log, CROP_RATIO), generator=g).exp()
    cw, ch = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.long().argmax(1, keepdim=True)
    ch, cw, found = ch.gather(1, first)[:, 0], cw.gather(1, first)[:, 0], fits.any(1)
    low, high = CROP_RATIO
    fh, fw = ((round(w / low), w) if w / h < low else (h, round(h * high)) if w / h > high
              else (h, w))
    ch, cw = torch.where(found, ch, fh), torch.where(found, cw, fw)
    top = (torch.rand(n, generator=g) * (h - ch + 1)).floor().long()
    left = (torch.rand(n, generator=g) * (w - cw + 1)).floor().long()
    top, left = torch.where(found, top, (h - fh) // 2), torch.where(found, left, (w - fw) // 2)
    return torch.stack([top, left, ch, cw])


def draw(n: int, aug: Augment, size: tuple[int, int], seed: int) -> torch.Tensor:
    """One batch's draws, on the host: (aug.rows, n) int64, in the rows above. They come from
    one generator in a fixed order (crops first: a policy or erasing added to a recipe leaves
    its crops as they were)."""
    g = torch.Generator().manual_seed(seed)
    rows = [draw_crop_flip(n, aug, size, g)]
    if aug.kind == "resized-crop":
        rows.append(draw_resized_crop(n, aug.scale, size, g))
    if aug.policy:
        rows.append(policies.draw(aug.policy, n, g))
    if aug.erasing:
        rows.append(draw_erasing(n, aug.erasing, size, g))
    return torch.cat(rows)


# The crop index of every (dy, dx, flip) is tabulated once per image shape when the table is small
# (CIFAR: 162 patterns of 32x32, 1.3 MB): a batch's index is then one row lookup, where building
# it from the draws took 8 small ops (0.074 against 0.015 ms for 128 CIFAR images on a 2-core
# CPU). Larger images (224 px: 65 MB) add a row table and a column table instead (k: 2 pad + 1).
TABLE_BYTES = 8 << 20


@functools.lru_cache(maxsize=8)
def _crop_tables(h: int, w: int, pad: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Flat offsets into the padded (h + 2 pad) x (w + 2 pad) image: rows[dy] (k, h),
    cols[2 dx + flip] (2k, w) and, unless it passes TABLE_BYTES, every sum of the two,
    every[dy 2k + 2 dx + flip] (2k^2, h w)."""
    k, j = 2 * pad + 1, torch.arange(w, device=device)
    starts = torch.arange(k, device=device)[:, None]
    rows = (starts + torch.arange(h, device=device)) * (w + 2 * pad)
    cols = torch.stack([starts + j, starts + (w - 1 - j)], 1).view(2 * k, w)  # flip: mirrored
    if 2 * k * k * h * w * 8 > TABLE_BYTES:
        return rows, cols, None
    return rows, cols, (rows[:, None, :, None] + cols[None, :, None, :]).view(2 * k * k, h * w)


def crop_index(draws: torch.Tensor, h: int, w: int, pad: int) -> torch.Tensor:
    """(n, h w) flat offsets into each padded image of its crop (mirrored when flipped), from
    the draws' rows dy, dx, flip."""
    rows, cols, every = _crop_tables(h, w, pad, draws.device)
    col = draws[1] * 2 + draws[2]
    if every is not None:
        return every.index_select(0, draws[0] * len(cols) + col)
    return (rows.index_select(0, draws[0])[:, :, None]
            + cols.index_select(0, col)[:, None, :]).view(-1, h * w)


def crop_flip(x: torch.Tensor, aug: Augment, draws: torch.Tensor,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Random crop of the padded images (+ horizontal flip), batched, on uint8 images: with zero
    padding the same as torchvision's RandomCrop(size, padding) and RandomHorizontalFlip per
    image. `draws` (on the images' device): rows dy, dx, flip; only device ops here. Crop
    and flip are one gather from the padded images (the flip mirrors the column index): one
    pass, which on a CPU is 7x faster than indexing with four broadcast index tensors. The
    gather writes `memory_format` (channels-last: the model's) itself, which on a 2-core CPU
    cost 0.125 ms for 128 CIFAR images against 0.17 for a gather and then a transpose."""
    n, c, h, w = x.shape
    pad = aug.padding((h, w))
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad),
                                     mode="reflect" if aug.pad_mode == "reflect" else "constant")
    index = crop_index(draws, h, w, pad).view(n, 1, h * w).expand(n, c, h * w)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format)
    torch.gather(padded.view(n, c, -1), 2, index, out=out.flatten(2))  # a view, either layout
    return out


def resized_crop(x: torch.Tensor, aug: Augment, host_draws: torch.Tensor,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Each image's box resized back to the images' size (bilinear, antialiased, rounded to
    uint8), flipped where drawn: torchvision.transforms.v2's resized_crop and hflip per image.
    One resize per image (the boxes differ), its box and flip read from `host_draws` (no device
    sync); on a GPU, a few small kernels an image."""
    h, w = x.shape[2:]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format)
    boxes = torch.cat([host_draws[aug.box_rows], host_draws[2:3]]).T.tolist()
    for i, (top, left, bh, bw, flip) in enumerate(boxes):
        crop = x[i:i + 1, :, top:top + bh, left:left + bw].float()
        resized = torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear",
                                                  align_corners=False, antialias=True)
        out[i:i + 1] = (resized.flip(3) if flip else resized).round_().clamp_(0, 255)
    return out


def apply(x: torch.Tensor, aug: Augment, draws: torch.Tensor, host_draws: torch.Tensor,
          memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The uint8 stages: crop-flip, then the policy. `draws` on the images' device, `host_draws`
    the same rows on the host (a policy groups its images by op there: no device sync). The
    crop comes in `memory_format` where no policy follows (policies work on contiguous images)."""
    if aug.kind == "none":
        return x
    if aug.kind == "resized-crop":
        return resized_crop(x, aug, host_draws, memory_format)
    x = crop_flip(x, aug, draws, torch.contiguous_format if aug.policy else memory_format)
    if aug.policy:
        x = policies.apply(x, aug.policy, host_draws[aug.policy_rows])
    return x


def erase(x: torch.Tensor, aug: Augment, draws: torch.Tensor) -> torch.Tensor:
    """Random erasing, in place on normalised images: each drawn box is set to 0, the dataset's
    mean (torchvision's RandomErasing with value=0 after Normalize). Device ops only."""
    if not aug.erasing:
        return x
    top, left, eh, ew = draws[aug.erase_rows]
    r = torch.arange(x.shape[2], device=x.device)
    c = torch.arange(x.shape[3], device=x.device)
    rows = (r >= top[:, None]) & (r < (top + eh)[:, None])
    cols = (c >= left[:, None]) & (c < (left + ew)[:, None])
    return x.masked_fill_(rows[:, None, :, None] & cols[:, None, None, :], 0.0)
