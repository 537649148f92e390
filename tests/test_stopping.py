import math
import time

import pytest
import torch

from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import loop, step, stopping
from pytorch_cli.training.state import Position


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


def _state(scaler=None):
    job = loop.setup(TrainConfig(dataset="fake", model="mnist-cnn"))
    job.state.scaler = scaler
    return job.state


def test_finite_weights_pass_and_one_nan_weight_stops_the_save():
    state = _state()
    stopping.check_weights(state)  # finite: saved
    with torch.no_grad():
        list(state.raw.parameters())[-1][-1] = math.nan  # one number of the last bias
    assert not stopping.weights_finite(state.raw)
    with pytest.raises(stopping.NonFiniteLoss, match="weights became non-finite") as e:
        stopping.check_weights(state)
    assert e.value.exit_code == 3


def test_float16_runs_with_a_skipped_step_go_on_unless_the_weights_broke():
    state = _state(scaler=torch.amp.GradScaler("cpu"))
    meter = step.Meter(torch.device("cpu"))
    meter.add(torch.tensor(math.inf), 8)  # the scaler skipped that step: the weights are fine
    stopping.check_finite(math.inf, meter, state, 0.1, main=True)
    with torch.no_grad():
        next(state.raw.parameters()).view(-1)[0] = math.inf
    with pytest.raises(stopping.NonFiniteLoss, match="became infinite") as e:
        stopping.check_finite(math.inf, meter, state, 0.1, main=True)
    assert e.value.exit_code == 3


def test_patience_counts_epochs_without_a_gain_over_min_delta():
    pos = Position()
    ends = [stopping.out_of_patience(pos, a, 2, 0.0) for a in (0.5, 0.6, 0.59, 0.6, 0.58)]
    assert ends == [False, False, False, True, True] and pos.gained_at == 0.6  # 0.6 twice: no gain
    pos = Position()  # 0.54 is no gain over 0.5 + 0.05; 0.58 is, and counts from there
    ends = [stopping.out_of_patience(pos, a, 2, 0.05) for a in (0.5, 0.54, 0.58, 0.6)]
    assert ends == [False, False, False, False] and (pos.gained_at, pos.stale_epochs) == (0.58, 1)
    pos = Position()
    assert not any(stopping.out_of_patience(pos, a, 0, 0.0) for a in (0.5, 0.4, 0.3))  # 0: off
