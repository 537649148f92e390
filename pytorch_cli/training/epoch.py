"""One epoch of training: from the position's batch to the epoch's end, a stop, or the run's last
step. Each batch is the same short sequence, and its order is what keeps resume exact:

  1. micro-batch  forward/backward with its share of the step's samples; meters; position
  2. step         on a step's last micro-batch: the optimizer step, then the hooks in AFTER_STEP
  3. log          every --log-interval batches (a host sync: the loss is read here)
  4. end          a dry run, --max-steps or fractional --epochs ends at this step
  5. checkpoint   mid-epoch last.pt every --save-interval batches, or the stop flag (which
                  every rank votes on, at the same steps) saves the exact position and returns

Host syncs happen only at log intervals, checkpoints and the epoch's end (Meter.read).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from pytorch_cli.data import augment, batches, mixing
from pytorch_cli.platform import distributed
from pytorch_cli.store import checkpoint
from pytorch_cli.store.rundir import LAST
from pytorch_cli.training import freezing, step, stopping
from pytorch_cli.training.job import Job


@dataclass
class Tally:
    """One epoch's counters."""
    epoch_meter: step.Meter
    log_meter: step.Meter
    n_used: int  # images of the epoch some rank trains on (a ragged tail may sit out)
    carried_s: float  # the epoch's training seconds before this session (a resume)
    compiled_before: float  # the compile seconds so far: compiles are timed apart
    t0: float = field(default_factory=time.perf_counter)  # the epoch's clock
    log_t0: float = field(default_factory=time.perf_counter)
    since_save: int = 0  # batches since the last checkpoint

    def seconds(self, job: Job) -> float:
        """The epoch's training seconds so far, this session's and before."""
        compiled = job.watch.seconds - self.compiled_before
        return self.carried_s + time.perf_counter() - self.t0 - compiled


def train_epoch(job: Job, epoch: int) -> tuple[int, float]:
    """Train from the position's batch to the epoch's end (or a stop); returns (images over all
    ranks, seconds)."""
    freezing.start_epoch(job, epoch)
    n, pos = len(job.train), job.state.pos
    tally = Tally(step.Meter(job.device), step.Meter(job.device),
                  n - batches.left_out(n, job.cfg.batch_size, job.world.size, job.least_batch),
                  pos.epoch_train_s, job.watch.seconds)
    tally.log_t0 -= pos.log_s  # a log interval cut by a save goes on where it was
    for b, (x, y) in enumerate(epoch_batches(job, epoch), start=job.state.pos.batch):
        is_step = _micro_batch(job, tally, b, x, y)
        if is_step:
            _after_step(job, tally)
        if is_step and _log_due(job, b):
            tally.log_t0 = log(job, epoch, tally.log_meter, tally.log_t0)
        if is_step and (job.dry_run or job.state.pos.step >= job.total_steps):
            break
        if is_step and _checkpoint_or_stop(job, tally):
            break
    fold(job, tally.epoch_meter)  # the sync: the device has finished the epoch's work...
    return pos.epoch_samples, tally.seconds(job)  # ...so images/s is not overstated


def _log_due(job: Job, b: int) -> bool:
    """Whether the optimizer step that ends at batch `b` reached a multiple of --log-interval
    batches: records fall on steps, each step in one at most (with --grad-accum 4 and
    --log-interval 10, at batches 12, 20, 32...), and a record's loss is whole steps'."""
    every = job.cfg.log_interval
    return (b + 1) // every > step.group_of(b, job.n_batches, job.cfg.grad_accum)[0] // every


def epoch_batches(job: Job, epoch: int):
    """The epoch's training batches from the position's batch on, as the settings make them."""
    cfg = job.cfg
    aug = augment.Augment(cfg.augment, cfg.crop_pad, cfg.pad_mode, cfg.flip, cfg.random_erasing,
                          cfg.crop_scale)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return batches.train_batches(job.train, job.data.spec, cfg.batch_size, cfg.seed, epoch, aug,
                                 job.device, start=job.state.pos.batch, workers=cfg.workers,
                                 rank=job.world.rank, world=job.world.size, memory_format=layout,
                                 mix_with=mixing.Mix(cfg.mixup, cfg.cutmix, cfg.mix_prob),
                                 least=job.least_batch)


def _micro_batch(job: Job, tally: Tally, b: int, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Forward/backward of batch `b`; returns whether it is its optimizer step's last."""
    cfg, pos, world = job.cfg, job.state.pos, job.world.size
    group = step.group_of(b, job.n_batches, cfg.grad_accum)
    is_step = b == group[-1]  # decided before the forward: DDP's no_sync needs it there
    # this batch's share of the step's samples over all ranks (x world: DDP averages ranks)
    global_batch = cfg.batch_size * world
    group_samples = min(tally.n_used, (group[-1] + 1) * global_batch) - group[0] * global_batch
    if pos.step == 0 and b == 0 and job.world.main:  # what the model sees (TensorBoard's grid)
        job.emit({"kind": "sample", "step": 0, "images": x[:64].detach().float().cpu()})
    with job.watch("the training step", pos.step + 1):
        loss = step.forward_backward(job.state.model, job.watch.batch(x), y,
                                     len(y) * world / group_samples, cfg.label_smoothing,
                                     is_step, job.amp, job.state.scaler, job.class_weight)
    tally.epoch_meter.add(loss, len(y))
    tally.log_meter.add(loss, len(y))
    tally.since_save, pos.batch = tally.since_save + 1, b + 1
    return is_step


def _lookahead(job: Job, tally: Tally) -> None:
    if job.cfg.lookahead_every:
        step.lookahead_after_step(job.state, job.total_steps, job.cfg.lookahead_every,
                                  job.cfg.lookahead_decay)


def _profile(job: Job, tally: Tally) -> None:
    if job.profiler is not None:
        job.profiler.step()


def _ema(job: Job, tally: Tally) -> None:
    if job.state.ema is not None:
        step.ema_update(job.state, job.cfg.ema)


# After each optimizer step, in this order: the profiler counts the step just taken; lookahead
# moves the weights that step made (before anything reads them); --ema averages them.
AFTER_STEP = (_profile, _lookahead, _ema)


def _after_step(job: Job, tally: Tally) -> None:
    step.optimizer_step(job.state, job.cfg.clip_grad)
    for hook in AFTER_STEP:
        hook(job, tally)


def _checkpoint_or_stop(job: Job, tally: Tally) -> bool:
    """After a step: save last.pt mid-epoch when --save-interval batches passed or the ranks
    agree to stop (then return True: the position saved is exact). At the epoch's last batch the
    epoch's end saves instead."""
    pos = job.state.pos
    stop_now = stopping.agreed(job.stop, job.world.size, pos.step, job.cfg.log_interval)
    interval = job.cfg.save_interval and tally.since_save >= job.cfg.save_interval
    if pos.batch >= job.n_batches or not (stop_now or interval):
        return False
    fold(job, tally.epoch_meter)
    _carry_log(job, tally)
    pos.epoch_train_s, pos.elapsed_s = tally.seconds(job), time.perf_counter() - job.started
    save(job, LAST)
    tally.since_save = 0
    return stop_now


def save(job: Job, name: str) -> None:
    """Every rank comes here (the state gathers every rank's RNG state); rank 0 writes, and
    every rank learns whether that worked."""
    if job.saver is not None:
        stopping.check_weights(job.state)
        saved = job.state.state_dict()
        distributed.from_main(lambda: checkpoint.save_train_state(
            job.saver.file(name), saved, job.cfg.to_dict(), job.meta))


def _read(job: Job, meter: step.Meter, carried: float) -> tuple[float, int]:
    """A meter's losses over all ranks, summed on from `carried` (by rank 0 alone: the others
    hold the same total): a sync."""
    loss_sum, samples = distributed.all_sum(*meter.read(carried if job.world.main else 0.0))
    stopping.check_finite(loss_sum, meter, job.state, job.cfg.lr, job.world.main)
    meter.reset()
    return loss_sum, int(samples)


def fold(job: Job, meter: step.Meter) -> None:
    """Move the epoch's device-side loss sum (summed over ranks) into the position: a sync."""
    pos = job.state.pos
    pos.epoch_loss_sum, samples = _read(job, meter, pos.epoch_loss_sum)
    pos.epoch_samples += samples


def _carry_log(job: Job, tally: Tally) -> None:
    """At a mid-epoch save, the log interval so far goes into the position: a run resumed there
    logs the train record the uninterrupted run logs."""
    pos = job.state.pos
    pos.log_loss_sum, samples = _read(job, tally.log_meter, pos.log_loss_sum)
    pos.log_samples += samples
    pos.log_s = time.perf_counter() - tally.log_t0


def log(job: Job, epoch: int, meter: step.Meter, t0: float) -> float:
    """A "train" record of the batches since the last one; returns its time."""
    pos = job.state.pos
    loss_sum, samples = _read(job, meter, pos.log_loss_sum)  # sync first: the time covers the work
    samples += pos.log_samples
    pos.log_loss_sum, pos.log_samples, pos.log_s = 0.0, 0, 0.0
    now = time.perf_counter()
    job.emit({"kind": "train", "epoch": epoch + 1, "batch": pos.batch, "batches": job.n_batches,
              "step": pos.step, "lr": job.state.lr,
              "train_loss": loss_sum / samples, "images_per_s": samples / max(now - t0, 1e-9),
              "elapsed_s": now - job.started})
    return now
