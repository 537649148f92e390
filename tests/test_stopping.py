import math
import time

import pytest
import torch

from pytorch_cli import loop, stopping
from pytorch_cli.config import TrainConfig, to_toml
from pytorch_cli.rundir import RunDir


def test_the_stop_flag_keeps_its_first_reason():
    stop = stopping.StopFlag()
    assert not stop
    stop.request("SIGTERM")
    stop.request("SIGINT")
    assert stop and stop.reason == "SIGTERM"
    assert stopping.agreed(stop, world_size=1, step=7, every=5)  # alone: no agreement needed


def test_non_finite_weights_are_never_saved_over_the_last_good_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    r = loop.setup(TrainConfig(dataset="fake", epochs=2, save_interval=10))
    run.create(to_toml(r.cfg))
    r.saver = run
    images, seconds = loop.train_epoch(r, 0, lambda record: None, stopping.StopFlag(),
                                       time.perf_counter(), False)
    good = torch.load(run.file("last.pt"), weights_only=True)
    assert good["position"]["step"] == 30  # the mid-epoch saves at steps 10, 20, 30
    with torch.no_grad():
        next(r.state.raw.parameters())[0].fill_(math.nan)  # a last step that blew up
    with pytest.raises(stopping.NonFiniteLoss, match="weights became non-finite by step 32"):
        loop.end_epoch(r, 0, images, seconds, lambda record: None, time.perf_counter(), False)
    kept = torch.load(run.file("last.pt"), weights_only=True)
    assert kept["position"]["step"] == 30 and not run.file("best.pt").exists()
    assert all(t.isfinite().all() for t in kept["model"].values())
