"""The zoo beyond ptrain's own nets: `torchvision:NAME`, any classification model of
torchvision.models.list_models(), and `timm:NAME` (the optional extra `timm`). Each is built for
the run's channels and classes with fresh weights; pretrained ones are loaded into it afterwards
by name and shape (adapt.py), so that a saved run rebuilds the very same module.

Torch-free to import: config validation checks a name's form without importing torchvision.
"""

from __future__ import annotations

import difflib
import re
import warnings

from pytorch_cli.data import catalog
from pytorch_cli.models import dropping
from pytorch_cli.platform.errors import PtrainError, UsageError

NAME_FORM = re.compile(r"(torchvision|timm):[A-Za-z0-9_.\-]+")
TIMM_EXTRA = "pip install 'pytorch-cli[timm]'"
# Their auxiliary heads only add a loss in training: ptrain trains the main head alone.
NO_AUX = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}


def is_hub_name(name: str) -> bool:
    return bool(NAME_FORM.fullmatch(name))


def _unknown(kind: str, name: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(f'{kind}:{c}' for c in close)}?)" if close else ""
    return UsageError(f"--model {kind}:{name}: no such {kind} classification model{hint}; "
                      f"`python -c \"import {kind}; print({kind}."
                      f"{'models.' if kind == 'torchvision' else ''}list_models())\"` lists them")


def torchvision_names() -> list[str]:
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


def import_timm():
    try:
        import timm
    except ImportError:
        raise PtrainError(f"--model timm:...: timm is not installed ({TIMM_EXTRA})") from None
    return timm


def build(name: str, in_channels: int, num_classes: int,
          image_size: int | tuple[int, int] | None = None, timm_kwargs: dict | None = None):
    """`torchvision:resnet18`, `timm:convnext_tiny`...: the model with a head for num_classes
    and a first conv for in_channels (PyTorch's own fresh initialisation). timm models that
    take an img_size (ViT, DeiT, EVA, Swin, LeViT...) are built for the run's image_size, and
    with `timm_kwargs` (dropping.py's rates; torchvision's are set after, on its layers)."""
    kind, arch = name.split(":", 1)
    if kind == "timm":
        try:
            return _timm(arch, in_channels, num_classes, image_size, timm_kwargs or {})
        except TypeError as e:  # a model that takes no drop_path_rate...
            refused = dropping.refused_by_timm(e, name)
            if refused is None:
                raise
            raise refused from None
    return _torchvision(arch, in_channels, num_classes, image_size)


def _timm(arch: str, in_channels: int, num_classes: int,
          image_size: int | tuple[int, int] | None, kwargs: dict):
    timm = import_timm()
    if not timm.is_model(arch):
        raise _unknown("timm", arch, timm.list_models())
    common = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels, **kwargs}
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        try:
            return timm.create_model(arch, img_size=tuple(size), **common)
        except TypeError as e:  # a convnet: its size is whatever it is given
            if "img_size" not in str(e):
                raise
    return timm.create_model(arch, **common)


def _torchvision(arch: str, in_channels: int, num_classes: int,
                 image_size: int | tuple[int, int] | None):
    import torchvision
    from torch import nn
    if arch not in torchvision_names():
        raise _unknown("torchvision", arch, torchvision_names())
    with warnings.catch_warnings():  # googlenet/inception_v3: "default init will change"
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                             **NO_AUX.get(arch, {}), **_sized(arch, image_size))
    if in_channels != 3:
        name, conv = first_conv(model)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode))
    return model


def _sized(arch: str, image_size: int | tuple[int, int] | None) -> dict:
    """torchvision's ViTs are built for one square size (224 unless told), the run's, a
    multiple of their patch (vit_b_16: 16): any other is one line here, not their assert."""
    if not arch.startswith("vit_") or image_size is None:
        return {}
    side = image_size if isinstance(image_size, int) else (
        image_size[0] if image_size[0] == image_size[1] else None)
    patch = int(arch.rsplit("_", 1)[-1])
    if side is None or side % patch:
        got = catalog.size_text(image_size if side is None else (side, side))
        fit = max(patch, round((side or max(image_size)) / patch) * patch)
        raise UsageError(f"--model torchvision:{arch} takes square images whose side is a "
                         f"multiple of {patch} (its patch), not {got}: resize them with "
                         f"--image-size {fit}")
    return {"image_size": side}


def first_conv(model):
    """(name, module) of the first Conv2d, the one that sees the image in every torchvision and
    ptrain classifier; its name is its state-dict prefix: "conv1", "features.0.0"..."""
    from torch import nn
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise PtrainError(f"{type(model).__name__} has no Conv2d to take the images' channels")


def head_names(model, num_classes: int) -> list[str]:
    """The classifier's module names, the class token's first: timm says them (a distilled
    model's are two, DeiT's, LeViT's and PiT's class and distillation heads, which raised a raw
    StopIteration under --freeze backbone: a hostile trial); otherwise the last Linear (or
    squeezenet's 1x1 Conv2d) with num_classes outputs, which every torchvision and ptrain
    classifier ends in."""
    from torch import nn
    if hasattr(model, "get_classifier"):
        heads = model.get_classifier()
        heads = heads if isinstance(heads, tuple) else (heads,)
        names = {id(m): n for n, m in model.named_modules()}
        return [names[id(h)] for h in heads]
    found = [n for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == num_classes)
             or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]
    if not found:
        raise PtrainError(f"{type(model).__name__} has no layer with {num_classes} outputs to "
                          "call its head")
    return [found[-1]]
