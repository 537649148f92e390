import math
import time

import pytest
import torch

from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import loop, stopping


def test_the_stop_flag_keeps_its_first_reason():
    stop = stopping.StopFlag()
    assert not stop
    stop.request("SIGTERM")
    stop.request("SIGINT")
    assert stop and stop.reason == "SIGTERM"
    assert stopping.agreed(stop, world_size=1, step=7, every=5)  # alone: no agreement needed


def test_non_finite_weights_are_never_saved_over_the_last_good_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    job = loop.setup(TrainConfig(dataset="fake", epochs=2, save_interval=10))
    run.create(job.cfg.to_dict())
    job.saver, job.started = run, time.perf_counter()
    images, seconds = loop.train_epoch(job, 0)
    good = torch.load(run.file("last.pt"), weights_only=True)
    assert good["position"]["step"] == 30  # the mid-epoch saves at steps 10, 20, 30
    with torch.no_grad():
        next(job.state.raw.parameters())[0].fill_(math.nan)  # a last step that blew up
    with pytest.raises(stopping.NonFiniteLoss, match="weights became non-finite by step 32"):
        loop.end_epoch(job, 0, images, seconds)
    kept = torch.load(run.file("last.pt"), weights_only=True)
    assert kept["position"]["step"] == 30 and not run.file("best.pt").exists()
    assert all(t.isfinite().all() for t in kept["model"].values())
