"""Every setting of a training run, declared once (declare.py says how): defaults here,
overridden by a TOML file, overridden by flags. Choices come from the registries themselves,
which are torch-free to import, so --help and completion list them at once. The resolved config
is written to every run as `config.toml`; `--config` with that file re-runs the experiment."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import limits as L
from pytorch_cli.settings.declare import check, coerce, field_types, renamed, setting
from pytorch_cli.settings.rules import CROSS_RULES, unused, unused_reset
from pytorch_cli.settings.tomlfile import read_toml
from pytorch_cli.training import optim

DEVICES = r"auto|cpu|mps|cuda(:\d+)?"
DEVICE_HELP = "auto|cpu|cuda|cuda:N|mps."


@dataclass
class TrainConfig:
    # data and model
    dataset: str = setting("mnist", "folder: your own images, a subfolder per class, in "
                           "--data-dir.", choices=catalog.DATASETS)
    data_dir: str = setting(
        "", "Folder with the dataset (torchvision layout or the original files). Default: "
        "$PTRAIN_DATA_DIR, then ./data.", rule=L.PATH,
        resume_help="Read the run's data from here now (moved, or a resume from elsewhere).")
    channels: int = setting(
        0, "--dataset folder: 1 (grayscale) or 3 (RGB); 0: 1 if every image is grayscale.",
        rule=(lambda v: v in (0, 1, 3), "0 (auto), 1 or 3"))
    image_size: str | int = setting(
        0, "Images are resized to NxN, or HxW (height x width; bilinear, the aspect ratio not "
        "kept): a folder's as decoded, a built-in dataset's batch by batch (CIFAR at 224 for "
        "an ImageNet model); 0: their own size (a folder's, when all share one).",
        metavar="N|HxW",
        rule=(catalog.size_ok, f"0 (auto), N or HxW, each side 4 to {catalog.MAX_IMAGE_SIZE}"))
    resize: str = setting(
        catalog.SQUASH, "--dataset folder: how an image of another shape than --image-size "
        "meets it: squash (stretched), crop (its shorter side to the size, the centre kept: "
        "torchvision's Resize + CenterCrop), pad (its longer side to the size, black bars).",
        choices=catalog.RESIZE_MODES)
    test_split: float = setting(
        0.2, "--dataset folder without train/ and test/: the seeded, stratified fraction of "
        "each class held out for testing.", rule=(lambda v: 0 < v < 1, "in (0, 1)"))
    labels: str = setting(
        "", "--dataset folder: a CSV file, a header row then one image,class row per image "
        "(paths relative to --data-dir; the extension may be left out), instead of class "
        "subfolders.", metavar="FILE.csv",
        resume_help="Read the run's CSV of classes from here now (moved with --data-dir's).")
    download: bool = setting(True, "Download the dataset with torchvision if it is not found.")
    model: str = setting(
        "lenet", f"{zoo.MODEL_NAMES}: ptrain's nets, any classification model of "
        "torchvision.models.list_models(), or timm's (pip install 'pytorch-cli[timm]').",
        rule=(zoo.known, f"one of {zoo.MODEL_NAMES}"), metavar="NAME", suggest=tuple(zoo.MODELS))
    init: str = setting("default", "Weight init.", choices=tuple(zoo.INITS))
    weights: str = setting(
        "", "torchvision:/timm: models: pretrained weights, DEFAULT, one of the model's weight "
        "names (IMAGENET1K_V2...) or a file (a state dict or a ptrain model.pth).",
        rule=L.PATH, metavar="WEIGHTS")
    init_from: str = setting(
        "", "Start from a run's weights (its directory or a model.pth): tensors that match in "
        "name and shape load, the rest (a head for other classes) is new.", rule=L.PATH,
        metavar="RUN")
    freeze: str = setting("none", "backbone: train only the head; frozen BatchNorm layers stay "
                          "in eval mode.", choices=("none", "backbone"))
    unfreeze_at: int = setting(
        0, "With --freeze backbone: train everything after this many epochs (0 = never).",
        metavar="EPOCHS", rule=L.NOT_NEGATIVE)
    backbone_lr_scale: float = setting(
        1.0, "LR multiplier for every layer but the head (pretrained ones: 0.1 is usual).",
        rule=L.POSITIVE, limit=(L.MAX_FACTOR, "recipes use 0.01 to 1"))
    layer_decay: float = setting(
        0.0, "Layer-wise LR decay (timm models): each block's LR is D x the next one's, the "
        "head's --lr (BEiT's fine-tuning; 0.65-0.9 usual). 0: off.", metavar="D", rule=L.UNIT_OPEN)
    dropout: float | None = setting(None, "Rate of the model's dropout layers (timm: drop_rate) "
                                    "[default: the model's own].", metavar="P", rule=L.UNIT_OPEN)
    drop_path: float | None = setting(
        None, "Stochastic depth: a residual block's skip rate, RATE at the last (timm; "
        "torchvision's efficientnet, convnext, swin, maxvit) [default: the model's own].",
        metavar="RATE", rule=L.UNIT_OPEN)
    class_weights: str = setting(
        "none", "auto: weight the training loss by inverse class frequency (imbalanced "
        "classes).", choices=("none", "auto"))
    # optimisation (defaults are the pytorch/examples MNIST script's)
    batch_size: int = setting(64, "Training batch size.", rule=L.AT_LEAST_1)
    test_batch_size: int = setting(1000, "Evaluation batch size.", rule=L.AT_LEAST_1,
                                   resume_help="Evaluate in batches of N from now on (a smaller "
                                   "one needs less memory).")
    epochs: float = setting(10, "Number of epochs (may be fractional: 9.9).", rule=L.POSITIVE,
                            limit=(L.MAX_EPOCHS, "beyond any schedule"),
                            resume_help="Train to this many epochs in all (extends the run).")
    lr: float = setting(0.01, "Learning rate (peak rate for onecycle).", rule=L.POSITIVE,
                        limit=(L.MAX_LR, "far above any recipe"))
    momentum: float = setting(0.5, "SGD/RMSprop momentum.", rule=L.UNIT_OPEN)
    nesterov: bool = setting(False, "Nesterov momentum (SGD).")
    optimizer: str = setting("sgd", choices=tuple(optim.OPTIMIZERS))
    weight_decay: float = setting(0.0, "Weight decay (never on biases or norm weights).",
                                  rule=L.NOT_NEGATIVE,
                                  limit=(L.MAX_DECAY, "AdamW's are 0.01-0.3"))
    scheduler: str = setting("none", "LR schedule.", choices=tuple(optim.SCHEDULES))
    gamma: float = setting(0.7, "LR factor per epoch for --scheduler step; at each "
                           "reduction for plateau.", rule=(lambda v: 0 < v <= 1, "in (0, 1]"))
    plateau_patience: int = setting(
        2, "--scheduler plateau: the LR is cut once more than N epochs in a row bring no "
        "gain over --min-delta in val accuracy (test without --val-split).",
        rule=L.NOT_NEGATIVE, metavar="N",
        limit=(L.MAX_EPOCHS, "beyond any schedule"))
    warmup_epochs: float = setting(0.0, "Linear LR warmup, in epochs.")  # its rule: rules.py
    warmup_start: float = setting(0.0, "LR factor the warmup starts from.", rule=L.UNIT)
    final_lr: float = setting(0.0, "LR factor cosine and linear schedules end at.", rule=L.UNIT)
    norm_lr_scale: float = setting(
        1.0, "LR multiplier for norm layers' scales and shifts (BatchNorm...).",
        rule=(lambda v: v >= 1 / L.MAX_FACTOR,
              f"at least {1 / L.MAX_FACTOR:g} (their weight decay is divided by it)"),
        limit=(L.MAX_FACTOR, "recipes use up to 64"), aliases=("bias_lr_scale",))
    bias_decay: bool = setting(
        False, "Weight decay on biases and norm shifts too (same per-step rate).")
    lookahead_every: int = setting(
        0, "Lookahead every K steps with an averaged copy of the weights (0 = off).",
        rule=L.OFF_OR_MORE)
    lookahead_decay: float = setting(
        0.95, "Per-step decay of the lookahead average at the end of the run.", rule=L.UNIT)
    ema: float = setting(0.0, "Average the weights and BatchNorm statistics with this decay "
                         "(0.999...); evaluation and model.pth use the average. 0: off.",
                         metavar="DECAY", rule=L.UNIT_OPEN)
    label_smoothing: float = setting(0.0, "Label smoothing of the training loss.", rule=L.UNIT_OPEN)
    mixup: float = setting(
        0.0, "Mixup: blend each image with its neighbour in the batch, the weight drawn per batch "
        "from Beta(ALPHA, ALPHA) (0.2-1; timm's 0.8); the loss mixes their labels. 0: off.",
        metavar="ALPHA", rule=L.NOT_NEGATIVE, limit=(100, "recipes use 0.1 to 1"))
    cutmix: float = setting(
        0.0, "CutMix: paste a box of the neighbour's image, its area's share from Beta(ALPHA, "
        "ALPHA) (1.0 is usual). With --mixup, each mixed batch is one or the other, half and "
        "half. 0: off.", metavar="ALPHA", rule=L.NOT_NEGATIVE, limit=(100, "recipes use 1"))
    mix_prob: float = setting(1.0, "The share of batches --mixup/--cutmix mix.", rule=L.UNIT)
    grad_accum: int = setting(1, "Batches per optimizer step.", rule=L.AT_LEAST_1)
    clip_grad: float = setting(0.0, "Clip the gradient norm to this (0 = off).", rule=L.OFF_OR_MORE)
    tta: bool = setting(False, "Evaluate the end of the run with test-time augmentation.")
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps (then evaluate and save as at the end); 0: "
        "no cap (lifts a config file's).", rule=L.NOT_NEGATIVE)
    val_split: float = setting(
        0.0, "Fraction of the training set held out for validation (seeded).", rule=L.UNIT_OPEN)
    patience: int = setting(0, "Early stopping: end the run after N epochs without a gain over "
                            "--min-delta in val accuracy (test accuracy without --val-split); "
                            "model.pth is then the best epoch's. 0: off.", metavar="N",
                            rule=L.OFF_OR_MORE, limit=(L.MAX_EPOCHS, "beyond any schedule"))
    min_delta: float = setting(0.0, "The accuracy gain --patience counts (0.001: 0.1 points).",
                               rule=L.UNIT_OPEN)
    augment: str = setting(
        "auto", "auto (crop-flip for CIFAR, none for MNIST), none, crop, crop-flip; "
        "randaugment, trivialaugment, autoaugment (its CIFAR-10 policy): crop-flip, then "
        "torchvision's policy, per image; resized-crop: RandomResizedCrop and flips (timm's "
        "fine-tuning default).", metavar="KIND",
        choices=("auto", "none", "crop", "crop-flip", "randaugment", "trivialaugment",
                 "autoaugment", "resized-crop"))
    crop_scale: float = setting(
        0.08, "resized-crop: the smallest share of the image a crop covers (ImageNet's 0.08; "
        "0.25-0.5 for small images).", metavar="S", rule=(lambda v: 0 < v <= 1, "in (0, 1]"))
    crop_pad: int = setting(
        0, "Crop padding in pixels (0: 4 for 32 px images, 2 for 28 px).",
        rule=(lambda v: 0 <= v <= 8, "in [0, 8] (0: the dataset's usual)"))
    pad_mode: str = setting("zero", "How crops are padded.", choices=("zero", "reflect"))
    random_erasing: float = setting(
        0.0, "Erase a box of each image with this probability (torchvision's RandomErasing: 2-33% "
        "of the area, aspect 0.3-3.3, filled with the dataset's mean).", metavar="P",
        rule=L.UNIT)
    flip: str = setting(
        "random", "With crop-flip, flip at random or mirror each image every other epoch.",
        choices=("random", "alternate"))
    workers: int = setting(
        0, "0: batches are sliced on the device; N: N loader processes feed them from host "
        "memory (at most 64).", env="PTRAIN_WORKERS", rule=L.NOT_NEGATIVE,
        resume_help="Loader processes from now on (they change no result).",
        limit=(L.MAX_WORKERS, "more loader processes only cost memory"))
    # reproducibility and hardware
    seed: int = setting(1, "Seed for every random generator.", rule=L.SEED_RANGE)
    deterministic: bool = setting(False, "Use deterministic algorithms only.")
    detect_anomaly: bool = setting(
        False, "Autograd anomaly mode: name the operation that made a NaN (slow).")
    device: str = setting(
        "auto", DEVICE_HELP, env="PTRAIN_DEVICE",
        rule=(lambda v: re.fullmatch(DEVICES, v), "auto, cpu, cuda, cuda:N or mps"),
        resume_help="Continue on another device: " + DEVICE_HELP)
    # speed
    precision: str = setting(
        "auto", "Autocast for forward and loss (16 with a GradScaler); auto = bf16 on CUDA that "
        "supports it, else 32.", choices=("auto", "32", "bf16", "16"))
    compile: bool = setting(False, "torch.compile the model (in place; saved keys unchanged).")
    compile_mode: str = setting(
        "default", "reduce-overhead and max-autotune use CUDA graphs.",
        choices=("default", "reduce-overhead", "max-autotune"))
    compile_backend: str = setting(
        "inductor", "inductor generates kernels; aot_eager and eager trace the same graphs "
        "without code generation (to tell a compiler bug from a model bug, in seconds).",
        choices=("inductor", "aot_eager", "eager"))
    channels_last: bool = setting(
        True, "Channels-last (NHWC) memory format for model and batches.")
    grad_checkpointing: bool = setting(
        False, "Recompute each residual block's activations in the backward pass instead of "
        "keeping them (resnet18, torchvision's ResNets, timm's models): less memory, slower.")
    # logging and saving
    log_interval: int = setting(10, "Batches between metrics.jsonl records, each at the step "
                                "reaching its batch; plain output prints one per quarter epoch "
                                "or 30 s.", rule=L.AT_LEAST_1)
    save_interval: int = setting(0, "Batches between checkpoints (0 = once per epoch).",
                                 rule=(lambda v: v >= 0, "0 (once per epoch) or more"))
    save_model: bool = setting(True, "Write checkpoints and model.pth.")
    tensorboard: bool = setting(
        False, "Also write TensorBoard data to RUN_DIR/tensorboard (pip install "
        "'pytorch-cli[tensorboard]').",
        resume_help="Start (or stop) writing TensorBoard data [default: as the run did].")
    mlflow: bool = setting(
        False, "Also log to MLflow: MLFLOW_TRACKING_URI, else ./mlflow.db (pip install "
        "'pytorch-cli[mlflow]').", resume_help="Log to MLflow, continuing the run's MLflow run "
        "[default: as the run did].")
    wandb: bool = setting(
        False, "Also log to Weights & Biases, offline in RUN_DIR/wandb unless logged in (pip "
        "install 'pytorch-cli[wandb]').", resume_help="Log to W&B, continuing the run's W&B run "
        "[default: as the run did].")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = field_types(TrainConfig)
RENAMED = renamed(TrainConfig)  # old key -> key: files and checkpoints of older versions load
def validate(cfg: TrainConfig, origin: dict[str, str] | None = None, typed=frozenset()
             ) -> TrainConfig:
    """Raise UsageError naming the first bad value (and `origin`'s source of it: a variable, a
    file; `typed`: the flags typed); return cfg unchanged when all are fine."""
    check(cfg, origin)
    for ok, message in CROSS_RULES:
        if not ok(cfg):
            raise UsageError(message.format(c=cfg))
    said = unused(cfg, origin, typed)
    if said:
        raise UsageError(said)
    return cfg


def typed_values(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A file's settings, typed; unknown keys and wrong types are errors, not silently ignored."""
    values, keys = {}, {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = RENAMED.get(name, name)
        if name not in FIELD_TYPES:
            raise UsageError(
                f"{path}: unknown key {key!r}; valid keys: {', '.join(FIELD_TYPES)}")
        if name in keys:  # two spellings of one setting (an old name, dashes): which wins?
            raise UsageError(f"{path}: {keys[name]!r} and {key!r} are the same setting; keep "
                             "one of them")
        values[name], keys[name] = coerce(FIELD_TYPES[name], name, value, str(path)), key
    return values


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML config (typed_values says what it must hold)."""
    return typed_values(read_toml(path), path)


def resolve(file: Path | list[Path] | None = None, overrides: dict[str, Any] | None = None,
            origin: dict[str, str] | None = None) -> TrainConfig:
    """Defaults <- file(s), each over the ones before <- overrides (flags the user actually
    typed), then validated; `origin`: the overrides set by a variable, not a flag
    (PTRAIN_WORKERS...), named in an error."""
    values, where = {}, {}  # (where: each file's keys; a flag over one is the flag's)
    for path in [file] if isinstance(file, Path) else file or []:
        values.update(loaded := load_file(path))
        where.update((k, str(path)) for k in loaded)
    values.update(overrides or {})
    if values.get("max_steps") == 0:  # no cap: saved as none at all, a run's config.toml re-run
        values["max_steps"] = None  # in full (a hostile trial could not lift its --max-steps)
    fresh = TrainConfig()  # a flag typed at its default puts a file's value back (a hostile trial)
    typed = frozenset(k for k, v in (overrides or {}).items() if k not in (origin or {})
                      and not (k in where and v == getattr(fresh, k)))
    named = {k: v for k, v in where.items() if k not in (overrides or {})}
    return validate(TrainConfig(**values), {**named, **(origin or {})}, typed)


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Rebuild a config saved inside a checkpoint: keys unknown to this version are dropped (a
    newer or older ptrain's), the rest are held to their declarations as a TOML file's are."""
    typed = {}
    for key, value in values.items():
        name = RENAMED.get(key, key)
        if name in FIELD_TYPES:
            typed[name] = coerce(FIELD_TYPES[name], key, value, source)
    return validate(unused_reset(TrainConfig(**typed)))

