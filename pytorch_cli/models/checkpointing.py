"""--grad-checkpointing: a residual block keeps only its input for the backward pass and runs
its forward again there (torch.utils.checkpoint, non-reentrant), trading compute for the
activation memory of everything inside it.

ptrain's resnet18 and torchvision's ResNets (resnet*, resnext*, wide_resnet*) have their
blocks checkpointed here; timm's models use their own set_grad_checkpointing. A block's second
forward would count its batch twice in BatchNorm's running statistics: ptrain puts them back
after it, so a checkpointed run trains exactly as a plain one does (tested, bit for bit).
timm's models count twice, as timm itself does.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from pytorch_cli.platform.errors import UsageError


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision's BasicBlock and Bottleneck modules of `model`, in order."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    return [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]


def _norm_buffers(block: nn.Module) -> list[torch.Tensor]:
    return [b for m in block.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
            for b in m.buffers()]


def _checkpointed(self: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """The block's forward, checkpointed while it trains; its first run is the forward, any
    later one the backward's recomputation, which must not move the norm statistics again."""
    if not (self.training and torch.is_grad_enabled()):
        return type(self).forward(self, *inputs)
    runs = []

    def run(*xs: torch.Tensor) -> torch.Tensor:
        kept = [(b, b.clone()) for b in _norm_buffers(self)] if runs else []
        runs.append(True)
        try:
            return type(self).forward(self, *xs)
        finally:  # also when the recomputation stops early, once it has what backward needs
            for buffer, value in kept:
                buffer.copy_(value)
    return checkpoint(run, *inputs, use_reentrant=False)


def enable(model: nn.Module, name: str) -> int:
    """Checkpoint `model`'s residual blocks (or timm's stages); returns how many ptrain patched
    (0 for timm's own). A model with none is one line: nothing would be saved."""
    if hasattr(model, "set_grad_checkpointing"):
        try:
            model.set_grad_checkpointing(True)
            return 0
        except (AssertionError, NotImplementedError, RuntimeError) as e:
            raise UsageError(f"--grad-checkpointing: {name} does not support it ({e})") from None
    blocks = residual_blocks(model)
    if not blocks:
        raise UsageError(f"--grad-checkpointing is for models with residual blocks (resnet18, "
                         f"torchvision:resnet50..., timm's models); {name} has none")
    for block in blocks:  # an instance's method: its state_dict keys stay as they were
        block.forward = types.MethodType(_checkpointed, block)
    return len(blocks)
