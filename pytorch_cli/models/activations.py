"""`ptrain activations`: what each stage of a model makes of one image, read through
torchvision's FX feature extraction (create_feature_extractor): the model is traced once and
every node's output is returned. A stage is the last layer at each spatial resolution, from the
first convolution on: the maps a pooling or a stride is about to shrink, as timm's feature_info
names a network's stages."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pytorch_cli.platform.errors import UsageError


@dataclass
class Stage:
    node: str  # the FX node whose output it is (a module's path, or a function's name)
    maps: torch.Tensor  # (channels, height, width), float32 on the CPU


def _first_conv(model: nn.Module, nodes: list[str]) -> int:
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return next((i for i, n in enumerate(nodes) if n in convs), len(nodes))


@torch.no_grad()
def stages(model: nn.Module, x: torch.Tensor, name: str) -> list[Stage]:
    """The stages' feature maps of `model` (eval mode) for one normalised image x (1, C, H, W),
    in the order the forward makes them."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    try:
        _, nodes = get_graph_node_names(model)
        extractor = create_feature_extractor(model, return_nodes=nodes[1:])  # all but the input
    except Exception as e:  # FX cannot trace data-dependent control flow: say so, in one line
        raise UsageError(f"{name} cannot be traced by torch.fx for its feature maps "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None
    outputs, found = extractor(x), []
    for n, v in list(outputs.items())[_first_conv(model, nodes[1:]):]:
        if torch.is_tensor(v) and v.dim() != 4:  # flattened: a head, or a ViT's tokens, whose
            break  # attention then reshapes into 4-d tensors that are no maps
        if torch.is_tensor(v) and v.is_floating_point() and v.shape[2] * v.shape[3] > 1:
            found.append((n, v))  # (a global pool's 1x1 "maps" show nothing)
    kept = [Stage(n, v[0].float().cpu()) for i, (n, v) in enumerate(found)
            if i + 1 == len(found) or found[i + 1][1].shape[2:] != v.shape[2:]]
    if not kept:
        raise UsageError(f"{name} has no convolutional feature maps to draw")
    return kept
