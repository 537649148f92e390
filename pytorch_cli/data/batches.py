"""Batches on the device: shuffle order, augmentation and test-time views.

The uint8 dataset lives on the training device (or, with --workers, in host memory); batches are
index slices of it, converted, augmented and normalised there in one batched operation. Shuffle
order and augmentation are pure functions of (seed, epoch, batch index), so a run resumed
mid-epoch sees exactly the batches the uninterrupted run would have seen, on any device and for
any --workers.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Iterator

import torch
from torch import nn

from pytorch_cli.data import augment, mixing
from pytorch_cli.data.augment import Augment
from pytorch_cli.data.catalog import Spec
from pytorch_cli.data.datasets import Split
from pytorch_cli.platform import signals


def mix(*numbers: int) -> int:
    """Combine seed, epoch and batch into one generator seed (splitmix-style, 63 bits)."""
    h = 0x9E3779B97F4A7C15
    for n in numbers:
        h = ((h ^ (n & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def num_batches(n: int, batch_size: int, world: int = 1, least: int = 1) -> int:
    """Batches per epoch (per process: each process takes its part of every global batch of
    batch_size x world rows). A last global batch that cannot give each process `least` rows
    is left out (2 for a model whose BatchNorm cannot train on one image: zoo.check_input)."""
    full, rest = divmod(n, batch_size * world)
    return full + (rest >= world * least)


def left_out(n: int, batch_size: int, world: int = 1, least: int = 1) -> int:
    """Rows of the epoch order no process trains on: a last global batch too small to share."""
    rest = n % (batch_size * world)
    return rest if rest < world * least else 0


def shard_spans(n: int, batch_size: int, rank: int = 0, world: int = 1,
                least: int = 1) -> list[slice]:
    """This process's rows of the epoch order, batch by batch. Global batch b is rows
    [b*G, (b+1)*G) with G = batch_size x world, and rank r takes the r-th of `world` equal parts,
    so N processes at batch B train on exactly the batches one process at batch N*B does. A
    shorter last batch is split as evenly as possible (sizes differ by at most one)."""
    g, spans = batch_size * world, []
    for b in range(num_batches(n, batch_size, world, least)):
        lo, m = b * g, min(g, n - b * g)
        spans.append(slice(lo + rank * m // world, lo + (rank + 1) * m // world))
    return spans


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix(seed, epoch)))


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int, aug: Augment,
               size: tuple[int, int]) -> torch.Tensor:
    """The whole epoch's randomness, drawn on the host once (to be moved in one copy): row 0 the
    shuffled order, then each image's augmentation rows (augment.draw). Each batch's draws come
    from its own (seed, epoch, batch) generator, so they do not depend on where an epoch starts.
    Alternating flips: each image gets one random flip for the run, then is mirrored on every
    other epoch, so it is seen both ways in any two consecutive epochs."""
    plan = torch.zeros(1 + aug.rows, n, dtype=torch.int64)
    plan[0] = epoch_order(n, seed, epoch)
    if aug.kind != "none" or aug.erasing:
        for b in range(num_batches(n, batch_size)):
            lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
            plan[1:, lo:hi] = augment.draw(hi - lo, aug, size, mix(seed, epoch, b))
    if aug.flips and aug.flip == "alternate":
        first = torch.rand(n, generator=torch.Generator().manual_seed(mix(seed, -1))) < 0.5
        plan[3] = (first[plan[0]] ^ bool(epoch % 2)).long()
    return plan


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images at the run's size (--image-size on a built-in dataset: CIFAR's 32x32 at
    224 for an ImageNet model), as a folder's are decoded: bilinear, antialiased when
    shrinking, rounded back to uint8, so every later stage runs as at that size. On the device,
    batch by batch: the dataset stays at its own size in memory. Unchanged at its own size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    out = torch.nn.functional.interpolate(x.float(), size=tuple(size), mode="bilinear",
                                          align_corners=False, antialias=shrink)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class Normalize(nn.Module):
    """Float images in [0, 1] -> (x - mean) / std per channel, as torchvision's Normalize: one
    definition for training batches, exports and predict."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ExportInput(nn.Module):
    """A TorchScript export's first layer (scripted, so the traced file keeps it): an input
    that is not float32 (N, C, H, W) at the run's shape is refused. A tracer records none of
    these checks, and uint8 pixels, 0-255 where 0-1 belongs, gave confident wrong answers (a
    hostile trial); a pt2 file's guards check the shape, never the dtype, and ONNX both."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.channels, self.height, self.width = channels, height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise RuntimeError("ptrain export: the input must be float32 images in [0, 1] "
                               "(divide uint8 pixels by 255)")
        if x.dim() != 4 or x.size(1) != self.channels or x.size(2) != self.height or \
                x.size(3) != self.width:
            raise RuntimeError("ptrain export: the input must be (N, {}, {}, {})".format(
                self.channels, self.height, self.width))
        return x


@functools.lru_cache(maxsize=8)
def _normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> Normalize:
    return Normalize(mean, std).to(device)  # built once per device, not once per batch


@functools.lru_cache(maxsize=8)
def _planes(mean: tuple[float, ...], std: tuple[float, ...], shape: tuple[int, ...],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as whole (1, C, H, W) channels-last planes, the same float32 values: they
    broadcast over the batch alone, so the in-place ops run over contiguous memory."""
    norm = _normalizer(mean, std, device)
    return tuple(t.expand(1, *shape).contiguous(memory_format=torch.channels_last)
                 for t in (norm.mean, norm.std))


def normalize(x: torch.Tensor, spec: Spec,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images -> normalised floats: the same arithmetic as ToTensor() then Normalize(), op
    for op, done in place on one float copy made in `memory_format` (channels-last: the model's,
    so no second copy follows). Channels-last: the uint8 batch is transposed first (a quarter
    of the bytes a float transpose moves) and mean and std come as whole planes; on this CPU
    (AVX-512) a CIFAR batch of 128 took 0.20 ms so, against 0.47 ms transposing in the float
    copy and broadcasting (1, 3, 1, 1) over channels-last memory (the minimum of 5 rounds)."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=memory_format)
    if memory_format == torch.channels_last:
        x = x.contiguous(memory_format=memory_format)
        mean, std = _planes(spec.mean, spec.std, tuple(x.shape[1:]), x.device)
    else:
        norm = _normalizer(spec.mean, spec.std, x.device)
        mean, std = norm.mean, norm.std
    return out.copy_(x).div_(255).sub_(mean).div_(std)


# On a CPU, batches are prepared a few at a time: the same ops on the same images (each op works
# image by image, so the values are the same), but between two preparations the model's steps
# run on warm caches. cifar-net on CIFAR-10 at batch 128, 2-core CPU: 6.63 ms a batch prepared
# one by one, 6.43 four at a time (5.89 stepping on one resident batch). Up to CHUNK_BYTES of
# float images at once; one at a time on an accelerator, whose queue already overlaps them.
CHUNK_BATCHES, CHUNK_BYTES = 4, 8 << 20


def chunk_size(device: torch.device, batch_size: int, shape: tuple[int, ...],
               workers: int = 0) -> int:
    """How many batches train_batches prepares at once."""
    if device.type != "cpu" or workers:
        return 1
    return max(1, min(CHUNK_BATCHES, CHUNK_BYTES // (4 * batch_size * math.prod(shape))))


def _columns(spans: list[slice]) -> slice | torch.Tensor:
    """The epoch plan's columns of consecutive spans: one slice when they touch (a single
    process), else their indices."""
    if all(a.stop == b.start for a, b in zip(spans, spans[1:])):
        return slice(spans[0].start, spans[-1].stop)
    return torch.cat([torch.arange(s.start, s.stop) for s in spans])


def train_batches(split: Split, spec: Spec, batch_size: int, seed: int, epoch: int,
                  aug: Augment, device: torch.device, start: int = 0, workers: int = 0,
                  rank: int = 0, world: int = 1,
                  memory_format: torch.memory_format = torch.contiguous_format,
                  mix_with: mixing.Mix = mixing.Mix(), least: int = 1,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor | mixing.Mixed]]:
    """One epoch of shuffled, augmented, normalised batches on `device`, from batch `start` on;
    with several processes, this rank's part of each global batch (shard_spans). The epoch's
    order and augmentation are drawn per global batch, the same for every rank. The images
    come in `memory_format` (the model's: --channels-last). Each batch goes through the uint8
    stages (crop-flip, a policy), normalisation, erasing, then --mixup/--cutmix (`mix_with`,
    drawn per global batch: its labels come as mixing.Mixed).

    workers=0: `split` already lives on the device; batches are slices of the epoch plan and
    device ops (chunk_size of them at a time), with no host work or copy per step.
    workers>0: `split` stays in host memory; DataLoader worker processes gather the same batches
    into pinned memory and they are copied over asynchronously.
    """
    host_plan = epoch_plan(len(split), batch_size * world, seed, epoch, aug, spec.size)
    plan = host_plan.to(device, non_blocking=True)
    spans = shard_spans(len(split), batch_size, rank, world, least)[start:]
    per = chunk_size(device, batch_size, (spec.channels, *spec.size), workers)
    chunks = [spans[i:i + per] for i in range(0, len(spans), per)]
    columns = [_columns(chunk) for chunk in chunks]
    if workers:
        # Its own generator: the DataLoader draws its worker seed from this one, not from the
        # global generator that dropout uses, so --workers N trains exactly as --workers 0.
        order = host_plan[0]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(split.images, split.labels),
            batch_sampler=[order[s].tolist() for s in spans], num_workers=workers,
            pin_memory=device.type == "cuda", worker_init_fn=functools.partial(
                signals.worker_init, os.getpid()),  # they die with ptrain, stop with it
            generator=torch.Generator().manual_seed(mix(seed, epoch)))
        raw = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True))
               for x, y in loader)
    else:
        # index_select, not split.images[idx]: the same rows, 10x faster on a CPU
        raw = ((split.images.index_select(0, plan[0, c]), split.labels.index_select(0, plan[0, c]))
               for c in columns)
    b = start
    for chunk, c, (x, y) in zip(chunks, columns, raw):
        x = augment.apply(resize(x, spec.size), aug, plan[1:, c], host_plan[1:, c], memory_format)
        x = augment.erase(normalize(x, spec, memory_format), aug, plan[1:, c])
        at = 0
        for s in chunk:  # the chunk's batches, each mixed on its own
            rows = slice(at, at + s.stop - s.start)
            yield mixing.apply(x[rows], y[rows], mixing.draw(mix_with, x.shape[2:],
                                                             mix(seed, epoch, b, 1)))
            at, b = rows.stop, b + 1


def tta_views(x: torch.Tensor, kind: str) -> list[tuple[float, torch.Tensor]]:
    """Test-time augmentation on uint8 images, as (weight, view) pairs whose logits are summed.
    "flip", for a run trained with flips (catalog.tta_views_of): the image and its mirror (1/4
    each), and both of them shifted 1 px diagonally each way with reflected borders (1/8 each):
    the airbench paper's mirror + translate. "shift" (digits, a run trained without flips): the
    image and 1-px shifts up, down, left, right (zero fill); a mirror it never saw would cost
    accuracy (a hostile trial: 95.83% without TTA, 87.50% with mirrored views)."""
    h, w = x.shape[2:]
    if kind == "flip":
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
        return ([(0.25, x), (0.25, x.flip(3))] + [(0.125, v) for v in shifted]
                + [(0.125, v.flip(3)) for v in shifted])
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    shifted = [padded[..., r:r + h, c:c + w] for r, c in ((0, 1), (2, 1), (1, 0), (1, 2))]
    return [(0.2, v) for v in [x] + shifted]


def pinned_eval(storage: torch.device, device: torch.device) -> bool:
    """Whether test/val images kept in host memory (--workers) are pinned: eval_batches copies
    slices of them to a CUDA device, asynchronously only from pinned memory (from pageable
    memory each copy makes the host wait)."""
    return storage.type == "cpu" and device.type == "cuda"


def eval_split(split: Split, storage: torch.device, device: torch.device) -> Split:
    """A test/val split moved to `storage`, where it stays for evaluation on `device`;
    pinned once there when pinned_eval says so."""
    split = split.to(storage)
    if pinned_eval(storage, device):
        return Split(split.images.pin_memory(), split.labels.pin_memory())
    return split


def eval_batch_count(n: int, batch_size: int, world: int = 1) -> int:
    """How many evaluation batches every rank has (ranks' parts differ by an image at most)."""
    return min(-(-((r + 1) * n // world - r * n // world) // batch_size) for r in range(world))


def eval_batches(split: Split, spec: Spec, batch_size: int, device: torch.device, tta: str = "",
                 rank: int = 0, world: int = 1,
                 ) -> Iterator[tuple[list[tuple[float, torch.Tensor]], torch.Tensor]]:
    """In order, no augmentation: ([(weight, normalised images)], labels); with tta (a
    tta_views kind), several weighted views each. With several processes, rank r takes the r-th
    contiguous part."""
    lo, hi = rank * len(split) // world, (rank + 1) * len(split) // world
    for i in range(lo, hi, batch_size):
        x = resize(split.images[i:min(i + batch_size, hi)].to(device, non_blocking=True), spec.size)
        views = tta_views(x, tta) if tta else [(1.0, x)]
        yield ([(weight, normalize(v, spec)) for weight, v in views],
               split.labels[i:min(i + batch_size, hi)].to(device, non_blocking=True))
