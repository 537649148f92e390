"""--mlflow: a real MLflow tracking store (SQLite, MLflow's own default kind), read back through
MLflow's client: params, every metric against its step, artifacts, a resume continuing its run
without logging a step twice, and one line where it cannot work."""

import json
import shutil

import pytest
from conftest import read_metrics

pytest.importorskip("mlflow")

RUN = ["--dataset", "fake", "--model", "lenet", "--log-interval", "10", "--quiet",
       "--run-dir", "r", "--mlflow"]


@pytest.fixture
def store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    from mlflow.tracking import MlflowClient
    return MlflowClient()


def _only_run(client):
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1
    return runs[0]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_logs_its_config_metrics_and_files(ptrain, store, tmp_path):
    assert ptrain("train", *RUN, "--epochs", "2", "--lr", "0.05").code == 0
    run = _only_run(store)
    assert (run.info.status, run.info.run_name) == ("FINISHED", "r")
    assert run.data.params["lr"] == "0.05" and run.data.params["model"] == "lenet"
    epochs = read_metrics(tmp_path / "r", kinds=("epoch",))
    assert _history(store, run.info.run_id, "Accuracy/test") == \
        [(e["step"], pytest.approx(e["test_acc"])) for e in epochs]
    trains = read_metrics(tmp_path / "r", kinds=("train",))
    assert [s for s, _ in _history(store, run.info.run_id, "Loss/train")] == \
        [r["step"] for r in trains]
    files = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert files == {"model.pth", "config.toml", "metrics.jsonl", "curves.png"}
    ids = json.loads((tmp_path / "r/trackers.json").read_text())
    assert ids == {"mlflow": run.info.run_id}


@pytest.mark.slow
def test_a_resume_continues_the_run_and_logs_no_step_twice(ptrain, store, tmp_path):
    """Back to epoch 1's checkpoint, epoch 2 is trained (and reported) once more, bit for bit:
    the same MLflow run, each value once. --grad-accum 4 over --log-interval 2: one train record
    a step, at the step (two a step, with one step number, once started a new run)."""
    run = [*RUN, "--batch-size", "250", "--grad-accum", "4", "--log-interval", "2"]
    assert ptrain("train", *run, "--epochs", "1").code == 0
    shutil.copy(tmp_path / "r/last.pt", tmp_path / "epoch1.pt")
    assert ptrain("resume", "r", "--epochs", "2").code == 0
    held = _history(store, _only_run(store).info.run_id, "Loss/train")
    shutil.copy(tmp_path / "epoch1.pt", tmp_path / "r/last.pt")
    again = ptrain("resume", "r", "--epochs", "2")
    assert again.code == 0 and "computes other values" not in again.err, again.err
    run = _only_run(store)  # the same MLflow run all along
    assert run.info.status == "FINISHED"
    assert _history(store, run.info.run_id, "Loss/train") == held
    assert [s for s, _ in held] == [1, 2, 3, 4]  # 8 batches an epoch: 2 steps
    steps = [s for s, _ in _history(store, run.info.run_id, "Accuracy/test")]
    assert steps == [r["step"] for r in read_metrics(tmp_path / "r", kinds=("epoch",))]


@pytest.mark.slow
def test_a_resume_that_computes_other_values_goes_on_in_a_new_mlflow_run(ptrain, store,
                                                                        tmp_path):
    """Back to epoch 1's checkpoint with a longer cosine schedule: the steps after it differ
    from what MLflow holds, which it cannot replace; a new MLflow run holds the old one's
    history up to the checkpoint and the new values, as metrics.jsonl does."""
    run = [*RUN, "--scheduler", "cosine", "--batch-size", "250"]  # 8 steps an epoch
    assert ptrain("train", *run, "--epochs", "1").code == 0
    shutil.copy(tmp_path / "r/last.pt", tmp_path / "r/epoch1.pt")
    assert ptrain("resume", "r", "--epochs", "2").code == 0
    old = _only_run(store).info.run_id
    r = ptrain("resume", "r/epoch1.pt", "--epochs", "3")
    assert r.code == 0 and (f"--mlflow: this resume from step 8 computes other values than "
                            f"MLflow run {old} logged after it; continuing in the new") in r.err
    runs = {x.info.run_id: x for x in store.search_runs(
        [store.get_experiment_by_name("tests").experiment_id])}
    [new] = set(runs) - {old}
    assert runs[old].info.status == "KILLED" and runs[old].data.tags["ptrain.continued_in"] == new
    assert runs[new].info.status == "FINISHED" and runs[new].data.params["epochs"] == "3.0"
    records = read_metrics(tmp_path / "r", kinds=("train",))
    assert _history(store, new, "LR") == [(m["step"], pytest.approx(m["lr"])) for m in records]
    epochs = [(m["step"], m["test_acc"]) for m in read_metrics(tmp_path / "r", kinds=("epoch",))]
    assert _history(store, new, "Accuracy/test") == epochs and epochs[0][0] == 8  # 8: copied
    assert _history(store, old, "Accuracy/test")[0] == epochs[0]
    assert json.loads((tmp_path / "r/trackers.json").read_text())["mlflow"] == new


def test_an_unusable_store_is_one_line_before_training(ptrain, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("in the way of the store's folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")
    out = ptrain("train", *RUN, "--epochs", "1")
    assert out.code == 1 and len(out.err.strip().splitlines()) == 1, out.err
    assert out.err.startswith("ptrain: error: --mlflow: cannot log to the MLflow tracking store")
    assert not (tmp_path / "r/last.pt").exists()


def test_without_mlflow_it_is_one_line_naming_the_extra(ptrain, without):
    without("mlflow")
    out = ptrain("train", *RUN)
    assert out.code == 2 and out.err.splitlines() == [
        "ptrain: error: --mlflow needs the mlflow package: pip install 'pytorch-cli[mlflow]'"]


@pytest.mark.slow
def test_a_resume_into_another_store_warns_and_logs_to_a_new_run(ptrain, store, monkeypatch,
                                                                  tmp_path):
    assert ptrain("train", *RUN, "--epochs", "1").code == 0
    first = _only_run(store).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere.db")
    out = ptrain("resume", "r", "--epochs", "2")
    assert out.code == 0 and f"MLflow run {first} is not in this store" in out.err
    from mlflow.tracking import MlflowClient
    moved = _only_run(MlflowClient())
    assert moved.info.run_id != first and moved.info.status == "FINISHED"
    assert json.loads((tmp_path / "r/trackers.json").read_text()) == {"mlflow": moved.info.run_id}


def _train_steps(metrics) -> list[int]:
    """The steps of the train records written so far (whole lines only: it is being written)."""
    lines = metrics.read_text().splitlines(keepends=True) if metrics.exists() else []
    return [json.loads(line)["step"] for line in lines
            if line.endswith("\n") and '"kind": "train"' in line]


@pytest.mark.slow
def test_a_signal_marks_the_run_killed_and_the_resume_finishes_it(ptrain, store, tmp_path):
    """A real SIGTERM mid-run (a forked process): KILLED; `ptrain resume` sets it running and
    finishes it, each step logged once."""
    import signal
    import time

    from forked import Forked
    proc = Forked(["train", *RUN, "--epochs", "3", "--batch-size", "16"], tmp_path)
    metrics, deadline = tmp_path / "r/metrics.jsonl", time.monotonic() + 120
    while max(_train_steps(metrics), default=0) < 150:  # in epoch 2 of 125 batches
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    run = _only_run(store)
    assert run.info.status == "KILLED"
    assert ptrain("resume", "r").code == 0
    run = _only_run(store)
    assert run.info.status == "FINISHED"
    steps = [s for s, _ in _history(store, run.info.run_id, "Loss/train")]
    assert steps == [r["step"] for r in read_metrics(tmp_path / "r", kinds=("train",))]
