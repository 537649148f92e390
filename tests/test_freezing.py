"""--freeze backbone, --unfreeze-at, --backbone-lr-scale: a frozen backbone does not move (its
BatchNorm statistics neither), is not in the optimizer, and a resume across the release is exact."""

import shutil

import pytest
import torch
from test_cli_train import without_timing
from test_loop import loop_sink

from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store import checkpoint
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import freezing, loop

CFG = TrainConfig(dataset="fake", model="fast-cnn", epochs=2, batch_size=64, log_interval=5,
                  lr=0.05, momentum=0.9, weight_decay=5e-4, freeze="backbone")


def test_a_frozen_backbone_stays_bit_identical_while_the_head_trains(tmp_path):
    start = {k: v.clone() for k, v in loop.setup(CFG).state.raw.state_dict().items()}
    run = RunDir(tmp_path / "run")
    loop.train(CFG, run, run.metrics_sink())
    end = checkpoint.load(run.file("last.pt"))["model"]
    head = {"fc.weight", "fc.bias"}
    assert all(torch.equal(start[k], end[k]) for k in start if k not in head)  # BN stats too
    assert not any(torch.equal(start[k], end[k]) for k in head)
    job = loop.setup(CFG)
    in_optimizer = {id(p) for g in job.state.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(job.state.raw.fc.weight), id(job.state.raw.fc.bias)}
    freezing.start_epoch(job, 0)
    assert all(not m.training for m in job.frozen_norms) and len(job.frozen_norms) == 3
    start_line = [r for r in run.read_metrics() if r["kind"] == "start"][0]
    assert (start_line["params"], start_line["trainable"]) == (94_186, 1_290)


@pytest.mark.slow  # an end-to-end recipe of 15-17 s here
def test_a_resume_across_the_unfreeze_is_exact(tmp_path):
    cfg = TrainConfig(**{**CFG.to_dict(), "unfreeze_at": 1, "batch_size": 128,
                         "backbone_lr_scale": 0.1, "scheduler": "cosine"})  # 16 batches/epoch
    full, killed = RunDir(tmp_path / "full"), tmp_path / "killed"

    def kill_in_epoch_2(r):  # what a SIGKILL in epoch 2 leaves: epoch 1's end, saved frozen
        if r["kind"] == "train" and r["epoch"] == 2 and not killed.exists():
            shutil.copytree(full.path, killed)
    loop.train(cfg, full, loop_sink(full, kill_in_epoch_2))
    for stop_at in ((1, 10), (2, 0), (2, 10)):  # before the release, at it, after it
        cut = RunDir(tmp_path / f"cut{stop_at[0]}-{stop_at[1]}")
        if stop_at[1]:
            stop = loop.StopFlag()

            def stop_there(r, at=stop_at, flag=stop):
                if r["kind"] == "train" and (r["epoch"], r["batch"]) == at:
                    flag.request("test")
            loop.train(cfg, cut, loop_sink(cut, stop_there), stop=stop)
        else:
            shutil.copytree(killed, cut.path)
        saved = checkpoint.load(cut.file("last.pt"))
        assert stop_at[1] or saved["position"]["batch"] == 0
        cut.trim_metrics(saved["position"]["step"])
        loop.train(cfg, cut, cut.metrics_sink(), resume=saved)
        a, b = (checkpoint.load(r.file("last.pt"))["model"] for r in (full, cut))
        assert all(torch.equal(a[k], b[k]) for k in a), stop_at
        assert without_timing(full.read_metrics()) == without_timing(cut.read_metrics())
    job = loop.setup(cfg)
    freezing.start_epoch(job, 1)  # released: every parameter trains, the backbone at lr x 0.1
    groups = job.state.optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(job.state.raw.parameters()))
    assert {g["lr"] for g in groups if g.get("part") == "backbone"} == {0.05 * 0.1}
    assert all(m.training for m in job.frozen_norms)
