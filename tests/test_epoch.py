"""train_epoch(): its train records, steps and image count, a stop's checkpoint, the hooks."""

import math
import time

import torch

from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import epoch
from pytorch_cli.training.job import setup

# val_split 0.95 leaves 100 training images: 7 batches of 16 (the last one of 4), 3 steps
CFG = TrainConfig(dataset="fake", device="cpu", val_split=0.95, batch_size=16, grad_accum=3,
                  log_interval=2, epochs=1)


def _job():
    """A set-up job as loop.train drives it; returns it and the records it emits."""
    job, records = setup(CFG), []
    job.emit, job.started = records.append, time.perf_counter()
    return job, records


def test_an_epoch_logs_every_interval_steps_every_accumulation_and_counts_images():
    job, records = _job()
    images, seconds = epoch.train_epoch(job, 0)
    assert job.n_batches == 7 and images == len(job.train) == 100 and seconds > 0
    train = [r for r in records if r["kind"] == "train"]
    # at the steps (every --grad-accum batches: after 3, 6, 7) reaching a multiple of
    # --log-interval (2: 2 in the first, 4 and 6 in the second, none in the last)
    assert [r["batch"] for r in train] == [3, 6]
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["epoch"] == 1 and r["batches"] == 7 for r in train)
    assert all(math.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in train)
    assert job.state.pos.step == math.ceil(7 / 3) and job.state.pos.batch == 7
    assert job.state.pos.epoch_samples == 100  # the epoch's loss is folded into the position


def test_with_grad_accum_above_the_log_interval_each_step_is_one_record():
    job, records = _job()
    job.cfg.log_interval = 1
    epoch.train_epoch(job, 0)
    train = [r for r in records if r["kind"] == "train"]
    assert [(r["batch"], r["step"]) for r in train] == [(3, 1), (6, 2), (7, 3)]


def test_a_stop_request_ends_the_epoch_after_its_first_step_and_saves_that_position(tmp_path):
    job, _ = _job()
    run = RunDir(tmp_path / "r")
    run.create(job.cfg.to_dict())
    job.saver = run
    job.stop.request("SIGTERM")
    images, _ = epoch.train_epoch(job, 0)
    assert images == 3 * 16 and job.state.pos.step == 1  # one step: grad_accum batches
    saved = torch.load(run.file("last.pt"), weights_only=True)
    assert saved["position"]["batch"] == CFG.grad_accum and saved["position"]["step"] == 1
    weights = job.state.raw.state_dict()
    assert all(torch.equal(saved["model"][k], weights[k]) for k in weights)


def test_after_step_hooks_run_in_their_documented_order():
    names = [hook.__name__ for hook in epoch.AFTER_STEP]
    assert names == ["_profile", "_lookahead", "_ema"]
