"""What a model is made of (`ptrain summary`, and the FLOPs on the train start line): a table of
its leaf layers with their output shapes, parameters and trainable parameters; totals; forward
FLOPs per image, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs, as there); and
the memory of the layers' outputs at a batch size, what the forward keeps for the backward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Layer:
    name: str  # its path in the model: features.0, layer1.0.conv1...
    kind: str  # its class: Conv2d, BatchNorm2d...
    shape: tuple[int, ...] | None  # of one image's output; None: the forward never ran it
    params: int
    trainable: int


@dataclass
class Summary:
    layers: list[Layer]
    params: int  # every parameter, also those of no leaf layer (a ViT's class token...)
    trainable: int
    flops: int  # forward FLOPs per image
    activation_bytes: int  # the leaf layers' outputs (each call's) for a batch of batch_size
    batch_size: int
    input: tuple[int, int, int]  # (channels, height, width)


def flops_per_image(model: nn.Module, image: tuple[int, int, int], n: int = 1) -> int:
    """Forward FLOPs per image of a forward of n blank images in eval mode (dropout off,
    BatchNorm's running statistics: no RNG draw, no statistics moved); the mode is restored."""
    from torch.utils.flop_counter import FlopCounterMode
    was = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(n, *image, device=next(model.parameters()).device))
    finally:
        model.train(was)
    return counter.get_total_flops() // n


def summarize(model: nn.Module, image: tuple[int, int, int], batch_size: int) -> Summary:
    """The table and totals of `model` for images of shape (channels, height, width)."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(m.children())]
    outputs: dict[str, torch.Tensor] = {}  # each layer's first output: its shape
    held = [0]  # bytes of every call's output: a module called twice (a ResNet block's one
    # ReLU) keeps two (a hostile trial: torchvision's resnet18 was counted 10% short). An
    # output that is its input (an identity shortcut, an in-place ReLU) is no new memory; a
    # dropout's is, in training, though this eval-mode probe passes its input through

    def keep(name):
        def hook(module, args, out):
            outputs.setdefault(name, out)
            aliased = any(out is a for a in args) and not isinstance(
                module, nn.modules.dropout._DropoutNd)
            if isinstance(out, torch.Tensor) and not aliased:
                held[0] += out.numel() * out.element_size()
        return hook
    hooks = [m.register_forward_hook(keep(n)) for n, m in leaves]
    try:
        flops = flops_per_image(model, image)  # the one forward: counted and hooked
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, module in leaves:
        own = list(module.parameters(recurse=False))
        out = outputs.get(name)
        layers.append(Layer(name, type(module).__name__,
                            tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None,
                            sum(p.numel() for p in own),
                            sum(p.numel() for p in own if p.requires_grad)))
    return Summary(layers, sum(p.numel() for p in model.parameters()),
                   sum(p.numel() for p in model.parameters() if p.requires_grad),
                   flops, held[0] * batch_size, batch_size, image)
