"""The model zoo: name -> builder(in_channels, num_classes, image_size) -> nn.Module (logits),
plus `torchvision:NAME` and `timm:NAME` (hub.py); weight inits, and what a saved model needs to
be rebuilt.

Torch-free to import: the registries' names are the --model and --init choices that --help and
completion list, so the nets themselves (nets.py) load only when one is built.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

from pytorch_cli.data import catalog
from pytorch_cli.models import dropping, hub
from pytorch_cli.platform.errors import DamagedFile, UsageError


def _net(name: str) -> Callable:
    def build(in_channels: int, num_classes: int, image_size: tuple[int, int]):
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

MODEL_NAMES = "|".join(MODELS) + "|torchvision:NAME|timm:NAME"


def known(name: str) -> bool:
    """A built-in net, or a hub name of the right form (whether torchvision or timm has it is
    checked when it is built: that needs their import, seconds)."""
    return name in MODELS or hub.is_hub_name(name)


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


def build(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int],
          init: str = "default", dropout: float | None = None, drop_path: float | None = None):
    """The model, freshly initialised; `dropout`, `drop_path`: its rates (None: its own)."""
    from torch import nn
    if hub.is_hub_name(name):  # (timm takes the rates as it builds; torchvision below)
        model = hub.build(name, in_channels, num_classes, image_size,
                          dropping.timm_kwargs(dropout, drop_path))
    else:
        with warnings.catch_warnings():  # images too small for it: a linear layer of no
            warnings.filterwarnings("ignore", "Initializing zero-element")  # inputs (lenet at
            try:  # 12x12): check_input; of a negative number of them (4x1024): here
                model = MODELS[name](in_channels, num_classes, image_size)
            except (RuntimeError, ValueError) as e:
                raise _cannot_take(name, image_size, e) from None
    if not name.startswith("timm:"):  # set on the layers the model has
        dropping.apply(model, name, dropout, drop_path)
    if INITS[init] is not None:
        fn, kwargs = INITS[init]
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                getattr(nn.init, fn)(m.weight, **kwargs)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


def check_input(model, name: str, in_channels: int, image_size: tuple[int, int]
                ) -> tuple[int, int]:
    """One forward of two blank images: a model that cannot take the run's image size (a ViT
    wants 224, VGG at least 32...) is one line before training, not a traceback in it. The same
    forward counts the model's FLOPs per image (summary.py) and finds the fewest images a batch
    it trains on: 2 where a BatchNorm layer sees one value per channel an image (torchvision's
    resnet18 at 28 px: 1x1 maps), which torch refuses to normalise over a batch of one in
    training (a hostile trial: a last batch of one failed the run after a whole epoch); else 1.
    Returns (FLOPs, that least batch)."""
    from torch import nn

    from pytorch_cli.models import summary
    single: list[bool] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: single.append(
                 args[0][0].numel() == args[0].shape[1]))
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        flops = summary.flops_per_image(model, (in_channels, *image_size), n=2)
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        raise _cannot_take(name, image_size, e) from None
    finally:
        for hook in hooks:
            hook.remove()
    return flops, 2 if any(single) else 1


def _cannot_take(name: str, image_size: tuple[int, int], e: Exception) -> UsageError:
    detail = " ".join(str(e).split())[:160]
    return UsageError(f"--model {name} cannot take {catalog.size_text(image_size)} images "
                      f"({detail}); resize them with --image-size N or HxW")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str, spec, classes: list[str], listing: str = "", split: str = "") -> dict:
    """What rebuilds a model and its preprocessing without any flag (saved as "meta");
    `spec` is the dataset's Spec; `listing`: a folder's files its splits were drawn from,
    `split` how (data/splits.py)."""
    return {"model": name, "dataset": spec.name, "in_channels": spec.channels,
            "num_classes": spec.num_classes, "image_size": catalog.saved_size(spec.size),
            "mean": list(spec.mean),
            "std": list(spec.std), "classes": list(classes),
            **({"listing": listing} if listing else {}), **({"split": split} if split else {})}


# What describe() writes, by field; check_meta holds a loaded file to it. image_size: an int
# (square), or [height, width]
META_TYPES = {"model": str, "dataset": str, "in_channels": int, "num_classes": int,
              "image_size": (int, list), "mean": list, "std": list, "classes": list}


def meta_size(meta: dict) -> tuple[int, int]:
    """(height, width) of a saved model's images (its meta checked by check_meta)."""
    return catalog.parse_size(meta["image_size"])


def check_meta(meta, path) -> None:
    """A loaded file's meta, field by field: a crafted or damaged one is one error naming the
    field, never a model built at a size that tries to allocate terabytes."""
    if not isinstance(meta, dict):
        raise DamagedFile(path, f"its meta is a {type(meta).__name__}, not a table")
    for key, kind in META_TYPES.items():
        if key not in meta:
            raise DamagedFile(path, f"its meta has no {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise DamagedFile(path, f"its meta {key!r} is {meta[key]!r}, not a {names}")
    for key, ok, names in (("model", known, MODEL_NAMES),
                           ("dataset", catalog.DATASETS.__contains__, "|".join(catalog.DATASETS))):
        if not ok(meta[key]):
            raise DamagedFile(path, f"its meta {key!r} is {meta[key]!r}, which this ptrain does "
                              f"not know ({names})")
    _check_shape(meta, path)
    for key in ("mean", "std"):
        values = meta[key]
        if len(values) != meta["in_channels"] or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise DamagedFile(path, f"its meta {key!r} is {values!r}, not "
                              f"{meta['in_channels']} finite numbers")
    if not all(v > 0 for v in meta["std"]):
        raise DamagedFile(path, f"its meta 'std' is {meta['std']!r}: a std must be above 0")
    classes, named = meta["classes"], meta["dataset"] == catalog.FOLDER  # its folders' names
    if len(classes) not in ((meta["num_classes"],) if named else (0, meta["num_classes"])) or \
            not all(isinstance(c, str) for c in classes):
        raise DamagedFile(path, f"its meta 'classes' holds {len(classes)} entries for "
                          f"{meta['num_classes']} outputs (names, one per output)")


def _check_shape(meta: dict, path) -> None:
    """A built-in dataset fixes the channels and classes the model was built for (describe()
    copies them), its size is its own or --image-size's; a folder's are within what --channels
    and --image-size take."""
    size = catalog.parse_size(meta["image_size"])
    if size is None:  # 0, [3], [True, 2], [1.5, 2]...
        raise DamagedFile(path, f"its meta 'image_size' is {meta['image_size']!r}, not a size "
                          "(N, or [height, width])")
    if meta["dataset"] == catalog.FOLDER:
        ranges = {"in_channels": (1, 3), "num_classes": (2, 100_000)}
        for key, (low, high) in ranges.items():
            if not low <= meta[key] <= high or (key == "in_channels" and meta[key] == 2):
                raise DamagedFile(path, f"its meta {key!r} is {meta[key]}, outside what a "
                                  f"folder run has ({low} to {high})")
        if not catalog.size_ok(catalog.size_text(size)):
            raise DamagedFile(path, f"its meta 'image_size' is {meta['image_size']}, outside "
                              f"what a folder run has (4 to {catalog.MAX_IMAGE_SIZE})")
        return
    spec = catalog.SPECS[meta["dataset"]]
    if size != spec.size and not catalog.size_ok(catalog.size_text(size)):  # --image-size's
        raise DamagedFile(path, f"its meta 'image_size' is {meta['image_size']}, outside what "
                          f"--image-size takes (4 to {catalog.MAX_IMAGE_SIZE})")
    for key, wanted in (("in_channels", spec.channels), ("num_classes", spec.num_classes)):
        if meta[key] != wanted:
            raise DamagedFile(path, f"its meta {key!r} is {meta[key]}, but {spec.name} has "
                              f"{wanted}")
