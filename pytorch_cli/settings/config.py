"""One typed training config: defaults here, overridden by a TOML file, overridden by flags.

The resolved config is written to every run directory as `config.toml`; passing that file back
with `--config` re-runs the same experiment.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.store import export
from pytorch_cli.training import optim

# Choices come from the registries themselves (torch-free to import, so --help stays fast).
DATASETS = tuple(catalog.SPECS)
MODELS = tuple(zoo.MODELS)
OPTIMIZERS = tuple(optim.OPTIMIZERS)
SCHEDULERS = tuple(optim.SCHEDULES)
INITS = tuple(zoo.INITS)
AUGMENTS = ("auto", "none", "crop", "crop-flip")
PAD_MODES = ("zero", "reflect")
FLIPS = ("random", "alternate")
PRECISIONS = ("auto", "32", "bf16", "16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
EXPORT_FORMATS = tuple(export.FORMATS)


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist"
    data_dir: str = ""  # "" = $PTRAIN_DATA_DIR, else ./data (and the Debian folder for fashion-mnist)
    download: bool = True
    val_split: float = 0.0
    augment: str = "auto"  # auto = crop-flip for CIFAR, none for the MNIST family
    crop_pad: int = 0  # crop padding in pixels; 0 = 4 for 32 px images, 2 for 28 px
    pad_mode: str = "zero"
    flip: str = "random"  # alternate: each image mirrored on every other epoch
    workers: int = 0
    # model
    model: str = "lenet"
    init: str = "default"
    # optimisation (defaults are the pytorch/examples MNIST script's)
    batch_size: int = 64
    test_batch_size: int = 1000
    epochs: float = 10  # fractional: the last epoch stops part-way (recipes count steps)
    lr: float = 0.01
    momentum: float = 0.5
    nesterov: bool = False
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    scheduler: str = "none"
    gamma: float = 0.7
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0  # LR factor the warmup starts from
    final_lr: float = 0.0  # LR factor the cosine and linear schedules end at
    bias_lr_scale: float = 1.0  # LR multiplier for the norm layers' scales and shifts
    bias_decay: bool = False  # weight decay on 1-D parameters too (at the weights' per-step rate)
    lookahead_every: int = 0  # 0 = off; every K steps pull weights and an average together
    lookahead_decay: float = 0.95  # per-step decay of that average at the end of the run
    label_smoothing: float = 0.0
    grad_accum: int = 1
    clip_grad: float = 0.0  # 0 = no clipping
    tta: bool = False  # the last evaluation with test-time augmentation (mirrors and shifts)
    max_steps: int | None = None  # stop after this many optimizer steps (benchmarks, smoke tests)
    # reproducibility and hardware
    seed: int = 1
    deterministic: bool = False
    detect_anomaly: bool = False  # autograd's anomaly mode: names the op that made a NaN (slow)
    device: str = "auto"
    # speed
    precision: str = "auto"  # auto = bf16 on CUDA devices that support it, else 32
    compile: bool = False
    compile_mode: str = "default"
    channels_last: bool = True  # NHWC: 1.0-1.5x faster on CPU (benchmarks/throughput.py), the layout tensor cores want
    # logging and saving
    log_interval: int = 10
    save_interval: int = 0  # batches between mid-epoch checkpoints; 0 = once per epoch
    save_model: bool = True
    tensorboard: bool = False  # also write RUN_DIR/tensorboard (the optional extra)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _accepted(hint) -> tuple[type, ...]:
    """The value types a field takes: `int` -> (int,); `int | None` -> (int, NoneType)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def field_types(cls) -> dict[str, tuple[type, ...]]:
    # get_type_hints: real types, not the strings `from __future__ import annotations` leaves.
    hints = typing.get_type_hints(cls)
    return {f.name: _accepted(hints[f.name]) for f in fields(cls)}


FIELD_TYPES = field_types(TrainConfig)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"--{name.replace('_', '-')} must be one of {'|'.join(choices)}, got {value!r}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise UsageError naming the first bad value; return cfg unchanged when all are fine."""
    check_choice("dataset", cfg.dataset, DATASETS)
    check_choice("model", cfg.model, MODELS)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("scheduler", cfg.scheduler, SCHEDULERS)
    check_choice("init", cfg.init, INITS)
    check_choice("augment", cfg.augment, AUGMENTS)
    check_choice("pad_mode", cfg.pad_mode, PAD_MODES)
    check_choice("flip", cfg.flip, FLIPS)
    check_choice("precision", cfg.precision, PRECISIONS)
    check_choice("compile_mode", cfg.compile_mode, COMPILE_MODES)
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise UsageError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {cfg.device!r}")
    for name, value in cfg.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    rules = [
        ("batch_size", cfg.batch_size >= 1, "at least 1"),
        ("test_batch_size", cfg.test_batch_size >= 1, "at least 1"),
        ("epochs", cfg.epochs > 0, "greater than 0"),
        ("lr", cfg.lr > 0, "greater than 0"),
        ("momentum", 0 <= cfg.momentum < 1, "in [0, 1)"),
        ("weight_decay", cfg.weight_decay >= 0, "0 or more"),
        ("gamma", 0 < cfg.gamma <= 1, "in (0, 1]"),
        ("warmup_epochs", 0 <= cfg.warmup_epochs < cfg.epochs, "0 or more and less than --epochs"),
        ("label_smoothing", 0 <= cfg.label_smoothing < 1, "in [0, 1)"),
        ("warmup_start", 0 <= cfg.warmup_start <= 1, "in [0, 1]"),
        ("final_lr", 0 <= cfg.final_lr <= 1, "in [0, 1]"),
        ("bias_lr_scale", cfg.bias_lr_scale > 0, "greater than 0"),
        ("lookahead_every", cfg.lookahead_every >= 0, "0 (off) or more"),
        ("lookahead_decay", 0 <= cfg.lookahead_decay <= 1, "in [0, 1]"),
        ("grad_accum", cfg.grad_accum >= 1, "at least 1"),
        ("clip_grad", cfg.clip_grad >= 0, "0 (off) or more"),
        ("max_steps", cfg.max_steps is None or cfg.max_steps >= 1, "at least 1"),
        ("val_split", 0 <= cfg.val_split < 1, "in [0, 1)"),
        ("workers", cfg.workers >= 0, "0 or more"),
        ("crop_pad", 0 <= cfg.crop_pad <= 8, "in [0, 8] (0: the dataset's usual)"),
        ("log_interval", cfg.log_interval >= 1, "at least 1"),
        ("save_interval", cfg.save_interval >= 0, "0 (once per epoch) or more"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise UsageError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(cfg, name)}")
    if cfg.nesterov and (cfg.optimizer != "sgd" or cfg.momentum == 0):
        raise UsageError("--nesterov needs --optimizer sgd and --momentum greater than 0")
    return cfg


def coerce(accepted: tuple[type, ...], key: str, value: Any, source: str) -> Any:
    """Check a TOML value against a field's types; an int is accepted where a float is wanted."""
    if float in accepted and type(value) is int:
        return float(value)
    # bool is an int subclass: true is not a valid epochs count
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        names = " or ".join(t.__name__ for t in accepted if t is not type(None))
        raise UsageError(f"{source}: {key} must be {names}, got {value!r}")
    return value


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
    return TrainConfig(**{k: v for k, v in values.items() if k in FIELD_TYPES})
