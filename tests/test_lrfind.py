"""ptrain lr-find (training/lrfind.py): the LR grows exponentially step by step, the suggestion is
the steepest fall of the smoothed loss, and no run directory is touched."""

import math
import random

import pytest

from pytorch_cli.training import lrfind


def test_the_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = [10 ** (i / 10 - 5) for i in range(50)]
    # flat, a fall steepest at i = 20, a minimum at i = 30, then divergence
    loss = [2.0 - 1.5 / (1 + math.exp(-(i - 20) / 2)) if i <= 30 else 0.5 + (i - 30) for i in
            range(50)]
    found = lrfind.suggest(lrs, loss, loss)
    assert found["suggested"] == lrs[20] and found["minimum"] == lrs[30]
    assert lrfind.suggest(lrs[:2], loss[:2], loss[:2])["suggested"] is None  # too few to tell
    up = [0.5 + i for i in range(50)]
    rising = lrfind.suggest(lrs, up, up)
    assert rising["suggested"] is None and rising["unsuggested"] == (
        "the smoothed loss only rose from its start (LR 3.16e-05): no LR to suggest; a lower "
        "--start-lr may find where it falls, while a trained model (--init-from) may gain "
        "nothing at any LR")


def _noisy(fall: float, dip: float = 0.0) -> tuple[list, list, list]:
    """100 steps of batch losses scattered by 0.1 around 1 (seeded), falling by `fall` (steepest
    at step 40), their first `dip` points lower; the LRs, losses, fastai-smoothed."""
    g = random.Random(0)
    lrs = [10 ** (i / 10 - 7) for i in range(100)]
    losses = [1 - fall / (1 + math.exp(-(i - 40) / 3)) + g.gauss(0, 0.1) - (dip if i < 2 else 0)
              for i in range(100)]
    smoothed, average = [], 0.0
    for i, x in enumerate(losses):
        average = lrfind.SMOOTHING * average + (1 - lrfind.SMOOTHING) * x
        smoothed.append(average / (1 - lrfind.SMOOTHING ** (i + 1)))
    return lrs, losses, smoothed


def test_a_curve_that_never_falls_beyond_its_noise_suggests_nothing_and_says_why():
    """A hostile trial's --start-lr 1e-300 suggested 1.3e-300 from a flat curve's noise: no
    suggestion where the fall is within the noise, one where it is 3 batches' scatter."""
    lrs, losses, smoothed = _noisy(0.0)
    flat = lrfind.suggest(lrs, smoothed, losses)
    assert flat["suggested"] is None and "never fell beyond its noise" in flat["unsuggested"]
    lrs, losses, smoothed = _noisy(0.3)
    assert lrs[40] <= lrfind.suggest(lrs, smoothed, losses)["suggested"]  # the average lags
    # the first tenth is skipped, as fastai does: single batches, the average still settling
    lrs, losses, smoothed = _noisy(0.3, dip=0.5)
    found = lrfind.suggest(lrs, smoothed, losses)
    assert found["suggested"] >= lrs[40] and found["minimum"] >= lrs[40]
    # a short test reads the noise from 8 points, not a tenth's 2 (it had suggested 1.6e-12
    # from --steps 20 at 1e-12, where 100 steps said "never fell beyond its noise")
    lrs, losses, smoothed = (x[:20] for x in _noisy(0.0))
    assert "never fell beyond its noise" in lrfind.suggest(lrs, smoothed, losses)["unsuggested"]
    few = lrfind.suggest(lrs[:8], smoothed[:8], losses[:8])
    assert few["suggested"] is None and "8 steps are too few" in few["unsuggested"]


def _files(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_lr_find_grows_the_lr_suggests_one_and_leaves_every_run_as_it_was(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--max-steps", "3").code == 0
    before = _files(tmp_path)
    r = ptrain("lr-find", "--dataset", "fake", "--steps", "40", "--start-lr", "1e-5",
               "--end-lr", "100", "--json", "--plot", str(tmp_path / "out" / "lr.png"))
    assert r.code == 0, r.err
    out = r.json()
    lrs = out["lr"]
    assert lrs[0] == 1e-5 and all(b / a > 1.3 for a, b in zip(lrs, lrs[1:]))  # x 1.5 a step
    assert len(lrs) < 40 or lrs[-1] > 50  # it ran to the end or stopped when the loss diverged
    assert 1e-5 <= out["suggested"] <= lrs[-1] and out["model"] == "lenet"
    assert (tmp_path / "out" / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert [f for f in _files(tmp_path) if not f[0].startswith("out")] == before
    said = ptrain("lr-find", "--dataset", "fake", "--steps", "10", "--ema", "0.9", "--patience",
                  "2")  # a run's settings: named as not used, never silently dropped
    table = said.out
    assert table.startswith("LR range test: lenet on fake, sgd, batch 64") and \
        "suggested --lr " in table
    assert "warning: lr-find does not use --ema, --patience: the test takes" in said.err
    said = ptrain("lr-find", "--dataset", "fake", "--steps", "5", "--tensorboard",
                  "--no-save-model", "--epochs", "2")  # it writes nothing (they were silent)
    assert "lr-find does not use --epochs, --no-save-model, --tensorboard: the test" in said.err
    for end in ("0.1", "inf", "1e308", "nan"):  # 1e308: every step's LR was inf
        bad = ptrain("lr-find", "--dataset", "fake", "--start-lr", "1", "--end-lr", end)
        assert bad.code == 2 and "--start-lr must be above 0 and below --end-lr" in bad.err
    for start in ("nan", "-1"):  # NaN had been "greater than or equal to 0"
        bad = ptrain("lr-find", "--dataset", "fake", "--start-lr", start)
        assert bad.code == 2 and "--start-lr must be above 0" in bad.err, bad.err
    flat = ptrain("lr-find", "--dataset", "fake", "--start-lr", "1e-12", "--end-lr", "1e-10",
                  "--plot", str(tmp_path / "flat.svg"))  # LRs too small to move the loss
    assert flat.code == 0 and "smoothed loss never fell beyond its noise" in flat.out
    assert b"suggested" not in (tmp_path / "flat.svg").read_bytes()  # no line drawn


def test_grad_accumulation_makes_each_step_of_the_batch_it_adds_up_to(ptrain):
    """Batch 16 x --grad-accum 4 is batch 64's test (it was batch 16's, the flag dropped)."""
    runs = [ptrain("lr-find", "--dataset", "fake", "--steps", "5", "--json", *flags).json()
            for flags in (["--batch-size", "64"], ["--batch-size", "16", "--grad-accum", "4"],
                          ["--batch-size", "16"])]
    assert runs[1]["loss"] == pytest.approx(runs[0]["loss"], rel=1e-5)
    assert runs[2]["loss"] != pytest.approx(runs[0]["loss"], rel=1e-5)


def test_under_torchrun_it_is_one_line_not_a_whole_test_on_every_rank(ptrain, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = ptrain("lr-find", "--dataset", "fake")
    assert r.code == 2 and r.err.startswith("ptrain: error: lr-find runs in one process")
    monkeypatch.setenv("RANK", "1")  # the other worker: the same exit, the line said once
    r = ptrain("lr-find", "--dataset", "fake")
    assert r.code == 2 and r.err == ""
