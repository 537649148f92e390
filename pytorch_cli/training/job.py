"""One training job: everything a run works with, built once by `setup` (data on its device, the
model, optimizer, schedule, precision), plus what the loop needs to report and stop (emit, the
stop flag, where checkpoints go). The loop's functions take a Job and nothing else."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from pytorch_cli.data import batches, datasets, folders
from pytorch_cli.models import zoo
from pytorch_cli.platform import distributed, runtime
from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.platform.events import Emit
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import compiling, optim, profiling
from pytorch_cli.training.state import TrainState
from pytorch_cli.training.stopping import StopFlag

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


def _model(cfg: TrainConfig, data: datasets.Data, device: torch.device, fresh: bool,
           world: distributed.World) -> torch.nn.Module:
    spec = data.spec
    model = zoo.build(cfg.model, spec.channels, spec.num_classes, spec.size, cfg.init).to(device)
    if fresh and cfg.model in zoo.DATA_INITS:  # a resumed run loads it instead
        pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))
        zoo.DATA_INITS[cfg.model](model, batches.normalize(data.train.images[pick[:5000]], spec))
    if world.rank:  # dropout differs between ranks; rank 0 draws what one process would
        torch.manual_seed(batches.mix(cfg.seed, world.rank))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def setup(cfg: TrainConfig, resume: dict | None = None) -> Job:
    """Build the job; `resume`: a saved training state to continue from."""
    t0 = time.perf_counter()
    runtime.set_deterministic(cfg.deterministic)
    runtime.fast_backends(cfg.deterministic)
    runtime.seed_everything(cfg.seed)
    torch.autograd.set_detect_anomaly(cfg.detect_anomaly)  # names the op that made a NaN: slow
    world = distributed.world()
    device = distributed.local_device(runtime.resolve_device(cfg.device))
    with distributed.main_first():  # rank 0 downloads, if anything needs downloading
        data = datasets.load(cfg.dataset, cfg.data_dir, cfg.download, cfg.val_split, cfg.seed,
                             folders.Options(cfg.channels, cfg.image_size, cfg.test_split))
    if cfg.augment == "auto":
        cfg = dataclasses.replace(cfg, augment=data.spec.augment)
    storage = torch.device("cpu") if cfg.workers else device  # where the uint8 dataset lives
    train, test = data.train.to(storage), batches.eval_split(data.test, storage, device)
    val = batches.eval_split(data.val, storage, device) if data.val is not None else None
    data_s = time.perf_counter() - t0
    model = _model(cfg, data, device, resume is None, world)
    n_batches = batches.num_batches(len(data.train), cfg.batch_size, world.size)
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total_steps = min(math.ceil(cfg.epochs * steps_per_epoch), cfg.max_steps or math.inf)
    optimizer = optim.build_optimizer(model, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, total_steps, steps_per_epoch)
    amp = runtime.autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    average = ({k: v.detach().clone() for k, v in model.state_dict().items()
                if v.is_floating_point()} if cfg.lookahead_every else None)
    state = TrainState(model=model, raw=model, optimizer=optimizer, scheduler=scheduler,
                       scaler=scaler, lookahead_avg=average)
    if resume is not None:
        try:
            state.load_state_dict(resume)
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
            # prepare.training_state checked the fields and the weights; what is left is an
            # optimizer or schedule state for other parameters than this model's
            detail = " ".join(str(e).split())[:200]
            raise PtrainError(f"the saved training state does not fit this {cfg.model} run "
                              f"({type(e).__name__}: {detail}); it is damaged or from another "
                              "run: resume from another checkpoint, or start afresh") from None
    if cfg.compile:  # in place: the saved keys stay the plain module's
        model.compile(mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    state.model = distributed.wrap(model, device)
    return Job(cfg, device, data, train, val, test, state,
               zoo.describe(cfg.model, data.spec, data.classes), n_batches, world, total_steps,
               amp, setup_s=time.perf_counter() - t0, data_s=data_s)
