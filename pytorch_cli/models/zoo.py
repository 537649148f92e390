"""The model zoo: name -> builder(in_channels, num_classes, image_size) -> nn.Module (logits),
weight inits, and what a saved model needs to be rebuilt.

Torch-free to import: the registries' names are the --model and --init choices that --help and
completion list, so the nets themselves (nets.py) load only when one is built.
"""

from __future__ import annotations

from typing import Callable


def _net(name: str) -> Callable:
    def build(in_channels: int, num_classes: int, image_size: int):
        from pytorch_cli.models import nets
        return getattr(nets, name)(in_channels, num_classes, image_size)
    build.__qualname__ = build.__name__ = name
    return build


MODELS = {
    "lenet": _net("LeNet"),
    "mnist-cnn": _net("MnistCNN"),
    "cifar-net": _net("CifarNet"),
    "fast-cnn": _net("FastCNN"),
    "airbench": _net("Airbench"),
    "resnet18": _net("resnet18"),
}

# name -> (torch.nn.init function, its arguments) for conv and linear weights; biases are zeroed.
# "default" keeps PyTorch's own per-layer initialisation.
INITS: dict[str, tuple[str, dict] | None] = {
    "default": None,
    "xavier": ("xavier_uniform_", {}),
    "kaiming": ("kaiming_normal_", {"nonlinearity": "relu"}),
    "normal": ("normal_", {"mean": 0.0, "std": 0.02}),
    "orthogonal": ("orthogonal_", {}),
}


def _whiten_from(model, images) -> None:
    from pytorch_cli.models import nets
    nets.whiten_from(model, images)


# Models whose initialisation reads the training images: name -> fn(model, normalised images).
# Run once at the start of training; a resumed run loads the result with the other weights.
DATA_INITS = {"airbench": _whiten_from}

# Parameters that train for the first N epochs only: name -> {parameter: N}. airbench's whitening
# bias settles early; frozen after 3 epochs, it stops adding noise to every later layer.
TRAINED_UNTIL = {"airbench": {"whiten.bias": 3}}


def set_trainable_for_epoch(model, name: str, epoch: int) -> bool:
    """Freeze the TRAINED_UNTIL parameters from their epoch on (a function of the epoch alone, so
    a resumed run freezes exactly where the uninterrupted one did); True if anything changed."""
    params, changed = dict(model.named_parameters()), False
    for param, epochs in TRAINED_UNTIL.get(name, {}).items():
        changed |= params[param].requires_grad != (epoch < epochs)
        params[param].requires_grad_(epoch < epochs)
    return changed


def build(name: str, in_channels: int, num_classes: int, image_size: int,
          init: str = "default"):
    from torch import nn
    model = MODELS[name](in_channels, num_classes, image_size)
    if INITS[init] is not None:
        fn, kwargs = INITS[init]
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                getattr(nn.init, fn)(m.weight, **kwargs)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str, spec, classes: list[str]) -> dict:
    """What rebuilds a model and its preprocessing without any flag (saved as "meta");
    `spec` is the dataset's Spec."""
    return {"model": name, "dataset": spec.name, "in_channels": spec.channels,
            "num_classes": spec.num_classes, "image_size": spec.size, "mean": list(spec.mean),
            "std": list(spec.std), "classes": list(classes)}
