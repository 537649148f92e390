"""The loop: stopping at a step boundary, --workers, timing, dry runs."""

import dataclasses
import functools
import math
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import read_metrics
from test_cli_train import without_timing

from pytorch_cli.models import nets, zoo
from pytorch_cli.platform import runtime
from pytorch_cli.settings import config
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store import checkpoint
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import compiling, epoch, loop, step

CFG = TrainConfig(dataset="fake", model="mnist-cnn", epochs=2, batch_size=32, log_interval=4,
                  deterministic=True, augment="crop", scheduler="cosine", grad_accum=2)


def _weights(run: RunDir) -> dict:
    return checkpoint.load(run.file("last.pt"))["model"]


AIRBENCH_PARTS = {"lookahead_every": 3, "augment": "crop-flip", "flip": "alternate",
                  "pad_mode": "reflect", "scheduler": "linear", "warmup_start": 0.2,
                  "final_lr": 0.07, "warmup_epochs": 0.5, "tta": True}


@pytest.mark.parametrize("precision,model,extra", [("32", "lenet", {}),  # its dropouts too
                                                   # CPU float16 is slow: stop in epoch 1
                                                   ("16", "lenet", {"epochs": 0.4}),
                                                   ("32", "lenet", AIRBENCH_PARTS)])
def test_stop_flag_saves_the_exact_position_and_resume_finishes_identically(
        tmp_path, monkeypatch, precision, model, extra):
    # a log every 5 batches (at the steps reaching them: after 6, 10, 16...), a step every 2:
    # the stop falls inside a log interval; half of the second epoch is enough to stop in it
    cfg = TrainConfig(**{**CFG.to_dict(), "precision": precision, "model": model,
                         "log_interval": 5, "epochs": 1.5, **extra})
    at = math.ceil(cfg.epochs)  # the epoch the stop falls in
    full = RunDir(tmp_path / "full")
    loop.train(cfg, full, full.metrics_sink())

    cut = RunDir(tmp_path / "cut")
    stop = loop.StopFlag()
    events = []
    micro_batch = epoch._micro_batch

    def stop_in_epoch(job, tally, b, x, y):  # as a signal handler would, inside a step group
        if job.state.pos.epoch == at - 1 and b == 10:  # the step of batches 10 and 11
            stop.request("test")
        return micro_batch(job, tally, b, x, y)
    monkeypatch.setattr(epoch, "_micro_batch", stop_in_epoch)
    summary = loop.train(cfg, cut, loop_sink(cut, events.append), stop=stop)
    monkeypatch.undo()
    assert summary["stopped"] == "test" and not cut.file("model.pth").exists()
    steps_before = 32 * (at - 1) + 6
    assert events[-2] == {"kind": "stop", "reason": "test", "epoch": at, "batch": 12,
                          "step": steps_before, "run_dir": str(cut.path)}
    saved = checkpoint.load(cut.file("last.pt"))
    position = saved["position"]  # the log interval from batch 10 holds 2 batches of 32
    assert (position["epoch"], position["batch"], position["log_samples"]) == (at - 1, 12, 64)

    if precision == "16":  # the GradScaler's scale is saved and restored, not started afresh
        assert saved["scaler"]["_growth_tracker"] == steps_before and saved["scaler"]["scale"] > 0
        restored = loop.setup(cfg, resume=saved).state.scaler.state_dict()
        assert restored == saved["scaler"]
    assert ("ema" in saved) == ("lookahead_every" in extra)  # the lookahead average is saved too
    cut.trim_metrics(saved["position"]["step"])
    resumed = loop.train(cfg, cut, cut.metrics_sink(), resume=saved)
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the train record after the resume covers its whole interval, as the uninterrupted one
    assert without_timing(full.read_metrics()) == without_timing(cut.read_metrics())
    # "done" counts the training seconds before the stop too, the stopped epoch's included
    assert resumed["train_s_total"] > position["train_s"] + position["epoch_train_s"] > 0


class StopInEvaluation(loop.StopFlag):
    """The flag as a signal arriving while the first evaluation runs (inference mode) sets it."""

    def __bool__(self):
        if torch.is_inference_mode_enabled():
            self.request("SIGTERM")
        return super().__bool__()


def test_a_stop_during_an_evaluation_saves_the_trained_epoch_and_resume_evaluates_it(tmp_path):
    cfg = TrainConfig(dataset="fake", model="lenet", epochs=2, batch_size=64, log_interval=10,
                      test_batch_size=100)
    full = RunDir(tmp_path / "full")
    loop.train(cfg, full, full.metrics_sink())
    cut = RunDir(tmp_path / "cut")
    summary = loop.train(cfg, cut, cut.metrics_sink(), stop=StopInEvaluation())
    assert summary["stopped"] == "SIGTERM" and not cut.file("model.pth").exists()
    assert "epoch" not in [r["kind"] for r in cut.read_metrics()]  # not evaluated: no record
    saved = checkpoint.load(cut.file("last.pt"))
    assert (saved["position"]["epoch"], saved["position"]["batch"]) == (0, 32)  # all trained
    cut.trim_metrics(saved["position"]["step"])
    loop.train(cfg, cut, cut.metrics_sink(), resume=saved)
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert without_timing(full.read_metrics()) == without_timing(cut.read_metrics())


def test_a_max_steps_run_stopped_in_its_last_evaluation_resumes_to_its_model(ptrain, tmp_path):
    """--max-steps 20 ends mid-epoch; a signal in that last evaluation left last.pt, and the
    resume said "already finished" and never wrote model.pth (a hostile trial's SLURM case)."""
    cfg = TrainConfig(dataset="fake", model="lenet", epochs=1, max_steps=20, batch_size=64,
                      log_interval=5, test_batch_size=100)
    full, cut = RunDir(tmp_path / "full"), RunDir(tmp_path / "cut")
    loop.train(cfg, full, full.metrics_sink())
    stopped = loop.train(cfg, cut, cut.metrics_sink(), stop=StopInEvaluation())
    assert stopped["stopped"] == "SIGTERM" and stopped["best_acc"] is None  # (was -1.0)
    assert stopped["train_s_total"] > 0  # the 20 steps trained (was 0.0)
    r = ptrain("resume", "cut", "--json")
    assert r.code == 0, r.err
    assert r.json()["step"] == 20 and cut.file("model.pth").exists()
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = ptrain("resume", "cut")
    assert again.code == 2 and "already finished: --max-steps 20" in again.err


def loop_sink(run, extra):
    sink = run.metrics_sink()

    def emit(r):
        sink(r)
        extra(r)
    return emit


def test_stop_before_the_first_step_of_an_epoch_writes_no_model_file(tmp_path):
    run = RunDir(tmp_path / "r")
    stop = loop.StopFlag()
    stop.request("asked early")
    summary = loop.train(CFG, run, run.metrics_sink(), stop=stop)
    assert summary["stopped"] == "asked early" and summary["step"] == 0
    assert not run.file("model.pth").exists()


def test_workers_change_nothing_but_speed(tmp_path):
    cfg = TrainConfig(dataset="fake", epochs=1, log_interval=100)  # lenet: dropout draws the RNG
    runs = {}
    for workers in (0, 2):
        runs[workers] = RunDir(tmp_path / f"w{workers}")
        loop.train(
            TrainConfig(**{**cfg.to_dict(), "workers": workers}), runs[workers], lambda r: None
        )
    a = checkpoint.load(runs[0].file("model.pth"))["state_dict"]
    b = checkpoint.load(runs[2].file("model.pth"))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_images_per_s_counts_the_wait_for_the_device(monkeypatch):
    # On a GPU the step returns before the work is done; the meter's read is where the host
    # waits. Stand in for that wait with a slow read: the epoch's images/s must include it.
    real_read = step.Meter.read

    def slow_read(self, *carried):
        time.sleep(0.5)
        return real_read(self, *carried)
    monkeypatch.setattr(step.Meter, "read", slow_read)
    records = []
    cfg = TrainConfig(dataset="fake", epochs=1, log_interval=1000, save_model=False)
    loop.train(cfg, None, records.append)
    record = next(r for r in records if r["kind"] == "epoch")
    assert record["images_per_s"] <= 2000 / 0.5


def test_dry_run_is_one_optimizer_step_even_with_accumulation():
    records = []
    summary = loop.train(TrainConfig(dataset="fake", grad_accum=4), None, records.append,
                         dry_run=True)
    assert summary["step"] == 1 and summary["dry_run"]
    assert [r["kind"] for r in records] == ["start", "sample", "epoch", "end"]


def test_a_stop_after_the_last_epoch_still_finishes_the_run(tmp_path):
    run = RunDir(tmp_path / "r")
    stop = loop.StopFlag()
    cfg = TrainConfig(dataset="fake", epochs=1, log_interval=1000)
    summary = loop.train(
        cfg, run, lambda r: r["kind"] == "epoch" and stop.request("late"), stop=stop
    )
    assert summary["stopped"] is None and run.file("model.pth").exists()


def test_bf16_trains_to_a_finite_falling_loss():
    records = []
    cfg = TrainConfig(dataset="fake", epochs=2, precision="bf16", lr=0.05, log_interval=8)
    summary = loop.train(cfg, None, records.append)
    losses = [r["train_loss"] for r in records if r["kind"] == "train"]
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    assert records[0]["precision"] == "bfloat16" and summary["test_acc"] > 0.3


def test_max_steps_ends_the_run_after_that_many_optimizer_steps(tmp_path):
    run = RunDir(tmp_path / "r")
    cfg = TrainConfig(dataset="fake", epochs=5, max_steps=40, scheduler="cosine", log_interval=1000)
    summary = loop.train(cfg, run, run.metrics_sink())
    assert summary["step"] == 40 and summary["epoch"] == 2 and run.file("model.pth").exists()
    epochs = [r for r in run.read_metrics() if r["kind"] == "epoch"]  # where each one ended
    assert [(r["batch"], r["batches"]) for r in epochs] == [(32, 32), (8, 32)]
    # the LR of the 40th step (the schedule reaches 0 once it is taken, a step no one takes)
    assert summary["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_records_log_the_lr_their_steps_took_not_the_next_ones():
    """A hostile trial: --scheduler step --gamma 0.5 logged 0.005 for epoch 1, which trained
    at 0.01 throughout (and 0.0025, which no step took, for epoch 2)."""
    records = []
    cfg = TrainConfig(dataset="fake", epochs=2, scheduler="step", gamma=0.5, log_interval=1)
    loop.train(cfg, None, records.append)
    assert [r["lr"] for r in records if r["kind"] == "epoch"] == [0.01, 0.005]
    steps = [r for r in records if r["kind"] == "train"]
    assert {r["lr"] for r in steps if r["step"] <= 32} == {0.01}  # epoch 1: 32 steps
    assert {r["lr"] for r in steps if r["step"] > 32} == {0.005}


def test_compile_trains_and_saves_plain_keys(tmp_path):
    """aot_eager: dynamo's graphs and guards and AOT autograd's backward, as inductor gets them,
    without inductor's C++ code generation (40 s on a fresh machine here; the GPU check compiles
    with inductor)."""
    run = RunDir(tmp_path / "r")
    records = []
    cfg = TrainConfig(dataset="fake", epochs=1, compile=True, compile_backend="aot_eager",
                      channels_last=True, log_interval=1000)
    graphs = compiling.graphs()
    summary = loop.train(cfg, run, loop_sink(run, records.append))
    assert summary["test_acc"] > 0.15
    # evaluation compiles before the first step, the step once: 2000 images make a last batch
    # of 16, which reuses the graph (the batch dimension is dynamic), as does the eval batch of 500
    compiled = [(r["what"], r["step"]) for r in records if r["kind"] == "compile"]
    assert compiled == [("evaluation", 0), ("the training step", 1)]  # (steps are ints)
    assert compiling.graphs() - graphs == 2
    kinds = [r["kind"] for r in records]
    assert kinds.index("compile") < kinds.index("epoch")
    assert summary["compile_s"] == sum(r["seconds"] for r in records if r["kind"] == "compile")
    for name in ("model.pth", "last.pt"):
        saved = checkpoint.load(run.file(name))
        keys = list(checkpoint.weights(saved))
        assert keys == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                        "fc1.bias", "fc2.weight", "fc2.bias"], name


@pytest.mark.cuda
@pytest.mark.parametrize("precision,optimizer", [("auto", "sgd"), ("16", "sgd"), ("16", "adamw")])
def test_cuda_steps_do_no_host_work(precision, optimizer):
    """A whole epoch of train_epoch makes the host wait for the device once: the epoch end's
    fold (its other syncs, log intervals, lie beyond the epoch). float16's GradScaler too: the
    fused optimizer takes its found-inf flag on the device."""
    cfg = TrainConfig(dataset="fake", device="cuda", augment="crop-flip", scheduler="onecycle",
                      clip_grad=1.0, epochs=2, precision=precision, optimizer=optimizer,
                      log_interval=10_000)
    job = loop.setup(cfg)
    assert job.train.images.is_cuda and job.amp == runtime.autocast_dtype(precision, job.device)
    assert (job.state.scaler is not None) == (precision == "16")
    job.started = time.perf_counter()
    # the first epoch: the sample image's copy, cuDNN's autotuning, the scaler's first steps
    loop.end_epoch(job, 0, *loop.train_epoch(job, 0))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            images, _ = loop.train_epoch(job, 1)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchronizing CUDA operation" in str(w.message)]
    assert len(syncs) == 1, syncs
    assert images == 2000 and job.state.pos.step == job.total_steps
    assert math.isfinite(job.state.pos.epoch_loss_sum)


@pytest.mark.cuda
@pytest.mark.parametrize("precision,mode", [("auto", "reduce-overhead"), ("16", "default")])
def test_cuda_mixed_precision_and_compile_save_float32_plain_weights(tmp_path, precision, mode):
    run = RunDir(tmp_path / "r")
    records = []
    cfg = TrainConfig(dataset="fake", device="cuda", epochs=2, precision=precision, compile=True,
                      compile_mode=mode, lr=0.05, log_interval=8)
    summary = loop.train(cfg, run, loop_sink(run, records.append))
    losses = [r["train_loss"] for r in records if r["kind"] == "train"]
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0] and summary["test_acc"] > 0.3
    assert [r["what"] for r in records if r["kind"] == "compile"] == ["evaluation",
                                                                       "the training step"]
    weights = checkpoint.weights(checkpoint.load(run.file("model.pth")))
    assert all(
        not k.startswith("_orig_mod") and v.dtype == torch.float32 for k, v in weights.items()
    )
    if precision == "16":
        assert checkpoint.load(run.file("last.pt"))["scaler"]["scale"] > 0


def test_data_dependent_init_is_seeded_and_not_redone_on_resume():
    cfg = TrainConfig(dataset="fake", model="airbench", epochs=1)
    first = loop.setup(cfg).state
    weight = first.raw.whiten.weight
    assert torch.equal(weight[4:], -weight[:4])  # set from the data: filters and their negatives
    assert torch.equal(weight, loop.setup(cfg).state.raw.whiten.weight)  # same seed, same filters
    saved = first.state_dict()
    saved["model"]["whiten.weight"] = torch.full_like(weight, 7.0)
    resumed = loop.setup(cfg, resume=saved).state.raw.whiten.weight
    assert torch.equal(resumed, torch.full_like(weight, 7.0))  # loaded, not recomputed


def test_fractional_epochs_stop_part_way_through_the_last_one(tmp_path):
    run = RunDir(tmp_path / "r")
    records = []
    cfg = TrainConfig(dataset="fake", epochs=1.5, scheduler="cosine", log_interval=1000)
    summary = loop.train(cfg, run, loop_sink(run, records.append))
    assert summary["step"] == 48 and run.file("model.pth").exists()  # 32 + 16 of 32 batches
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    # the schedule spans the 1.5 epochs: the 48th step's LR is its last above 0
    assert summary["lr"] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 47 / 48)))
    assert summary["epochs_trained"] == 1.5
    # in whole steps of 3 batches (11 an epoch, the last of 2): 17 steps, 32 + 18 batches, said
    # as such (a hostile trial saw 1.55, 17 / 11, neither 1.5 nor what trained)
    summary = loop.train(dataclasses.replace(cfg, grad_accum=3), None, lambda r: None)
    assert (summary["step"], summary["epochs_trained"]) == (17, 1.56)


def test_tta_is_used_for_the_last_evaluation_only():
    records = []
    summary = loop.train(TrainConfig(dataset="fake", epochs=2, tta=True, log_interval=1000), None,
                         records.append)
    assert [r["tta"] for r in records if r["kind"] == "epoch"] == [False, True]
    assert summary["tta"] and summary["train_s_total"] > 0


@pytest.mark.slow  # an end-to-end recipe of 15-17 s here
def test_cifar10_fast_preset_resumes_exactly_and_exports_verified_onnx(tmp_path, ptrain):
    from conftest import write_cifar10_binary
    write_cifar10_binary(tmp_path / "data", per_batch=20, n_test=100)  # 100 training images
    preset = Path(__file__).resolve().parents[1] / "configs/cifar10-fast.toml"
    cfg = config.resolve(preset, {"data_dir": str(tmp_path / "data"), "batch_size": 25, "epochs": 2,
                                  "test_batch_size": 100, "warmup_epochs": 0.5, "log_interval": 1})
    full = RunDir(tmp_path / "full")
    loop.train(cfg, full, full.metrics_sink())
    cut, stop = RunDir(tmp_path / "cut"), loop.StopFlag()

    def stop_mid_epoch_2(r):
        if r["kind"] == "train" and (r["epoch"], r["batch"]) == (2, 2):
            stop.request("test")
    loop.train(cfg, cut, loop_sink(cut, stop_mid_epoch_2), stop=stop)
    saved = checkpoint.load(cut.file("last.pt"))
    assert saved["position"]["step"] == 6 and "ema" in saved  # after one lookahead (step 5)
    loop.train(cfg, cut, cut.metrics_sink(), resume=saved)
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = ptrain("export", str(full.file("model.pth")), "--format", "onnx")
    assert r.code == 0 and "verified" in r.out, r.err


EARLY = ["train", "--dataset", "fake", "--model", "lenet", "--epochs", "10", "--patience", "2",
         "--batch-size", "64"]


def test_patience_ends_the_run_as_finished_with_the_best_epochs_weights(ptrain, tmp_path):
    """fake's test set is learnt to 100% in epoch 3: epochs 4 and 5 cannot gain, so --patience
    2 ends the run after epoch 5 of 10; best.pt and model.pth hold epoch 3's weights."""
    from conftest import read_metrics
    r = ptrain(*EARLY, "--run-dir", "run")
    assert r.code == 0, r.err
    run = tmp_path / "run"
    accs = [e["test_acc"] for e in read_metrics(run, ("epoch",))]
    assert accs[2:] == [1.0] * 3 and max(accs[:2]) < 1.0  # so the run ends after epoch 5
    assert ("early stop after epoch 5: test acc has not gained at all for 2 epochs (--patience); "
            "the best was epoch 3, 100.00%; model.pth holds its weights") in r.out
    model = checkpoint.load(run / "model.pth")
    best, last = (checkpoint.load(run / f)["model"] for f in ("best.pt", "last.pt"))
    assert model["metrics"]["epoch"] == 3
    assert all(torch.equal(model["state_dict"][k], best[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)  # epochs 4-5 moved the weights
    assert "finished (early stop, epoch 5)" in ptrain("runs", ".").out
    # the summary is model.pth's, epoch 3's, as eval gives it (it was epoch 5's)
    epochs, [end] = read_metrics(run, ("epoch",)), read_metrics(run, ("end",))
    assert end["test_loss"] == epochs[2]["test_loss"] != epochs[4]["test_loss"]
    assert end["model_epoch"] == 3 and end["epochs_trained"] == 5
    assert end["elapsed_s"] == epochs[4]["elapsed_s"]  # the run's time (`runs`), not epoch 3's
    assert "done: test acc 100.00% (epoch 3's, which model.pth holds) after 5 epochs" in r.out
    again = ptrain("resume", "run")
    assert again.code == 2 and "already finished: --patience 2 ended it at epoch 5" in again.err


def test_patience_counts_on_across_a_resume(ptrain, tmp_path):
    """4 epochs (the last never stops early; epoch 4 is the first without a gain), then
    resumed to 10: the count saved goes on, and the run ends after epoch 5 as the uninterrupted
    one does (6, had the resume started counting afresh)."""
    from conftest import read_metrics
    assert ptrain(*EARLY, "--epochs", "4", "--run-dir", "part").code == 0
    assert ptrain("resume", "part", "--epochs", "10").code == 0
    assert [e["epoch"] for e in read_metrics(tmp_path / "part", ("epoch",))] == [1, 2, 3, 4, 5]


def test_a_plateau_run_resumed_ends_where_the_uninterrupted_one_does(ptrain, tmp_path):
    """fake is learnt to 100% in epoch 3, so from epoch 4 on plateau (patience 0) halves the LR
    at each epoch's end: a run cut after epoch 4 and resumed ends at the same weights and LR."""
    from conftest import read_metrics
    run = ["train", "--dataset", "fake", "--model", "lenet", "--batch-size", "64",
           "--scheduler", "plateau", "--plateau-patience", "0", "--gamma", "0.5"]
    assert ptrain(*run, "--epochs", "6", "--run-dir", "whole").code == 0
    assert ptrain(*run, "--epochs", "4", "--run-dir", "part").code == 0
    assert ptrain("resume", "part", "--epochs", "6").code == 0
    lrs = [[e["lr"] for e in read_metrics(tmp_path / d, ("epoch",))] for d in ("whole", "part")]
    assert lrs[0] == lrs[1] and lrs[0][3:] == pytest.approx([0.01, 0.005, 0.0025])
    whole, part = (checkpoint.load(tmp_path / d / "last.pt") for d in ("whole", "part"))
    assert all(torch.equal(whole["model"][k], part["model"][k]) for k in whole["model"])


def test_ema_is_evaluated_saved_as_model_pth_and_resumes_exactly(ptrain, tmp_path):
    """fast-cnn has BatchNorm: its statistics are averaged too. One run of 2 epochs against 1
    epoch resumed to 2: the same average, bit for bit; model.pth is the average, not the
    weights; eval of last.pt takes the average unless --no-ema."""
    run = ["train", "--dataset", "fake", "--model", "fast-cnn", "--batch-size", "64",
           "--ema", "0.99", "--epochs", "2"]
    assert ptrain(*run, "--run-dir", "whole").code == 0
    assert ptrain(*run[:-1], "1", "--run-dir", "part").code == 0
    assert ptrain("resume", "part", "--epochs", "2").code == 0
    whole, part = (checkpoint.load(tmp_path / d / "last.pt") for d in ("whole", "part"))
    assert all(torch.equal(whole["model_ema"][k], part["model_ema"][k])
               for k in whole["model_ema"])
    model = checkpoint.load(tmp_path / "whole" / "model.pth")["state_dict"]
    assert all(torch.equal(model[k], whole["model_ema"][k]) for k in model)
    assert not all(torch.equal(model[k], whole["model"][k]) for k in model)
    averaged = ptrain("eval", "whole/last.pt", "--json").json()
    live = ptrain("eval", "whole/last.pt", "--no-ema", "--json").json()
    assert averaged["loss"] == ptrain("eval", "whole", "--json").json()["loss"] != live["loss"]
    # a run directory with --no-ema: its last.pt's live weights (model.pth holds the average)
    assert ptrain("eval", "whole", "--no-ema", "--json").json()["loss"] == live["loss"]
    for average_only in ("whole/model.pth", "part/model.pth"):
        r = ptrain("eval", average_only, "--no-ema")
        assert r.code == 2 and "holds no average beside its weights" in r.err


def test_a_mixed_and_augmented_run_resumed_ends_at_the_uninterrupted_weights(ptrain, tmp_path):
    """--mixup, --cutmix, a policy and erasing are functions of (seed, epoch, batch): a run
    stopped after 1 epoch and resumed to 2 ends bit for bit where the 2-epoch run ends."""
    run = ["train", "--dataset", "fake", "--model", "lenet", "--batch-size", "64", "--mixup",
           "0.4", "--cutmix", "1", "--mix-prob", "0.8", "--augment", "randaugment",
           "--random-erasing", "0.3", "--label-smoothing", "0.1", "--epochs", "2"]
    assert ptrain(*run, "--run-dir", "whole").code == 0
    assert ptrain(*run[:-1], "1", "--run-dir", "part").code == 0
    assert ptrain("resume", "part", "--epochs", "2").code == 0
    whole, part = (checkpoint.load(tmp_path / d / "last.pt") for d in ("whole", "part"))
    assert all(torch.equal(whole["model"][k], part["model"][k]) for k in whole["model"])
    saved = (tmp_path / "whole" / "config.toml").read_text()
    assert "mixup = 0.4" in saved and 'augment = "randaugment"' in saved


class _EvalHungryLeNet(nets.LeNet):
    """LeNet that asks its device's allocator for 1 PiB, which it refuses for real (CPU: "can't
    allocate memory", in any overcommit mode: it is past the address space; CUDA: its
    OutOfMemoryError), when it evaluates a batch of over 100 images or trains one of over 300:
    a model too large for its device's memory at those batch sizes."""

    def forward(self, x):
        if x.shape[0] > (300 if torch.is_grad_enabled() else 100):  # (used: compiled, kept)
            x = x + torch.empty(2**50, dtype=torch.uint8, device=x.device)[:1].float() * 0
        return super().forward(x)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_an_evaluation_out_of_memory_keeps_the_epochs_training_and_says_how_to_go_on(
        ptrain, tmp_path, monkeypatch, device):
    monkeypatch.setitem(zoo.MODELS, "lenet", _EvalHungryLeNet)
    run = ["train", "--dataset", "fake", "--model", "lenet", "--epochs", "2", "--batch-size",
           "250", "--log-interval", "2", "--deterministic", "--device", device]
    r = ptrain(*run, "--run-dir", "cut")  # evaluates in batches of 1000: out of memory
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert r.err.startswith("ptrain: error: out of memory evaluating in batches of 1000 (")
    assert r.err.endswith("the epoch's training is saved: continue with `ptrain resume cut "
                          "--test-batch-size 250`\n"), r.err
    saved = checkpoint.load(tmp_path / "cut" / "last.pt")["position"]
    assert (saved["epoch"], saved["batch"], saved["step"]) == (0, 8, 8)  # the epoch's 8 steps
    assert ptrain("resume", "cut", "--test-batch-size", "100").code == 0
    assert ptrain(*run, "--test-batch-size", "100", "--run-dir", "whole").code == 0
    cut, whole = RunDir(tmp_path / "cut"), RunDir(tmp_path / "whole")
    same = torch.equal if device == "cpu" else functools.partial(torch.allclose, atol=1e-5)
    assert all(same(a, b) for a, b in zip(_weights(cut).values(), _weights(whole).values()))
    assert [r["epoch"] for r in read_metrics(cut.path, ("epoch",))] == [1, 2]
    if device == "cpu":
        assert without_timing(read_metrics(cut.path)) == without_timing(read_metrics(whole.path))
        r = ptrain(*run, "--compile", "--compile-backend", "aot_eager", "--run-dir", "compiled")
        assert r.code == 1 and r.err.endswith(  # its evaluation compiles before any training
            "use a smaller --test-batch-size (250, say)\n"), r.err
    assert ptrain("eval", "cut").code == 0  # in the batches of 100 the resume went on with
    r = ptrain("eval", "cut", "--batch-size", "400")
    assert r.code == 1 and r.err.startswith("ptrain: error: out of memory evaluating in batches "
                                            "of 400 (") and r.err.endswith(
        "use a smaller --batch-size (100, say)\n"), r.err
    r = ptrain(*run, "--batch-size", "500", "--run-dir", "big")  # out of memory in a step
    assert r.code == 1 and r.err.count("\n") == 1 and r.err.startswith(
        "ptrain: error: out of memory training in batches of 500 (")
    assert r.err.endswith("use a smaller --batch-size (--grad-accum N keeps the step's images), "
                          "--precision bf16 or --grad-checkpointing\n"), r.err
    assert read_metrics(tmp_path / "big", ("abort",))[0]["reason"] == "out of memory"
