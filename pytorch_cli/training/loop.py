"""The training loop: set the job up, then epochs (epoch.py) each followed by evaluation and
checkpoints, reported through `emit`. What is saved is in state.py, where it goes in rundir.py.
Who runs the loop (locks, sinks, signals, exit codes) is commands/session.py.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from pytorch_cli.data import batches, catalog
from pytorch_cli.models import adapt, zoo
from pytorch_cli.platform import distributed, runtime
from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.platform.events import Emit
from pytorch_cli.platform.signals import StopFlag
from pytorch_cli.store import checkpoint
from pytorch_cli.store.rundir import BEST, LAST, MODEL, TRACE, RunDir
from pytorch_cli.training import compiling, optim, profiling, stopping
from pytorch_cli.training.epoch import save, train_epoch
from pytorch_cli.training.evaluate import OutOfMemory, evaluate
from pytorch_cli.training.job import Job, setup

if TYPE_CHECKING:
    from pytorch_cli.settings.config import TrainConfig

__all__ = ["Job", "StopFlag", "end_epoch", "setup", "train", "train_epoch"]


def train(cfg: TrainConfig, run_dir: RunDir | None, emit: Emit, stop: StopFlag | None = None,
          resume: dict | None = None, dry_run: bool = False, profile: int = 0) -> dict:
    """Train per `cfg`, writing into `run_dir` (None: write nothing); returns the final summary.
    `resume`: a saved training state to continue from, at the batch after the one it saved.
    `profile`: profile that many steps after a warm-up (profiling.py)."""
    job = setup(cfg, resume)
    job.emit, job.dry_run, job.run_dir = emit, dry_run, run_dir
    job.stop = stop if stop is not None else StopFlag()  # (an unset flag is falsy)
    job.watch = compiling.Watch(cfg.compile, compiling.named(cfg), emit, step=job.state.pos.step)
    if run_dir is not None:  # rank 0 writes config.toml: the run's resolved settings
        distributed.from_main(lambda: run_dir.create(job.cfg.to_dict(), job.data.skipped))
        job.saver = run_dir if job.cfg.save_model else None
    trace = run_dir.file(TRACE) if run_dir is not None else None
    job.profiler = profiling.StepProfiler(profile if job.world.main else 0, job.device, trace,
                                          emit, job.state.pos.step)
    try:
        return _epochs(job, resumed=resume is not None)
    finally:
        job.profiler.close()


def _epochs(job: Job, resumed: bool) -> dict:
    pos, last_epoch = job.state.pos, math.ceil(job.cfg.epochs)
    job.emit(_start_record(job, resumed))
    job.started = time.perf_counter() - pos.elapsed_s
    if job.watch.on:  # evaluation's compile, before the first step rather than in its eval_s
        try:
            _evaluate(job, job.test, max_batches=1)
        except OutOfMemory as e:
            raise _evaluation_out_of_memory(job, e, None) from None
    result: dict = {}
    cut = False  # a stop cut an evaluation short
    for epoch in range(pos.epoch, last_epoch):  # a fractional last one ends at total_steps
        if _stopping(job) or (pos.step >= job.total_steps and not pos.batch):
            break
        if _trained(job):  # saved by a stop during its evaluation: evaluated now
            images, seconds = pos.epoch_samples, pos.epoch_train_s
        else:
            images, seconds = train_epoch(job, epoch)
        if job.stop and pos.batch < job.n_batches and pos.step < job.total_steps:
            break  # saved mid-epoch, at the exact position
        record = end_epoch(job, epoch, images, seconds)
        cut = record is None
        if cut:
            break
        result = record
        if job.dry_run or pos.step >= job.total_steps or pos.early_stop:  # --max-steps,
            break  # a fractional --epochs, --patience
    # a stop after the last step's evaluation changes nothing
    stopped = cut or (_stopping(job) and pos.epoch < last_epoch and pos.step < job.total_steps)
    if stopped and pos.step == 0 and pos.batch == 0:  # before its first step: resume from here
        save(job, LAST)
    if stopped:
        job.emit({"kind": "stop", "reason": job.stop.reason, "epoch": pos.epoch + (pos.batch > 0),
                  "batch": pos.batch, "step": pos.step,
                  "run_dir": str(job.saver.path) if job.saver is not None else None})
    elif job.saver is not None and not job.dry_run:  # the weights last.pt just got (checked)
        # the summary is of model.pth: after --patience, the best epoch's (a hostile trial's
        # script read the last epoch's 58.00% where model.pth, and eval, gave 56.67%)
        last = result  # the run's own time, not the best epoch's
        result = distributed.from_main(lambda: _save_model(job, result))
        result = {**result, **{k: last[k] for k in ("elapsed_s", "time") if k in last}}
    if pos.early_stop and not stopped:
        job.emit(_early_stop_record(job))
    summary = {k: v for k, v in result.items() if k != "kind"}
    # in batches: a fraction's last step is whole (--grad-accum 3, 32 batches: 1.5 trains 50)
    full, rest = divmod(pos.step, job.steps_per_epoch)
    trained = full + min(rest * job.cfg.grad_accum, job.n_batches) / job.n_batches
    # a --max-steps cut: 0.31, 0.0002 (1 of CIFAR's 5,000 steps at batch 10), never "0 epochs"
    trained = round(trained, 2) if trained >= 0.01 else float(f"{trained:.1g}")
    summary.update({"epochs_trained": trained,
                    # none evaluated yet: no best (its -1 is the state's "below any")
                    "best_acc": pos.best_acc if pos.best_epoch else None,
                    "step": pos.step, "device": str(job.device),
                    "train_s_total": pos.train_s + pos.epoch_train_s,  # an epoch's part too
                    "compile_s": job.watch.seconds,
                    "run_dir": str(job.run_dir.path) if job.run_dir else None,
                    "dry_run": job.dry_run, "stopped": job.stop.reason if stopped else None,
                    "early_stop": pos.early_stop or None, "best_epoch": pos.best_epoch})
    job.emit({"kind": "end", **summary})
    return summary


def _save_model(job: Job, result: dict) -> dict:
    """model.pth: the run's last weights, or after --patience ended it, the best epoch's (those
    best.pt holds) with that epoch's record, read back from metrics.jsonl; returns the record
    of the weights saved (the best one marked `model_epoch`)."""
    weights, figures = job.state.evaluated.state_dict(), result
    if job.state.pos.early_stop and job.saver.file(BEST).exists():
        weights = checkpoint.weights(checkpoint.load(job.saver.file(BEST)))
        figures = next(({**r, "model_epoch": r["epoch"]} for r in reversed(
            job.saver.read_metrics()) if r.get("kind") == "epoch" and
            r.get("epoch") == job.state.pos.best_epoch), result)
    checkpoint.save_model_file(job.saver.file(MODEL), weights, job.meta, job.cfg.to_dict(),
                               {k: figures[k] for k in ("epoch", "test_loss", "test_acc")
                                if k in figures})
    return figures


def _early_stop_record(job: Job) -> dict:
    cfg, pos = job.cfg, job.state.pos
    return {"kind": "early_stop", "epoch": pos.early_stop, "patience": cfg.patience,
            "min_delta": cfg.min_delta, "metric": "val_acc" if job.val is not None else "test_acc",
            "best_epoch": pos.best_epoch, "best_acc": pos.best_acc, "tta": cfg.tta,
            "model": MODEL if job.saver is not None else None}


def _start_record(job: Job, resumed: bool) -> dict:
    cfg, pos = job.cfg, job.state.pos
    return {"kind": "start", "device": runtime.describe_device(job.device),
            "precision": runtime.precision_name(job.amp),
            "compile": compiling.named(cfg) if cfg.compile else None,
            "dataset": job.data.spec.name,
            "source": job.data.source, "train_size": len(job.train),
            "val_size": len(job.val) if job.val is not None else 0, "test_size": len(job.test),
            "model": cfg.model, "params": zoo.count_parameters(job.state.raw), "flops": job.flops,
            "trainable": adapt.trainable(job.state.raw),
            "weights": job.transfer.describe() if job.transfer else None,
            "epochs": cfg.epochs, "batches": job.n_batches, "batch_size": cfg.batch_size,
            "world_size": job.world.size,
            "left_out": batches.left_out(len(job.train), cfg.batch_size, job.world.size,
                                         job.least_batch), "least_batch": job.least_batch,
            "run_dir": str(job.run_dir.path) if job.run_dir else None, "dry_run": job.dry_run,
            "resume_at": [pos.epoch + 1, pos.batch] if resumed else None,
            "step": pos.step, "setup_s": job.setup_s, "data_s": job.data_s,
            "time": time.time()}  # wall clock: anchors the run's elapsed_s to the process's start


def _trained(job: Job) -> bool:
    """Whether the position's epoch has trained all it will (its evaluation still to come)."""
    pos = job.state.pos
    return pos.batch >= job.n_batches or (pos.batch > 0 and pos.step >= job.total_steps)


def _evaluation_out_of_memory(job: Job, e: OutOfMemory, seconds: float | None) -> PtrainError:
    """The epoch trained (for `seconds`; None: nothing trained yet, the compile's evaluation),
    then its evaluation ran out of memory: save that position, as a stop during an evaluation
    does (one process: a save is every rank's step), so that a resume with a smaller
    --test-batch-size evaluates it and goes on: no training is lost."""
    pos, smaller = job.state.pos, max(1, job.cfg.test_batch_size // 4)
    saved = (seconds is not None and job.saver is not None and not job.dry_run
             and job.world.size == 1)
    if saved:
        pos.epoch_train_s, pos.elapsed_s = seconds, time.perf_counter() - job.started
        save(job, LAST)
    advice = (f"the epoch's training is saved: continue with `ptrain resume {job.saver.path} "
              f"--test-batch-size {smaller}`" if saved else
              f"use a smaller --test-batch-size ({smaller}, say)")
    return PtrainError(f"{e}; {advice}")


def _stopping(job: Job) -> bool:
    return stopping.agreed(job.stop, job.world.size, job.state.pos.step)


def _evaluate(job: Job, split, max_batches: int | None, tta: bool = False,
              stoppable: bool = False) -> dict:
    # A stop between evaluation batches: every rank votes every EVAL_VOTE batches
    stop = (lambda i: stopping.agreed(job.stop, job.world.size, i, EVAL_VOTE)) if stoppable \
        else None
    views = catalog.tta_views_of(job.cfg.augment, job.data.spec) if tta else ""
    return evaluate(job.state.evaluated, split, job.data.spec, job.cfg.test_batch_size, job.device,
                    max_batches, tta=views, amp=job.amp, watch=job.watch, stop=stop)


EVAL_VOTE = 8  # batches of 1000 images: a collective per ~0.1 s of a small net's evaluation


def end_epoch(job: Job, epoch: int, images: int, seconds: float) -> dict | None:
    """Evaluate, record the epoch, write last.pt (and best.pt when it improved). A stop during
    the evaluation saves the epoch's trained position (its last batch done) and returns None:
    the resumed run evaluates it."""
    cfg, pos = job.cfg, job.state.pos
    max_eval = 1 if job.dry_run else None
    last = epoch + 1 >= math.ceil(cfg.epochs) or pos.step >= job.total_steps
    t0, compiled_before = time.perf_counter(), job.watch.seconds
    distributed.broadcast_buffers(job.state.raw)  # every rank evaluates what rank 0 saves
    if job.state.ema is not None:  # (its buffers follow each rank's own statistics)
        distributed.broadcast_buffers(job.state.ema)
    try:
        test = _evaluate(job, job.test, max_eval, tta=cfg.tta and last, stoppable=True)
        val = _evaluate(job, job.val, max_eval, stoppable=True) if job.val is not None else None
    except stopping.Stopped:
        pos.epoch_train_s, pos.elapsed_s = seconds, time.perf_counter() - job.started
        if not job.dry_run:
            save(job, LAST)
        return None
    except OutOfMemory as e:
        raise _evaluation_out_of_memory(job, e, seconds) from None
    # evaluate() returns host numbers: the device is done; compiles are timed apart
    eval_s = time.perf_counter() - t0 - (job.watch.seconds - compiled_before)
    train_loss = pos.epoch_loss_sum / max(pos.epoch_samples, 1)
    done = pos.batch  # of n_batches: fewer where --max-steps or a fractional --epochs cut it
    pos.epoch, pos.batch, pos.epoch_loss_sum, pos.epoch_samples = epoch + 1, 0, 0.0, 0
    pos.epoch_train_s, pos.log_loss_sum, pos.log_samples, pos.log_s = 0.0, 0.0, 0, 0.0
    pos.elapsed_s = time.perf_counter() - job.started
    pos.train_s += seconds
    acc = val["acc"] if val else test["acc"]
    improved = acc > pos.best_acc
    pos.best_acc = max(pos.best_acc, acc)
    pos.best_epoch = epoch + 1 if improved else pos.best_epoch
    if stopping.out_of_patience(pos, acc, cfg.patience, cfg.min_delta) and not last:
        pos.early_stop = epoch + 1
    record = {"kind": "epoch", "epoch": epoch + 1, "epochs": cfg.epochs, "step": pos.step,
              "batch": done, "batches": job.n_batches,
              "lr": job.state.lr, "train_loss": train_loss,
              "test_loss": test["loss"], "test_acc": test["acc"],
              "test_correct": test["correct"], "test_total": test["total"],
              "tta": cfg.tta and last,
              **({"val_loss": val["loss"], "val_acc": val["acc"]} if val else {}),
              "images_per_s": images / max(seconds, 1e-9), "train_s": seconds, "eval_s": eval_s,
              "elapsed_s": pos.elapsed_s}
    job.emit(record)  # its lr: the epoch's, before plateau lowers it for the next
    if optim.on_metric(job.state.scheduler):  # before last.pt: its state is saved with it
        job.state.scheduler.step(acc)
    if not job.dry_run:
        save(job, LAST)
        if improved:
            save(job, BEST)
    return record
