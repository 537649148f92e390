"""The rules that tie two settings together (each setting's own rule is in its declaration):
(test on the config, the one-line error naming both flags). config.validate applies them."""

from __future__ import annotations

from pytorch_cli.data import catalog
from pytorch_cli.models import hub

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# a setting of a feature that is off, where it would be ignored silently: refused in a new run's
# settings (as --mix-prob without mixing is), put back to its default in a saved one's (older
# versions took it), so that old runs still load
UNUSED = (
    ("gamma", lambda c: c.scheduler in ("step", "plateau"),
     "--gamma is the LR factor of --scheduler step and plateau; --scheduler {c.scheduler} has "
     "none"),
    ("plateau_patience", lambda c: c.scheduler == "plateau",
     "--plateau-patience is --scheduler plateau's; --scheduler {c.scheduler} has none"),
    ("final_lr", lambda c: c.scheduler in ("cosine", "linear"),
     "--final-lr is where --scheduler cosine and linear end; --scheduler {c.scheduler} has "
     "none"),
    ("warmup_start", lambda c: c.warmup_epochs and c.scheduler != "onecycle",
     "--warmup-start is where --warmup-epochs' linear warmup starts: it needs --warmup-epochs "
     "and a --scheduler other than onecycle (whose warmup starts at --lr/25, torch's "
     "OneCycleLR)"),
    ("lookahead_decay", lambda c: c.lookahead_every, "--lookahead-decay is --lookahead-every's: "
     "pass that too"),
    ("momentum", lambda c: c.optimizer in ("sgd", "rmsprop"),
     "--momentum is --optimizer sgd's and rmsprop's; --optimizer {c.optimizer} has none"),
    ("min_delta", lambda c: c.patience or c.scheduler == "plateau",
     "--min-delta is the gain --patience and --scheduler plateau count: pass one of them"),
    ("crop_pad", lambda c: "crop_pad" in _augment_uses(c), "--crop-pad is the padding of "
     "--augment's crops; --augment {c.augment} pads nothing on {c.dataset}"),
    ("pad_mode", lambda c: "pad_mode" in _augment_uses(c), "--pad-mode is how --augment's crops "
     "are padded; --augment {c.augment} pads nothing on {c.dataset}"),
    ("crop_scale", lambda c: "crop_scale" in _augment_uses(c), "--crop-scale is the smallest "
     "crop of --augment resized-crop; --augment {c.augment} is not it on {c.dataset}"),
    ("flip", lambda c: "flip" in _augment_uses(c), "--flip is how --augment crop-flip (and the "
     "policies after it) flips; --augment {c.augment} flips nothing on {c.dataset}"),
    ("data_dir", lambda c: c.dataset != "fake", "--data-dir: --dataset fake is generated and "
     "reads no folder; drop --data-dir, or name the dataset it holds (mnist, folder...)"),
    ("test_split", lambda c: c.dataset == catalog.FOLDER, "--test-split is the share of a "
     "folder's images held out for testing; {c.dataset} has its own test set"),
    ("compile_mode", lambda c: c.compile, "--compile-mode is --compile's: pass that too"),
    ("compile_backend", lambda c: c.compile, "--compile-backend is --compile's: pass that too"),
    ("backbone_lr_scale", lambda c: c.freeze != "backbone" or c.unfreeze_at, "--backbone-lr-"
     "scale is the LR of the layers --freeze backbone keeps frozen all run: pass --unfreeze-at"),
    ("layer_decay", lambda c: c.freeze != "backbone" or c.unfreeze_at, "--layer-decay scales "
     "the LR of the layers --freeze backbone keeps frozen all run: pass --unfreeze-at"),
    ("save_interval", lambda c: c.save_model, "--save-interval is how often last.pt is written "
     "mid-epoch; --no-save-model writes none"),
    ("bias_decay", lambda c: c.weight_decay, "--bias-decay applies --weight-decay to biases and "
     "norm layers: pass a --weight-decay above 0"),
)
CROSS_RULES = (
    (lambda c: c.dataset == catalog.FOLDER or not c.channels,
     "--channels is for --dataset folder; {c.dataset}'s images have their own"),
    (lambda c: c.dataset == catalog.FOLDER or c.resize == catalog.SQUASH,
     "--resize is how a folder's images meet --image-size: it needs --dataset folder"),
    (lambda c: c.resize == catalog.SQUASH or catalog.parse_size(c.image_size) is not None,
     "--resize is how images of other shapes meet --image-size; without it they all keep "
     "their one size, so --resize {c.resize} would do nothing"),
    (lambda c: c.dataset == catalog.FOLDER or not c.labels,
     "--labels names a folder's classes in a CSV file: it needs --dataset folder"),
    (lambda c: not c.layer_decay or c.model.startswith("timm:"),
     "--layer-decay needs a timm:NAME model (its group_matcher says which block each parameter "
     "is in); a {c.model} has --backbone-lr-scale"),
    (lambda c: not c.weights or hub.is_hub_name(c.model),
     "--weights is for torchvision:NAME and timm:NAME models; a {c.model} starts from a run's "
     "weights with --init-from"),
    (lambda c: not (c.weights and c.init_from),
     "--weights and --init-from both give the starting weights: pass one of them"),
    (lambda c: not c.unfreeze_at or c.freeze == "backbone",
     "--unfreeze-at releases a frozen backbone: it needs --freeze backbone"),
    (lambda c: c.unfreeze_at < c.epochs,  # (a resume only extends --epochs: saved runs pass)
     "--unfreeze-at {c.unfreeze_at} is past the run's end (--epochs {c.epochs:g}): the backbone "
     "would never train"),
    (lambda c: 0 <= c.warmup_epochs < c.epochs,
     "--warmup-epochs must be 0 or more and less than --epochs, got {c.warmup_epochs}"),
    # ReduceLROnPlateau sets the rate itself, from the epochs' accuracy: no step schedule on top
    (lambda c: c.scheduler != "plateau" or not c.warmup_epochs,
     "--scheduler plateau has no warmup (it lowers the LR when val accuracy stalls): drop "
     "--warmup-epochs, or warm up with --scheduler linear or cosine"),
    (lambda c: c.mix_prob == 1.0 or c.mixup or c.cutmix,
     "--mix-prob is the share of batches --mixup and --cutmix mix: pass one of them"),
    (lambda c: c.mix_prob > 0 or not (c.mixup or c.cutmix),
     "--mix-prob 0 mixes no batch: pass a share above 0, or leave --mixup and --cutmix out"),
    (lambda c: not (c.ema and c.lookahead_every),
     "--ema and --lookahead-every both keep an average of the weights: pass one of them"),
    (lambda c: not c.nesterov or (c.optimizer == "sgd" and c.momentum > 0),
     "--nesterov needs --optimizer sgd and --momentum greater than 0"),
    # a CUDA graph's outputs live in memory its next replay reuses: the gradient one micro-batch
    # left in .grad would be freed or overwritten by the next (pytorch#169545, #96693)
    (lambda c: not (c.compile and c.grad_accum > 1 and c.compile_mode in CUDA_GRAPH_MODES),
     "--compile-mode {c.compile_mode} (CUDA graphs) cannot accumulate gradients: with "
     "--grad-accum {c.grad_accum} use --compile-mode default (or --grad-accum 1)"),
    (lambda c: c.compile_mode == "default" or c.compile_backend == "inductor",
     "--compile-mode {c.compile_mode} is inductor's: with --compile-backend "
     "{c.compile_backend} use --compile-mode default"),
)


def unused(c, origin: dict[str, str] | None = None, typed=frozenset()) -> str:
    """The first UNUSED setting c sets with its feature off, said (and where it came from, a
    config file's value being one the user did not type); "" if none. A `typed` flag counts at
    its default too (a hostile trial's `--optimizer adam --momentum 0.5` passed, 0.9 did not)."""
    for name, used, says in UNUSED:
        if not (used(c) or (_default(c, name) and name not in typed)):
            where = (origin or {}).get(name)
            return says.format(c=c) + (f" (from {where})" if where else "")
    return ""


def _augment_uses(c) -> tuple[str, ...]:
    """The crop settings c's --augment uses; auto is a built-in dataset's own (a folder's
    depends on its images: all of them here, job.setup checks once it is read)."""
    spec = catalog.SPECS.get(c.dataset)
    kind = spec.augment if c.augment == "auto" and spec is not None else c.augment
    return catalog.augment_uses("crop-flip" if kind == "auto" else kind)


def _default(c, name: str) -> bool:
    return getattr(c, name) == getattr(type(c)(), name)  # (the declaration's default)


def unused_reset(c):
    """A saved config with UNUSED's settings of features that are off put back to defaults (and
    a --mix-prob 0 run's mixing, which mixed no batch, off)."""
    import dataclasses
    fresh = type(c)()
    if c.mix_prob == 0:
        c = dataclasses.replace(c, mixup=fresh.mixup, cutmix=fresh.cutmix, mix_prob=fresh.mix_prob)
    return dataclasses.replace(c, **{name: getattr(fresh, name) for name, used, _ in UNUSED
                                     if not used(c)})
