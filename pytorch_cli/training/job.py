"""One training job: everything a run works with, built once by `setup` (data on its device, the
model, optimizer, schedule, precision), plus what the loop needs to report and stop (emit, the
stop flag, where checkpoints go). The loop's functions take a Job and nothing else."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pytorch_cli.data import augment, batches, catalog, datasets, folders, matching, splits
from pytorch_cli.models import adapt, checkpointing, zoo
from pytorch_cli.platform import distributed, runtime
from pytorch_cli.platform.errors import PtrainError, UsageError, plural, warn
from pytorch_cli.platform.events import Emit
from pytorch_cli.platform.signals import StopFlag
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import compiling, freezing, optim, pretrained, profiling
from pytorch_cli.training.state import TrainState, position_of

if TYPE_CHECKING:
    from pytorch_cli.settings.config import TrainConfig


@dataclass
class Job:
    cfg: TrainConfig  # resolved: --augment auto is the dataset's own
    device: torch.device
    data: datasets.Data
    train: datasets.Split
    val: datasets.Split | None
    test: datasets.Split
    state: TrainState
    meta: dict  # what rebuilds the model (zoo.describe)
    n_batches: int  # per epoch (per process: each takes its part of every global batch)
    world: distributed.World  # this process's rank among the job's processes (1 of 1 alone)
    total_steps: int  # optimizer steps of the whole run (--max-steps caps it)
    amp: torch.dtype | None  # autocast dtype; None: float32
    setup_s: float = 0.0  # seconds setup took, of which...
    data_s: float = 0.0  # ...reading the dataset and moving it to where batches are made
    # how the run is driven (set by loop.train)
    emit: Emit = lambda record: None
    stop: StopFlag = field(default_factory=StopFlag)
    dry_run: bool = False
    run_dir: RunDir | None = None  # where the run's files go; None: write nothing
    saver: RunDir | None = None  # where checkpoints go; None: a dry run or --no-save-model
    profiler: profiling.StepProfiler | None = None  # --profile
    started: float = 0.0  # perf_counter() at which the run's elapsed time is 0
    watch: compiling.Watch = field(default_factory=compiling.Watch)  # --compile: times compiles
    transfer: adapt.Transfer | None = None  # what --weights/--init-from loaded
    flops: int | None = None  # forward FLOPs per image
    least_batch: int = 1  # images a batch the model trains on at least (zoo.check_input)
    groups: list[list] = field(default_factory=list)  # each optimizer group's parameters, all
    frozen_norms: list = field(default_factory=list)  # --freeze backbone: its BatchNorm layers
    class_weight: torch.Tensor | None = None  # --class-weights auto: one per class, mean 1

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_batches, self.cfg.grad_accum)


def steps_per_epoch(n_batches: int, grad_accum: int) -> int:
    return math.ceil(n_batches / grad_accum)  # the last group may be short


def _normalised(data: datasets.Data, resume: dict | None,
                source: pretrained.Source | None) -> datasets.Data:
    """The data with the normalisation the model sees: a resumed run's own (saved with it), the
    starting weights' (they learned on it), else the dataset's."""
    meta = (resume or {}).get("meta", {})  # a saved state always has it (checkpoint.load)
    mean, std = ((meta["mean"], meta["std"]) if "mean" in meta else
                 (source.mean, source.std) if source is not None and source.mean else
                 (None, None))
    if mean is None or std is None:
        return data
    c = data.spec.channels
    return datasets.normalised(data, pretrained.for_channels(mean, c),
                               pretrained.for_channels(std, c))


def _read(cfg: TrainConfig, resume: dict | None) -> datasets.Data:
    """The run's data; a resumed run's as it trained: its classes, its files (or a warning)."""
    channels, size = cfg.channels, catalog.parse_size(cfg.image_size)
    meta = resume.get("meta", {}) if resume is not None else {}
    if resume is not None and cfg.dataset == catalog.FOLDER:  # auto (0) means the size and
        channels = channels or meta.get("in_channels", 0)  # channels the run found: from
        size = size or catalog.parse_size(meta.get("image_size", 0))  # another folder too
    # a resumed run draws its held-out rows as it did (older runs: by a shuffle)
    split = meta.get("split", "") if resume is not None else splits.PER_CLASS
    with distributed.main_first():  # rank 0 downloads, if anything needs downloading
        data = datasets.load(cfg.dataset, cfg.data_dir, cfg.download, cfg.val_split, cfg.seed,
                             folders.Options(channels, size, cfg.test_split, split=split,
                                             labels=cfg.labels, resize=cfg.resize))
    if resume is not None:
        matching.same_as_trained(meta, data, "resume")
    return data


def _model(cfg: TrainConfig, data: datasets.Data, device: torch.device,
           source: pretrained.Source | None, fresh: bool, world: distributed.World):
    spec = data.spec
    model = zoo.build(cfg.model, spec.channels, spec.num_classes, spec.size, cfg.init,
                      cfg.dropout, cfg.drop_path).to(device)
    # a net the images are too small for (lenet at 8x8, a ViT at 32) is one line; the probe's
    # forward also counts the FLOPs per image the start line gives, and the least batch
    flops, least = zoo.check_input(model, cfg.model, spec.channels, spec.size)
    if cfg.batch_size < least:
        raise UsageError(f"--batch-size {cfg.batch_size}: {cfg.model} has a BatchNorm layer that "
                         f"sees one value per channel an image at {catalog.size_text(spec.size)}"
                         ", which torch cannot normalise over a batch of one image in training; "
                         "use --batch-size 2 or more (per process), or larger images")
    if fresh and cfg.model in zoo.DATA_INITS:  # a resumed run loads it instead
        pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))
        chosen = batches.resize(data.train.images[pick[:5000]], spec.size)
        zoo.DATA_INITS[cfg.model](model, batches.normalize(chosen, spec))
    transfer = adapt.load_into(model, source.state, source.label, list(map(str, data.classes)),
                               source.classes, source.model) if source else None
    if transfer is not None and transfer.backbone_new and world.main:
        _not_loaded(transfer.backbone_new, source.label)
    if cfg.grad_checkpointing:
        checkpointing.enable(model, cfg.model)
    if world.rank:  # dropout differs between ranks; rank 0 draws what one process would
        torch.manual_seed(batches.mix(cfg.seed, world.rank))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, transfer, flops, least


def _steps(cfg: TrainConfig, n_batches: int, world: distributed.World) -> tuple[int, int]:
    """Optimizer steps an epoch, and in the whole run (whole steps: a step never crosses an
    epoch's end, so an accumulation longer than an epoch is said: --epochs 0.1 --grad-accum 40
    had trained a whole epoch, unsaid, a hostile trial)."""
    per_epoch = steps_per_epoch(n_batches, cfg.grad_accum)
    total = min(math.ceil(cfg.epochs * per_epoch), cfg.max_steps or math.inf)
    if cfg.grad_accum > n_batches and world.main:
        warn(f"--grad-accum {cfg.grad_accum}: an epoch has {plural(n_batches, 'batch', 'batches')}"
             f" and a step never crosses an epoch's end, so each step accumulates {n_batches}; "
             f"--epochs {cfg.epochs:g} takes {plural(total, 'step')}, each a whole epoch")
    return per_epoch, total


def _not_loaded(new: list[str], source: str) -> None:
    warn(f"{len(new)} of the model's tensors outside its head did not load from {source} "
         f"({', '.join(new[:3])}{', ...' if len(new) > 3 else ''}): it may hold another "
         "model's weights; those start from a fresh initialisation")


def given_flags(cfg: TrainConfig, names) -> list[str]:
    """The flags of those settings that cfg sets away from their defaults (training reads no
    declarations: the config's own defaults say what was given)."""
    fresh = type(cfg)()
    return [f"--{'no-' if getattr(cfg, n) is False else ''}{n.replace('_', '-')}" for n in names
            if getattr(cfg, n) != getattr(fresh, n)]


def _idle_crops(cfg: TrainConfig, new: bool) -> None:
    """--augment auto of a gray folder is none: crop and flip settings given do nothing."""
    idle = given_flags(cfg, [n for n in ("crop_pad", "pad_mode", "flip")
                             if n not in catalog.augment_uses(cfg.augment)])
    if idle and new:
        warn(f"{', '.join(idle)} not used: --augment auto is {cfg.augment} for {cfg.dataset} "
             "images like these (gray); pass --augment crop-flip to use them")


def _reflect_fits(cfg: TrainConfig, spec) -> None:
    """torch's reflect padding mirrors fewer pixels than a side has: one line before training,
    not its RuntimeError at the first batch (cfg.augment: "auto" resolved)."""
    if cfg.pad_mode == "reflect" and "crop_pad" in catalog.augment_uses(cfg.augment):
        pad, side = cfg.crop_pad or augment.pad_for(spec.size), min(spec.size)
        if pad >= side:
            raise UsageError(f"--pad-mode reflect: a pad of {pad} mirrors more than these "
                             f"{spec.size[0]}x{spec.size[1]} images hold; pass --crop-pad "
                             f"{side - 1} or less, or --pad-mode zero")


def _norms_to_scale(cfg: TrainConfig, model: torch.nn.Module, new: bool) -> None:
    """--norm-lr-scale on a net without norm layers would scale nothing: refused in a new run
    (a saved one resumes as it ran)."""
    if new and cfg.norm_lr_scale != 1 and not optim.norm_params(model):
        raise UsageError(f"--norm-lr-scale: {cfg.model} has no norm layer (BatchNorm, GroupNorm, "
                         "LayerNorm) whose LR it would scale; leave it out")


def _class_weight(cfg: TrainConfig, train: datasets.Split, classes: int, device: torch.device):
    """Inverse class frequency, scaled so that the average sample's weight is 1."""
    if cfg.class_weights == "none":
        return None
    counts = torch.bincount(train.labels.cpu(), minlength=classes).double()
    return (len(train) / (classes * counts.clamp(min=1))).float().to(device)


class UnfitState(PtrainError):
    """A saved training state this model or data cannot take (the session names its file)."""


def _load(state: TrainState, resume: dict, cfg: TrainConfig, groups: list[list],
          n_batches: int) -> None:
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    try:
        freezing.as_saved(cfg, state.optimizer, groups, resume["optimizer"])
        state.load_state_dict(resume)
        # prepare.training_state checked the fields and the weights; what is left is an
        # optimizer or schedule state for other parameters than this model's
        problem = optim.unfit_state(state.optimizer, fresh)
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        problem = f"{type(e).__name__}: " + " ".join(str(e).split())[:200]
    if problem:
        raise UnfitState(f"the saved training state does not fit this {cfg.model} run "
                          f"({problem}); it is damaged or from another run: resume from "
                          "another checkpoint, or start afresh")
    if state.pos.batch > n_batches:  # an epoch of this many batches never reached it
        why = (f"{cfg.data_dir} holds fewer training images than when it was saved, or it is "
               "damaged" if cfg.dataset == catalog.FOLDER else  # (it blamed the checkpoint
               "it is damaged, or from another training set")  # alone: a hostile trial)
        raise UnfitState(f"the saved training state is at batch {state.pos.batch} of an epoch "
                         f"of {n_batches} batches here: {why}; resume from another checkpoint, "
                         "or start afresh")


def anchored(cfg: TrainConfig, source: str = "") -> TrainConfig:
    """The run's paths made absolute (--data-dir, --labels, --init-from, a --weights file), as
    the run saves them: its config.toml, `ptrain train --config` of it, eval and resume then
    work from any folder (a hostile trial's `data_dir = "tt"` failed outside the one it ran in).
    No --data-dir: `source`, the folder the data was found in ($PTRAIN_DATA_DIR, ./data or
    Debian's; saved "", such a run could not be evaluated from another folder). Links are kept
    as typed; weight names stay as they are."""
    given = cfg.data_dir or (source if source not in ("", "generated") else "")
    paths = {k: os.path.abspath(os.path.expanduser(v)) for k in ("data_dir", "labels",
                                                                   "init_from", "weights")
             if (v := given if k == "data_dir" else getattr(cfg, k))
             and (k != "weights" or os.path.isfile(v))}
    return dataclasses.replace(cfg, **paths)


def setup(cfg: TrainConfig, resume: dict | None = None) -> Job:
    """Build the job; `resume`: a saved training state to continue from."""
    t0 = time.perf_counter()
    runtime.set_deterministic(cfg.deterministic)
    runtime.fast_backends(cfg.deterministic)
    runtime.keep_freed_memory()
    runtime.seed_everything(cfg.seed)
    torch.autograd.set_detect_anomaly(cfg.detect_anomaly)  # names the op that made a NaN: slow
    world = distributed.world()
    device = distributed.local_device(runtime.resolve_device(cfg.device))
    data = _read(cfg, resume)
    source = pretrained.resolve(cfg) if resume is None else None  # a resume has its weights
    data = _normalised(data, resume, source)
    if cfg.augment == "auto":  # a folder's follows its images (the settings' rules check the
        cfg = dataclasses.replace(cfg, augment=data.spec.augment)  # built-in datasets')
        _idle_crops(cfg, resume is None)
    _reflect_fits(cfg, data.spec)
    cfg = anchored(cfg, data.source)  # saved absolute; the printed lines keep what was typed
    storage = torch.device("cpu") if cfg.workers else device  # where the uint8 dataset lives
    train, test = data.train.to(storage), batches.eval_split(data.test, storage, device)
    val = batches.eval_split(data.val, storage, device) if data.val is not None else None
    data_s = time.perf_counter() - t0
    model, transfer, flops, least = _model(cfg, data, device, source, resume is None, world)
    _norms_to_scale(cfg, model, resume is None)
    if transfer is not None and source.mean:
        transfer.normalised = (f"mean {', '.join(f'{v:.3f}' for v in data.spec.mean)}, "
                               f"std {', '.join(f'{v:.3f}' for v in data.spec.std)}")
    n_batches = batches.num_batches(len(data.train), cfg.batch_size, world.size, least)
    per_epoch, total_steps = _steps(cfg, n_batches, world)
    split = cfg.freeze != "none" or cfg.backbone_lr_scale != 1  # the head apart
    optimizer = optim.build_optimizer(
        model, cfg, adapt.backbone(model, data.spec.num_classes) if split else set())
    groups = [list(g["params"]) for g in optimizer.param_groups]  # before --freeze empties some
    scheduler = optim.build_scheduler(optimizer, cfg, total_steps, per_epoch)
    amp = runtime.autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    average = ({k: v.detach().clone() for k, v in model.state_dict().items()
                if v.is_floating_point()} if cfg.lookahead_every else None)
    state = TrainState(model=model, raw=model, optimizer=optimizer, scheduler=scheduler,
                       scaler=scaler, lookahead_avg=average,
                       ema=copy.deepcopy(model).requires_grad_(False) if cfg.ema else None)
    meta = zoo.describe(cfg.model, data.spec, data.classes, data.listing, data.split)
    job = Job(cfg, device, data, train, val, test, state, meta, n_batches, world, total_steps,
              amp, data_s=data_s, transfer=transfer, groups=groups, flops=flops, least_batch=least,
              frozen_norms=(adapt.frozen_norms(model, data.spec.num_classes)
                            if cfg.freeze != "none" else []),
              class_weight=_class_weight(cfg, data.train, data.spec.num_classes, device))
    if resume is not None:
        _load(state, resume, cfg, groups, n_batches)
    freezing.apply(cfg, optimizer, groups, position_of(resume).epoch if resume else 0)
    if cfg.compile:  # in place: the saved keys stay the plain module's; --ema's average is
        compiling.quiet_logs()
        for module in filter(None, (model, state.ema)):  # what evaluations run: compiled too
            module.compile(backend=cfg.compile_backend,
                           mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    state.model = distributed.wrap(model, device)
    job.setup_s = time.perf_counter() - t0
    return job
