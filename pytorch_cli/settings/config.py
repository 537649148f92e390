"""Every setting of a training run, declared once (declare.py says how): defaults here,
overridden by a TOML file, overridden by flags. Choices come from the registries themselves,
which are torch-free to import, so --help and completion list them at once.

The resolved config is written to every run directory as `config.toml`; passing that file back
with `--config` re-runs the same experiment.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings.declare import check, coerce, field_types, renamed, setting
from pytorch_cli.training import optim

DEVICES = r"auto|cpu|mps|cuda(:\d+)?"
DEVICE_HELP = "auto|cpu|cuda|cuda:N|mps."


# the rules settings share: (test, what the error message says the value must be)
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
POSITIVE = (lambda v: v > 0, "greater than 0")
NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
OFF_OR_MORE = (lambda v: v >= 0, "0 (off) or more")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_OPEN = (lambda v: 0 <= v < 1, "in [0, 1)")


@dataclass
class TrainConfig:
    # data and model
    dataset: str = setting("mnist", choices=tuple(catalog.SPECS))
    data_dir: str = setting(
        "", "Folder with the dataset (torchvision layout or the original files). Default: "
        "$PTRAIN_DATA_DIR, then ./data.")
    download: bool = setting(True, "Download the dataset with torchvision if it is not found.")
    model: str = setting("lenet", choices=tuple(zoo.MODELS))
    init: str = setting("default", "Weight init.", choices=tuple(zoo.INITS))
    # optimisation (defaults are the pytorch/examples MNIST script's)
    batch_size: int = setting(64, "Training batch size.", rule=AT_LEAST_1)
    test_batch_size: int = setting(1000, "Evaluation batch size.", rule=AT_LEAST_1)
    epochs: float = setting(10, "Number of epochs (may be fractional: 9.9).", rule=POSITIVE,
                            resume_help="Train to this many epochs in all (extends the run).")
    lr: float = setting(0.01, "Learning rate (peak rate for onecycle).", rule=POSITIVE)
    momentum: float = setting(0.5, "SGD/RMSprop momentum.", rule=UNIT_OPEN)
    nesterov: bool = setting(False, "Nesterov momentum (SGD).")
    optimizer: str = setting("sgd", choices=tuple(optim.OPTIMIZERS))
    weight_decay: float = setting(0.0, "Weight decay (never on biases or norm weights).",
                                  rule=NOT_NEGATIVE)
    scheduler: str = setting("none", "LR schedule.", choices=tuple(optim.SCHEDULES))
    gamma: float = setting(0.7, "LR factor per epoch for --scheduler step.",
                           rule=(lambda v: 0 < v <= 1, "in (0, 1]"))
    warmup_epochs: float = setting(0.0, "Linear LR warmup, in epochs.")  # its rule: CROSS_RULES
    warmup_start: float = setting(0.0, "LR factor the warmup starts from.", rule=UNIT)
    final_lr: float = setting(0.0, "LR factor cosine and linear schedules end at.", rule=UNIT)
    norm_lr_scale: float = setting(
        1.0, "LR multiplier for norm layers' scales and shifts (BatchNorm...).", rule=POSITIVE,
        aliases=("bias_lr_scale",))
    bias_decay: bool = setting(
        False, "Weight decay on biases and norm shifts too (same per-step rate).")
    lookahead_every: int = setting(
        0, "Lookahead every K steps with an averaged copy of the weights (0 = off).",
        rule=OFF_OR_MORE)
    lookahead_decay: float = setting(
        0.95, "Per-step decay of the lookahead average at the end of the run.", rule=UNIT)
    label_smoothing: float = setting(0.0, "Label smoothing of the training loss.",
                                     rule=UNIT_OPEN)
    grad_accum: int = setting(1, "Batches per optimizer step.", rule=AT_LEAST_1)
    clip_grad: float = setting(0.0, "Clip the gradient norm to this (0 = off).",
                               rule=OFF_OR_MORE)
    tta: bool = setting(False, "Evaluate the end of the run with test-time augmentation.")
    max_steps: int | None = setting(
        None, "Stop after this many optimizer steps (then evaluate and save as at the end).",
        rule=AT_LEAST_1)
    val_split: float = setting(
        0.0, "Fraction of the training set held out for validation (seeded).", rule=UNIT_OPEN)
    augment: str = setting("auto", "auto: crop-flip for CIFAR, none for MNIST.",
                           choices=("auto", "none", "crop", "crop-flip"))
    crop_pad: int = setting(
        0, "Crop padding in pixels (0: 4 for 32 px images, 2 for 28 px).",
        rule=(lambda v: 0 <= v <= 8, "in [0, 8] (0: the dataset's usual)"))
    pad_mode: str = setting("zero", "How crops are padded.", choices=("zero", "reflect"))
    flip: str = setting(
        "random", "With crop-flip, flip at random or mirror each image every other epoch.",
        choices=("random", "alternate"))
    workers: int = setting(
        0, "0: batches are sliced on the device; N: N loader processes feed them from host "
        "memory.", env="PTRAIN_WORKERS", rule=NOT_NEGATIVE)
    # reproducibility and hardware
    seed: int = setting(1, "Seed for every random generator.")
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
    channels_last: bool = setting(
        True, "Channels-last (NHWC) memory format for model and batches.")
    # logging and saving
    log_interval: int = setting(
        10, "Batches between metrics.jsonl records (plain output prints one per quarter epoch "
        "or 30 s).", rule=AT_LEAST_1)
    save_interval: int = setting(0, "Batches between checkpoints (0 = once per epoch).",
                                 rule=(lambda v: v >= 0, "0 (once per epoch) or more"))
    save_model: bool = setting(True, "Write checkpoints and model.pth.")
    tensorboard: bool = setting(
        False, "Also write TensorBoard data to RUN_DIR/tensorboard (pip install "
        "'pytorch-cli[tensorboard]').",
        resume_help="Start (or stop) writing TensorBoard data [default: as the run did].")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_TYPES = field_types(TrainConfig)
RENAMED = renamed(TrainConfig)  # old key -> key: files and checkpoints of older versions load
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# rules that tie two settings together; each setting's own rule is in its declaration
CROSS_RULES = (
    (lambda c: 0 <= c.warmup_epochs < c.epochs,
     "--warmup-epochs must be 0 or more and less than --epochs, got {c.warmup_epochs}"),
    (lambda c: not c.nesterov or (c.optimizer == "sgd" and c.momentum > 0),
     "--nesterov needs --optimizer sgd and --momentum greater than 0"),
    # a CUDA graph's outputs live in memory its next replay reuses: the gradient one micro-batch
    # left in .grad would be freed or overwritten by the next (pytorch#169545, #96693)
    (lambda c: not (c.compile and c.grad_accum > 1 and c.compile_mode in CUDA_GRAPH_MODES),
     "--compile-mode {c.compile_mode} (CUDA graphs) cannot accumulate gradients: with "
     "--grad-accum {c.grad_accum} use --compile-mode default (or --grad-accum 1)"),
)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise UsageError naming the first bad value; return cfg unchanged when all are fine."""
    check(cfg)
    for ok, message in CROSS_RULES:
        if not ok(cfg):
            raise UsageError(message.format(c=cfg))
    return cfg


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML config; unknown keys and wrong types are errors, not silently ignored."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML: {e}") from None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = RENAMED.get(name, name)
        if name not in FIELD_TYPES:
            raise UsageError(
                f"{path}: unknown key {key!r}; valid keys: {', '.join(FIELD_TYPES)}")
        values[name] = coerce(FIELD_TYPES[name], name, value, str(path))
    return values


def resolve(file: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- file <- overrides (flags the user actually typed), then validated."""
    values = load_file(file) if file else {}
    values.update(overrides or {})
    return validate(TrainConfig(**values))


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved inside a checkpoint (keys unknown to this version are dropped)."""
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    return TrainConfig(**{k: v for k, v in values.items() if k in FIELD_TYPES})

