"""What a person reads: plain output fit for a SLURM log, the end-of-run sparkline, compiles."""

import io

from pytorch_cli.output import report


def _train(epoch, batch, batches=938):
    return {"kind": "train", "epoch": epoch, "batch": batch, "batches": batches, "step": batch,
            "lr": 0.01, "train_loss": 0.5, "images_per_s": 1000.0, "elapsed_s": 1.0}


def test_plain_output_prints_a_train_line_per_quarter_epoch():
    out = io.StringIO()
    emit = report.plain_reporter(out, quiet=False)
    for epoch in (1, 2):
        for batch in range(10, 939, 10):  # what --log-interval 10 records: 93 per MNIST epoch
            emit(_train(epoch, batch))
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # 25, 50 and 75% of each epoch (the epoch line says the rest)
    assert [line.split()[3] for line in lines[:3]] == ["240/938", "470/938", "710/938"]


def test_plain_output_prints_a_line_after_30_quiet_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 31.5, 32.0, 33.0])  # the reporter's start, then one per record
    monkeypatch.setattr(report.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    emit = report.plain_reporter(out, quiet=False)
    for batch in (10, 20):  # a long epoch: 10 and 20 of 10000 batches are no quarter
        emit(_train(1, batch, 10000))
    assert out.getvalue().count("\n") == 1 and "batch 20/10000" in out.getvalue()


def test_the_half_epoch_that_ends_a_run_of_epochs_1_5_is_called_1_5():
    record = {"kind": "epoch", "epoch": 2, "epochs": 1.5, "train_loss": 0.1, "test_loss": 0.1,
              "test_acc": 0.5, "test_correct": 1, "test_total": 2, "images_per_s": 1.0,
              "train_s": 1.0, "eval_s": 1.0, "elapsed_s": 1.0}
    assert report.format_record(record).startswith("epoch 1.5/1.5 train loss")  # not 2/1.5
    assert report.format_record({**record, "epochs": 3}).startswith("epoch 2/3 train loss")
    cut = {**record, "epoch": 1, "epochs": 3, "batch": 5, "batches": 100}  # by --max-steps
    assert report.format_record(cut).startswith("epoch 0.05/3 train loss")


def test_end_of_training_sparkline():
    assert report.sparkline([0.1, 0.5, 0.9, 0.9]) == "▁▅██"
    assert report.sparkline([0.7, 0.7]) == "██"
    out = io.StringIO()
    emit = report.live_reporter(out, quiet=True)
    for i, acc in enumerate((0.90, 0.95, 0.97), 1):
        emit({"kind": "epoch", "epoch": i, "epochs": 3, "train_loss": 0.1, "test_loss": 0.1,
              "test_acc": acc, "test_correct": 1, "test_total": 1, "images_per_s": 1.0,
              "train_s": 1.0, "eval_s": 1.0, "elapsed_s": 1.0})
    emit({"kind": "end", "dry_run": False, "epoch": 3, "test_acc": 0.97, "best_acc": 0.97,
          "train_s_total": 3.0, "run_dir": "runs/x"})
    assert "test acc by epoch  ▁▆█  90.00% -> 97.00% (best 97.00%, epoch 3)" in out.getvalue()


def test_each_compile_says_what_compiled_and_what_its_time_is_kept_out_of():
    line = report.format_record
    assert line({"kind": "compile", "mode": "default", "what": "the training step", "step": 1,
                 "graphs": 1, "seconds": 19.94}) == ("compiled (default) the training step in "
                                                     "19.9s at step 1, timed apart from training")
    assert line({"kind": "compile", "mode": "reduce-overhead", "what": "evaluation", "step": None,
                 "graphs": 1, "seconds": 2.7}).endswith("evaluation in 2.7s, timed apart from "
                                                        "evaluation")
    # a run written by an older version (one compile record, neither key) still reads
    assert line({"kind": "compile", "mode": "default", "seconds": 3.0}) == (
        "compiled (default) the training step in 3.0s, timed apart from training")


def test_float16_on_a_cpu_is_called_slow_on_the_start_line(ptrain):
    # resnet18's float16 training step is ~200x its float32 one on a CPU (recipe_costs.py)
    slow = "slow on a CPU, whose float16 convolutions have no fast backward: bf16 or 32"
    for precision, said in (("16", True), ("bf16", False), ("32", False)):
        r = ptrain("train", "--dataset", "fake", "--dry-run", "--device", "cpu", "--precision",
                   precision)
        assert r.code == 0 and (slow in r.out) == said, r.out


def test_an_early_stop_under_tta_says_no_tta_evaluation_ran_and_how_to_get_one():
    r = {"kind": "early_stop", "epoch": 5, "patience": 2, "min_delta": 0.0, "metric": "test_acc",
         "best_epoch": 3, "best_acc": 1.0, "model": "model.pth"}
    assert "TTA" not in report.format_record({**r, "tta": False})
    assert report.format_record({**r, "tta": True}).endswith(
        "model.pth holds its weights (no TTA evaluation was run: `ptrain eval RUN_DIR --tta` "
        "gives it)")


def test_a_stop_says_where_it_stopped_in_the_runs_own_terms():
    # a hostile trial read "in epoch 0 after batch 0, step 0" for a stop before any step
    def said(epoch, batch, step):
        return report.format_record({"kind": "stop", "reason": "SIGTERM", "epoch": epoch,
                                     "batch": batch, "step": step, "run_dir": "runs/r"})
    assert said(0, 0, 0) == ("stopped (SIGTERM) before the first step; saved to last.pt: "
                             "continue with `ptrain resume runs/r`")
    assert said(2, 0, 64).startswith("stopped (SIGTERM) at the end of epoch 2, step 64; ")
    assert said(3, 5, 69).startswith("stopped (SIGTERM) in epoch 3 after batch 5, step 69; ")
