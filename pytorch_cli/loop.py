"""The training loop: set the run up, then epochs of steps, evaluation and checkpoints, reported
through `emit`. The step is in step.py, what is saved in state.py, where it goes in rundir.py.

Host syncs happen only at log intervals, epoch ends and checkpoints (Meter.read): losses
accumulate on the device in between.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from pytorch_cli import (batches, checkpoint, datasets, distributed, models, optim, profiling,
                         runtime, step, stopping)
from pytorch_cli.config import TrainConfig, to_toml
from pytorch_cli.evaluate import evaluate
from pytorch_cli.events import Emit
from pytorch_cli.rundir import BEST, LAST, MODEL, TRACE, RunDir
from pytorch_cli.state import TrainState
from pytorch_cli.stopping import StopFlag


@dataclass
class Run:
    """Everything one training run works with, built once by `setup`."""
    cfg: TrainConfig
    device: torch.device
    data: datasets.Data
    train: datasets.Split
    val: datasets.Split | None
    test: datasets.Split
    state: TrainState
    meta: dict
    batches: int  # per epoch (per process: each takes its part of every global batch)
    world: distributed.World  # this process's rank among the job's processes (1 of 1 alone)
    total_steps: int  # optimizer steps of the whole run (--max-steps caps it)
    amp: torch.dtype | None  # autocast dtype; None: float32
    saver: RunDir | None = None  # where checkpoints go; None: a dry run or --no-save-model
    compiled: bool = False  # with --compile: the first step (which compiles) has run
    profiler: profiling.StepProfiler | None = None  # --profile
    setup_s: float = 0.0  # seconds setup took, of which...
    data_s: float = 0.0  # ...reading the dataset and moving it to where batches are made


def setup(cfg: TrainConfig, resume: dict | None = None) -> Run:
    t0 = time.perf_counter()
    runtime.set_deterministic(cfg.deterministic)
    runtime.fast_backends(cfg.deterministic)
    runtime.seed_everything(cfg.seed)
    torch.autograd.set_detect_anomaly(cfg.detect_anomaly)  # names the op that made a NaN: slow
    distributed.init()
    world = distributed.world()
    device = distributed.local_device(runtime.resolve_device(cfg.device))
    with distributed.main_first():  # rank 0 downloads, if anything needs downloading
        data = datasets.load(cfg.dataset, cfg.data_dir, cfg.download, cfg.val_split, cfg.seed)
    spec = data.spec
    if cfg.augment == "auto":
        cfg = dataclasses.replace(cfg, augment=spec.augment)
    storage = torch.device("cpu") if cfg.workers else device  # where the uint8 dataset lives
    train, test = data.train.to(storage), data.test.to(storage)
    val = data.val.to(storage) if data.val is not None else None
    data_s = time.perf_counter() - t0
    model = models.build(cfg.model, spec.channels, spec.num_classes, spec.size, cfg.init).to(device)
    if resume is None and cfg.model in models.DATA_INITS:  # a resumed run loads it instead
        pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))
        models.DATA_INITS[cfg.model](model, batches.normalize(data.train.images[pick[:5000]], spec))
    if world.rank:  # dropout differs between ranks; rank 0 draws what one process would
        torch.manual_seed(batches.mix(cfg.seed, world.rank))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_batches = batches.num_batches(len(data.train), cfg.batch_size, world.size)
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
    total_steps = min(math.ceil(cfg.epochs * steps_per_epoch), cfg.max_steps or math.inf)
    optimizer = optim.build_optimizer(model, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, total_steps, steps_per_epoch)
    amp = runtime.autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    ema = ({k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
           if cfg.lookahead_every else None)
    state = TrainState(model=model, raw=model, optimizer=optimizer, scheduler=scheduler,
                       scaler=scaler, ema=ema)
    if resume is not None:
        state.load_state_dict(resume)
    if cfg.compile:  # in place: the saved keys stay the plain module's
        model.compile(mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    state.model = distributed.wrap(model, device)
    return Run(cfg, device, data, train, val, test, state,
               models.describe(cfg.model, spec, data.classes), n_batches, world, total_steps,
               amp, setup_s=time.perf_counter() - t0, data_s=data_s)


def train(cfg: TrainConfig, run_dir: RunDir | None, emit: Emit, stop: StopFlag | None = None,
          resume: dict | None = None, dry_run: bool = False, profile: int = 0) -> dict:
    """Train per `cfg`, writing into `run_dir` (None: write nothing); returns the final summary.
    `resume`: a saved training state to continue from, at the batch after the one it saved.
    `profile`: profile that many steps after a warm-up (profiling.py)."""
    r = setup(cfg, resume)
    if run_dir is not None:  # rank 0 creates it and holds its lock until the run is over
        distributed.from_main(lambda: run_dir.create(to_toml(r.cfg)))
        r.saver = run_dir if r.cfg.save_model else None
    trace = run_dir.file(TRACE) if run_dir is not None else None
    r.profiler = profiling.StepProfiler(profile if r.world.main else 0, r.device, trace, emit,
                                        r.state.pos.step)
    try:
        return _train(r, run_dir, emit, stop if stop is not None else StopFlag(), resume is not None,
                      dry_run)
    finally:
        r.profiler.close()
        if run_dir is not None and r.world.main:
            run_dir.unlock()


def _train(r: Run, run_dir: RunDir | None, emit: Emit, stop: StopFlag, resumed: bool,
           dry_run: bool) -> dict:
    pos = r.state.pos
    emit(_start_record(r, run_dir, dry_run, resumed))
    started = time.perf_counter() - pos.elapsed_s
    result: dict = {}
    for epoch in range(pos.epoch, math.ceil(r.cfg.epochs)):  # a fractional last one ends at total_steps
        if _stopping(r, stop) or pos.step >= r.total_steps:
            break
        images, seconds = train_epoch(r, epoch, emit, stop, started, dry_run)
        if stop and pos.batch < r.batches:  # saved mid-epoch, at the exact position
            break
        result = end_epoch(r, epoch, images, seconds, emit, started, dry_run)
        if dry_run or pos.step >= r.total_steps:  # --max-steps or fractional --epochs: the end
            break
    # a stop after the last step changes nothing
    stopped = _stopping(r, stop) and pos.epoch < math.ceil(r.cfg.epochs) and pos.step < r.total_steps
    if stopped:
        emit({"kind": "stop", "reason": stop.reason, "epoch": pos.epoch + (pos.batch > 0),
              "batch": pos.batch, "step": pos.step,
              "run_dir": str(r.saver.path) if r.saver is not None else None})
    elif r.saver is not None and not dry_run:  # the weights last.pt just got (checked there)
        distributed.from_main(lambda: checkpoint.save_model_file(
            r.saver.file(MODEL), r.state.raw.state_dict(), r.meta, r.cfg.to_dict(),
            {k: result[k] for k in ("epoch", "test_loss", "test_acc") if k in result}))
    summary = {k: v for k, v in result.items() if k != "kind"}
    summary.update({"best_acc": pos.best_acc, "step": pos.step, "device": str(r.device),
                    "train_s_total": pos.train_s,
                    "run_dir": str(run_dir.path) if run_dir else None, "dry_run": dry_run,
                    "stopped": stop.reason if stopped else None})
    emit({"kind": "end", **summary})
    return summary


def _start_record(r: Run, run_dir: RunDir | None, dry_run: bool, resumed: bool) -> dict:
    return {"kind": "start", "device": runtime.describe_device(r.device),
            "precision": str(r.amp).removeprefix("torch.") if r.amp else "float32",
            "compile": r.cfg.compile_mode if r.cfg.compile else None,
            "dataset": r.data.spec.name,
            "source": r.data.source, "train_size": len(r.train),
            "val_size": len(r.val) if r.val is not None else 0, "test_size": len(r.test),
            "model": r.cfg.model, "params": models.count_parameters(r.state.raw),
            "epochs": r.cfg.epochs, "batches": r.batches, "batch_size": r.cfg.batch_size,
            "world_size": r.world.size,
            "left_out": batches.left_out(len(r.train), r.cfg.batch_size, r.world.size),
            "run_dir": str(run_dir.path) if run_dir else None, "dry_run": dry_run,
            "resume_at": [r.state.pos.epoch + 1, r.state.pos.batch] if resumed else None,
            "step": r.state.pos.step, "setup_s": r.setup_s, "data_s": r.data_s,
            "time": time.time()}  # wall clock: anchors the run's elapsed_s to the process's start


def _stopping(r: Run, stop: StopFlag, every: int = 1) -> bool:
    return stopping.agreed(stop, r.world.size, r.state.pos.step, every)


def _check_finite(r: Run, loss_sum: float, meter: step.Meter) -> None:
    stopping.check_finite(loss_sum, meter, r.state, r.cfg.lr, r.world.main)


def _save(r: Run, name: str) -> None:
    """Every rank comes here (the state gathers every rank's RNG state); rank 0 writes, and
    every rank learns whether that worked."""
    if r.saver is not None:
        stopping.check_weights(r.state)
        saved = r.state.state_dict()
        distributed.from_main(lambda: checkpoint.save_train_state(
            r.saver.file(name), saved, r.cfg.to_dict(), r.meta))


def _fold(r: Run, meter: step.Meter) -> None:
    """Move the epoch's device-side loss sum (summed over ranks) into the position: a sync."""
    loss_sum, samples = distributed.all_sum(*meter.read())
    _check_finite(r, loss_sum, meter)
    r.state.pos.epoch_loss_sum += loss_sum
    r.state.pos.epoch_samples += int(samples)
    meter.reset()


def train_epoch(r: Run, epoch: int, emit: Emit, stop: StopFlag, started: float,
                dry_run: bool) -> tuple[int, float]:
    """Train from the position's batch to the epoch's end (or a stop); returns (images, seconds)."""
    cfg, state, pos = r.cfg, r.state, r.state.pos
    state.model.train()
    if models.set_trainable_for_epoch(state.raw, cfg.model, epoch):
        state.model = distributed.wrap(state.raw, r.device)  # DDP hooks the new trainable set
    world, n_used = r.world.size, len(r.train) - batches.left_out(len(r.train), cfg.batch_size, r.world.size)
    global_batch = cfg.batch_size * world
    epoch_meter, log_meter = step.Meter(r.device, r.batches), step.Meter(r.device, r.batches)
    t0 = log_t0 = time.perf_counter()
    images = since_save = 0
    aug = batches.Augment(cfg.augment, cfg.crop_pad, cfg.pad_mode, cfg.flip)
    for b, (x, y) in enumerate(batches.train_batches(
            r.train, r.data.spec, cfg.batch_size, cfg.seed, epoch, aug, r.device,
            start=pos.batch, workers=cfg.workers, rank=r.world.rank, world=world), start=pos.batch):
        group = step.group_of(b, r.batches, cfg.grad_accum)
        is_step = b == group[-1]  # decided before the forward: DDP's no_sync needs it there
        # this batch's share of the step's samples over all ranks (x world: DDP averages ranks)
        group_samples = min(n_used, (group[-1] + 1) * global_batch) - group[0] * global_batch
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if pos.step == 0 and b == 0 and r.world.main:  # what the model sees (TensorBoard's grid)
            emit({"kind": "sample", "step": 0, "images": x[:64].detach().float().cpu()})
        loss = step.forward_backward(state.model, x, y, len(y) * world / group_samples,
                                     cfg.label_smoothing, is_step, r.amp, state.scaler)
        epoch_meter.add(loss, len(y))
        log_meter.add(loss, len(y))
        images, since_save, pos.batch = images + len(y), since_save + 1, b + 1
        if is_step:
            step.optimizer_step(state, cfg.clip_grad)
            if r.profiler is not None:
                r.profiler.step()
            if cfg.lookahead_every:
                step.lookahead_after_step(state, r.total_steps, cfg.lookahead_every, cfg.lookahead_decay)
            if cfg.compile and not r.compiled:  # time compilation apart from throughput
                images, t0 = _compiled(r, epoch_meter, t0, emit)
        if pos.batch % cfg.log_interval == 0:
            log_t0 = _log(r, epoch, log_meter, log_t0, started, emit)
        if is_step and (dry_run or pos.step >= r.total_steps):
            break
        stop_now = is_step and _stopping(r, stop, cfg.log_interval)
        if is_step and pos.batch < r.batches and (
                stop_now or (cfg.save_interval and since_save >= cfg.save_interval)):
            _fold(r, epoch_meter)
            pos.elapsed_s = time.perf_counter() - started
            _save(r, LAST)
            since_save = 0
            if stop_now:
                break
    _fold(r, epoch_meter)  # the sync: the device has finished the epoch's work...
    seconds = time.perf_counter() - t0  # ...so images/s is not overstated
    return int(distributed.all_sum(images)[0]), seconds


def _compiled(r: Run, meter: step.Meter, t0: float, emit: Emit) -> tuple[int, float]:
    """After the first step with --compile: report how long it took (the compilation), then
    restart the epoch's clock and image count."""
    r.compiled = True
    meter.read()  # wait for the device
    now = time.perf_counter()
    emit({"kind": "compile", "mode": r.cfg.compile_mode, "seconds": now - t0})
    return 0, now


def _log(r: Run, epoch: int, meter: step.Meter, t0: float, started: float, emit: Emit) -> float:
    loss_sum, samples = distributed.all_sum(*meter.read())  # sync first: the time covers the work
    _check_finite(r, loss_sum, meter)
    now = time.perf_counter()
    pos = r.state.pos
    emit({"kind": "train", "epoch": epoch + 1, "batch": pos.batch, "batches": r.batches,
          "step": pos.step, "lr": r.state.optimizer.param_groups[0]["lr"],
          "train_loss": loss_sum / samples, "images_per_s": samples / max(now - t0, 1e-9),
          "elapsed_s": now - started})
    meter.reset()
    return now


def end_epoch(r: Run, epoch: int, images: int, seconds: float, emit: Emit, started: float,
              dry_run: bool) -> dict:
    """Evaluate, record the epoch, write last.pt (and best.pt when it improved)."""
    cfg, pos = r.cfg, r.state.pos
    max_eval = 1 if dry_run else None
    tta = cfg.tta and (epoch + 1 >= math.ceil(cfg.epochs) or pos.step >= r.total_steps)  # the last
    t0 = time.perf_counter()
    distributed.broadcast_buffers(r.state.raw)  # every rank evaluates what rank 0 saves
    test = evaluate(r.state.raw, r.test, r.data.spec, cfg.test_batch_size, r.device, max_eval,
                    tta=tta, amp=r.amp)
    val = (evaluate(r.state.raw, r.val, r.data.spec, cfg.test_batch_size, r.device, max_eval,
                    amp=r.amp) if r.val is not None else None)
    eval_s = time.perf_counter() - t0  # evaluate() returns host numbers: the device is done
    train_loss = pos.epoch_loss_sum / max(pos.epoch_samples, 1)
    pos.epoch, pos.batch, pos.epoch_loss_sum, pos.epoch_samples = epoch + 1, 0, 0.0, 0
    pos.elapsed_s = time.perf_counter() - started
    pos.train_s += seconds
    acc = val["acc"] if val else test["acc"]
    improved = acc > pos.best_acc
    pos.best_acc = max(pos.best_acc, acc)
    record = {"kind": "epoch", "epoch": epoch + 1, "epochs": cfg.epochs, "step": pos.step,
              "lr": r.state.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
              "test_loss": test["loss"], "test_acc": test["acc"],
              "test_correct": test["correct"], "test_total": test["total"], "tta": tta,
              **({"val_loss": val["loss"], "val_acc": val["acc"]} if val else {}),
              "images_per_s": images / max(seconds, 1e-9), "train_s": seconds, "eval_s": eval_s,
              "elapsed_s": pos.elapsed_s}
    emit(record)
    if not dry_run:
        _save(r, LAST)
        if improved:
            _save(r, BEST)
    return record
