"""--dropout and --drop-path: the rates of a model's dropout and stochastic-depth layers, the two
regularisers timm's fine-tuning recipes set (its train.py's --drop and --drop-path).

Unset (None), a model keeps its own: the examples' 0.25/0.5 in mnist-cnn, torchvision's 0.2
stochastic depth in efficientnet_b0, timm's 0. A rate means what the library's own argument
means (timm's drop_path_rate, torchvision's stochastic_depth_prob). timm's models take the
rates as they are built; the others get them set on the layers they have, which hold no
weights, so a saved model loads either way. A model without such layers is one line, not a
flag that silently does nothing.
"""

from __future__ import annotations

from pytorch_cli.platform.errors import UsageError

TIMM_KWARGS = {"dropout": "drop_rate", "drop_path": "drop_path_rate"}
HAVE_DROP_PATH = ("timm:NAME models (most), torchvision:efficientnet*, convnext*, swin*, "
                  "maxvit_t")


def timm_kwargs(dropout: float | None, drop_path: float | None) -> dict[str, float]:
    """create_model's keywords for the rates given."""
    given = {"dropout": dropout, "drop_path": drop_path}
    return {TIMM_KWARGS[k]: v for k, v in given.items() if v is not None}


def refused_by_timm(error: TypeError, name: str) -> UsageError | None:
    """timm's TypeError for a keyword the model does not take, as the flag's one line."""
    for setting, keyword in TIMM_KWARGS.items():
        if f"'{keyword}'" in str(error):
            return UsageError(f"--{setting.replace('_', '-')}: --model {name} does not take "
                              f"{keyword}")
    return None


def apply(model, name: str, dropout: float | None, drop_path: float | None) -> None:
    """Set the rates on a model not built by timm (ptrain's nets, torchvision's)."""
    if dropout is not None:
        _set_dropout(model, name, dropout)
    if drop_path is not None:
        _set_drop_path(model, name, drop_path)


def _set_dropout(model, name: str, rate: float) -> None:
    """Every dropout layer at this rate (torchvision's ViT and Swin have theirs in the blocks,
    the convnets before the classifier; lenet its Dropout2d, mnist-cnn both of the example's)."""
    from torch import nn
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not layers:
        raise UsageError(f"--dropout: --model {name} has no dropout layer to set (lenet, "
                         "mnist-cnn and most torchvision and timm models have)")
    for layer in layers:
        layer.p = rate


def _set_drop_path(model, name: str, rate: float) -> None:
    """torchvision's StochasticDepth layers, set as its `stochastic_depth_prob=rate` would set
    them: each block's rate on the model's own schedule, scaled from the rate it was built with
    (convnext, swin and maxvit end at that rate; efficientnet's n blocks at (n-1)/n of it)."""
    # by name: an isinstance would import torchvision (seconds) for ptrain's own nets too
    layers = [m for m in model.modules() if type(m).__name__ == "StochasticDepth"]
    if not layers:
        raise UsageError(f"--drop-path: --model {name} has no stochastic depth (residual "
                         f"blocks that can be dropped); these have: {HAVE_DROP_PATH}")
    built = max(layer.p for layer in layers)
    if type(model).__name__ == "EfficientNet" and len(layers) > 1:
        built *= len(layers) / (len(layers) - 1)
    for i, layer in enumerate(layers):
        layer.p = rate * (layer.p / built if built else i / max(len(layers) - 1, 1))
