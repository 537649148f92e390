"""Starting a model from weights trained elsewhere (--weights, --init-from): tensors that match in
name and shape load, a first conv of other channels is converted, the rest stays new (a head
for other classes). And what --freeze backbone holds still: every parameter outside the head."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from pytorch_cli.models import hub
from pytorch_cli.platform.errors import PtrainError, plural


@dataclass
class Transfer:
    """What load_into did, for the start line. Tensors are counted without BatchNorm's
    num_batches_tracked (a step count, not a weight), on both sides of "N of M"."""
    source: str
    loaded: list[str] = field(default_factory=list)  # the model's tensors that came from source
    new: list[str] = field(default_factory=list)  # ...that did not (kept as built)
    unused: int = 0  # the source's tensors that fit nothing (its old head, aux heads...)
    converted: str = ""  # the first conv, when its channels changed
    resampled: str = ""  # a ViT's position embedding, when its patch grid changed
    normalised: str = ""  # the mean and std that came with the weights, if any
    matched: str = ""  # the head's rows, moved to the run's classes by name
    backbone_new: list[str] = field(default_factory=list)  # new outside the head

    def describe(self) -> str:
        new = (f"; new: {', '.join(self.new[:4])}{', ...' if len(self.new) > 4 else ''}"
               if self.new else "")
        total = len(self.loaded) + len(self.new)
        notes = [f"{len(self.loaded)} of {plural(total, 'tensor')} from {self.source}{new}"]
        notes += [note for note in (self.matched, self.converted, self.resampled) if note]
        notes += [f"{self.unused} of its tensors unused"] if self.unused else []
        notes += [f"its normalisation: {self.normalised}"] if self.normalised else []
        return "; ".join(notes)


def _convert_first(value: torch.Tensor, want: torch.Size) -> tuple[torch.Tensor, str] | None:
    """A first conv's kernel for other input channels: RGB -> gray sums the colour kernels (a
    gray image is R = G = B, so the response is unchanged); gray -> RGB spreads it over the
    three, divided by 3 (same reasoning)."""
    if value.ndim != 4 or value.shape[0] != want[0] or value.shape[2:] != want[2:]:
        return None
    if value.shape[1] == 3 and want[1] == 1:
        return value.sum(1, keepdim=True), "first conv summed over RGB for gray images"
    if value.shape[1] == 1 and want[1] == 3:
        return value.repeat(1, 3, 1, 1) / 3, "first conv spread over RGB for colour images"
    return None


def _resample_positions(model: nn.Module, name: str, value: torch.Tensor,
                        want: torch.Size) -> tuple[torch.Tensor, str] | None:
    """A ViT's absolute position embedding for another patch grid (weights from 224 px, a run
    at 64 or 384): bicubic over the grid, the class (and register) tokens kept, as timm and
    torchvision do when they load pretrained weights at another image size."""
    if value.ndim != 3 or len(want) != 3 or value.shape[-1] != want[-1]:
        return None
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)  # timm's ViTs
    if name.endswith("pos_embed") and grid is not None:
        from timm.layers import resample_abs_pos_embed  # a timm model's: timm is there
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        resample = functools.partial(resample_abs_pos_embed, new_size=list(grid),
                                     num_prefix_tokens=prefix, verbose=False)
    elif name == "encoder.pos_embedding" and hasattr(model, "patch_size"):  # torchvision's
        from torchvision.models.vision_transformer import interpolate_embeddings
        prefix, side = 1, model.image_size // model.patch_size
        grid = (side, side)

        def resample(v: torch.Tensor) -> torch.Tensor:
            return interpolate_embeddings(model.image_size, model.patch_size, {name: v})[name]
    else:
        return None
    old = round((value.shape[1] - prefix) ** 0.5)
    if old * old != value.shape[1] - prefix:  # not a square grid: not one we can read
        return None
    out = resample(value)
    return (out, f"position embedding resampled from {old}x{old} to {grid[0]}x{grid[1]} "
                 "patches") if out.shape == want else None


def _head_rows(value: torch.Tensor, mine: torch.Tensor, theirs: list[str],
               ours: list[str]) -> torch.Tensor | None:
    """A head tensor of the source (a row per class of `theirs`) as the run's (a row per
    class of `ours`): each class's row moved to where the run numbers that name, the run's new
    row where the source had no such class; None where no class is the source's."""
    if mine.shape != (len(ours), *value.shape[1:]) or not set(ours) & set(theirs):
        return None
    out = mine.clone()
    for row, name in enumerate(ours):
        if name in theirs:
            out[row] = value[theirs.index(name)]
    return out


def _matched(theirs: list[str], ours: list[str]) -> str:
    """The start line's note on a head whose classes were matched by name."""
    if theirs == ours:
        return ""
    mine = [c for c in ours if c in theirs]
    missing = [c for c in ours if c not in theirs]
    note = (f"head rows of {len(mine)} of the run's {plural(len(ours), 'class', 'classes')} "
            "taken by name")
    if missing:
        note += f" (new: {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})"
    return note + (", in another order" if mine != [c for c in theirs if c in ours] else "")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str,
              classes: list[str], theirs: list[str] | None = None, made_for: str = ""
              ) -> Transfer:
    """Load the tensors of `state` that fit `model` by name and shape; raise when none does.
    Where the source's classes are known (`theirs`: a ptrain run's), the head's rows go to the
    run's `classes` by name, never by position (a hostile trial: a run's classes 1, 2, 10 read
    from a CSV became 1, 10, 2 as folders, and its head called 10s 2). `made_for`: the
    model a ptrain run's weights were trained as, named where none fits."""
    own = model.state_dict()
    first = hub.first_conv(model)[0] + ".weight"
    heads = _head_prefixes(model, len(classes))
    take, report = {}, Transfer(source)
    for name, value in state.items():
        if name not in own:
            report.unused += 1
        elif theirs and name.startswith(heads) and value.shape[:1] == (len(theirs),):
            moved = _head_rows(value, own[name], theirs, classes)
            if moved is None:
                report.unused += 1
            else:
                take[name], report.matched = moved, _matched(theirs, classes)
        elif value.shape == own[name].shape:
            take[name] = value
        elif name == first and (converted := _convert_first(value, own[name].shape)):
            take[name], report.converted = converted
        elif resampled := _resample_positions(model, name, value, own[name].shape):
            take[name], report.resampled = resampled
        else:
            report.unused += 1
    counted = [k for k in own if not k.endswith("num_batches_tracked")]
    if not any(k in take for k in counted):
        whose = (f"they are a {made_for}'s, this is a {type(model).__name__}" if made_for else
                 f"is it {type(model).__name__}'s?")
        raise PtrainError(f"{source}: none of its {plural(len(state), 'tensor')} fits this "
                          f"model by name and shape ({whose})")
    model.load_state_dict(take, strict=False)
    report.loaded = [k for k in counted if k in take]
    report.new = [k for k in counted if k not in take]
    report.backbone_new = [k for k in report.new if not k.startswith(heads)]
    if theirs and not report.matched and theirs != classes:  # the head fits no class
        report.matched = f"head: none of the run's classes is one of its {len(theirs)}"
    return report


def _head_prefixes(model: nn.Module, num_classes: int) -> tuple[str, ...]:
    """Each head's name and a dot (a distilled model has two heads): the start of every name
    inside one."""
    return tuple(name + "." for name in hub.head_names(model, num_classes))


def backbone(model: nn.Module, num_classes: int) -> set[str]:
    """Names of the parameters outside the head: what --freeze backbone holds still."""
    heads = _head_prefixes(model, num_classes)
    return {n for n, _ in model.named_parameters() if not n.startswith(heads)}


def frozen_norms(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The BatchNorm layers of the backbone: frozen, they stay in eval mode, so that their
    running statistics are held still too (as the weights are), not re-estimated from the new
    images."""
    heads = _head_prefixes(model, num_classes)
    return [m for name, m in model.named_modules()  # (LeViT's heads hold a BatchNorm each)
            if isinstance(m, nn.modules.batchnorm._NormBase) and not name.startswith(heads)]


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
