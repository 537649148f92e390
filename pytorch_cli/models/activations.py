"""`ptrain activations`: what each stage of a model makes of one image, read through
torchvision's FX feature extraction (create_feature_extractor): the model is traced once and
every node's output is returned. A stage is the last layer at each spatial resolution, from the
first convolution on: the maps a pooling or a stride is about to shrink, as timm's feature_info
names a network's stages. Also Grad-CAM: where in the image a class's evidence lies."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from pytorch_cli.platform.errors import UsageError


@dataclass
class Stage:
    node: str  # the FX node whose output it is (a module's path, or a function's name)
    maps: torch.Tensor  # (channels, height, width), float32 on the CPU


def _first_conv(model: nn.Module, nodes: list[str]) -> int:
    """The first node that is a convolution or holds one (FX keeps some blocks whole as leaf
    nodes: torchvision's efficientnet's first is `features.0`, a Conv2dNormActivation)."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return next((i for i, n in enumerate(nodes)
                 if any(c == n or c.startswith(n + ".") for c in convs)), len(nodes))


@contextlib.contextmanager
def _traced(name: str):
    """A model FX cannot trace (data-dependent control flow) is one line."""
    try:
        yield
    except Exception as e:
        raise UsageError(f"{name} cannot be traced by torch.fx for its feature maps "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None


def node_names(model: nn.Module, name: str) -> list[str]:
    """The FX graph's node names, the input first and the output (the logits) last: one trace,
    so a model FX cannot trace is one line before an evaluation that would need it."""
    from torchvision.models.feature_extraction import get_graph_node_names
    with _traced(name):
        return get_graph_node_names(model)[1]


def _extractor(model: nn.Module, name: str, nodes: list[str] | dict):
    """torchvision's FX feature extractor of those nodes."""
    from torchvision.models.feature_extraction import create_feature_extractor
    with _traced(name):
        return create_feature_extractor(model, return_nodes=nodes)


@torch.no_grad()
def stages(model: nn.Module, x: torch.Tensor, name: str) -> list[Stage]:
    """The stages' feature maps of `model` (eval mode) for one normalised image x (1, C, H, W),
    in the order the forward makes them."""
    nodes = node_names(model, name)
    outputs, found = _extractor(model, name, nodes[1:])(x), []  # every node but the input
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


def grad_cam(model: nn.Module, x: torch.Tensor, targets: list[int], name: str,
             last: str = "") -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017; fastai's plot_top_losses heatmap): for each normalised
    image of x (N, C, H, W) and its target class, the last stage's maps weighted by the mean
    gradient of that class's logit over each map, summed, ReLU'd, upsampled to (H, W) and
    scaled to [0, 1] per image: (N, H, W), where the evidence for the class lies. Float32; the
    input carries the gradient, so frozen layers pass it on too. `last`: the last stage's node
    where stages() has already found it."""
    last = last or stages(model, x[:1], name)[-1].node
    extractor = _extractor(model, name, {last: "maps", node_names(model, name)[-1]: "logits"})
    with torch.enable_grad():
        out = extractor(x.float().requires_grad_(True))
        picked = out["logits"].gather(1, torch.tensor(targets, device=x.device)[:, None])
        grads, = torch.autograd.grad(picked.sum(), out["maps"])
    cam = (grads.mean((2, 3), keepdim=True) * out["maps"]).sum(1, keepdim=True).relu().detach()
    cam = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear")[:, 0]
    top = cam.flatten(1).max(1).values.clamp_min(1e-12)  # (no evidence at all: zeros)
    return (cam / top[:, None, None]).cpu()
