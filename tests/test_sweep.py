"""`ptrain sweep`: real Optuna studies of real `ptrain train` processes on generated data."""

import json
import os
import signal
import time

import forked
import pytest
from forked import Forked

pytest.importorskip("optuna")

BASE = 'dataset = "fake"\nmodel = "lenet"\n'


def _spec(tmp_path, text: str, name: str = "spec"):
    (tmp_path / f"{name}.toml").write_text(BASE + text)
    return f"{name}.toml"


def _study(tmp_path, name: str = "spec"):
    import optuna
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/runs/{name}/study.db")


@pytest.mark.slow
def test_a_trial_falling_behind_is_pruned_and_listed_so(ptrain, tmp_path):
    """Epochs of a fraction of a second, several to each read of the trial's records: its label
    names the epoch it stopped after, not the one the pruner judged."""
    # seed 5: the grid comes as 0.05, 0.04, then 1e-7, which learns nothing
    spec = _spec(tmp_path, 'epochs = 6\nseed = 5\n[search]\nlr = [0.05, 0.04, 1e-7]\n')
    result = ptrain("sweep", spec, "--sampler", "grid", "--trials", "9")
    assert result.code == 0 and "3 of 3 trials" in result.out  # a grid has 3 points
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE"] * 2  # the median needs two
    bad = trials[2]
    assert bad.params["lr"] == 1e-7 and bad.state.name == "PRUNED"
    listed = {r["run"]: r for r in ptrain("runs", "runs/spec", "--json").json()}
    row = listed[bad.user_attrs["run_dir"]]
    assert row["status"] == "pruned" and row["detail"] == f"epoch {row['epochs_done']}"
    assert row["epochs_done"] < 6
    assert all(listed[t.user_attrs["run_dir"]]["status"] == "finished" for t in trials[:2])
    drawn = ptrain("sweep", "runs/spec", "--plot")
    assert drawn.code == 0 and drawn.out.count("drawn: ") == 2
    for name in ("history.png", "importances.png"):  # Optuna's own figures, as PNG
        assert (tmp_path / "runs/spec" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_four_trials_in_two_jobs_failures_recorded_and_best_toml_trains(ptrain, tmp_path):
    """Nesterov with Adam is refused by the settings; SGD at lr 1e5 diverges (exit 3); Adam,
    whose steps are bounded by the LR, trains on, and its settings are the best."""
    spec = _spec(tmp_path, 'epochs = 1\nbatch_size = 256\nmomentum = 0.9\nlr = 1e5\n'
                 '[search]\nnesterov = [true, false]\noptimizer = ["sgd", "adam"]\n')
    result = ptrain("sweep", spec, "--sampler", "grid", "--jobs", "2", "--pruner", "none")
    assert result.code == 0, result.err
    assert "4 of 4 trials" in result.out
    ended = [line.split() for line in result.out.splitlines() if line.split()[0].isdigit()]
    assert sorted(words[1] for words in ended) == ["complete", "fail", "fail", "fail"]  # as each
    study = _study(tmp_path)
    trials = {(t.params["nesterov"], t.params["optimizer"]): t for t in study.trials}
    assert "--nesterov needs --optimizer sgd" in trials[True, "adam"].user_attrs["error"]
    for nesterov in (True, False):
        assert trials[nesterov, "sgd"].user_attrs["error"].startswith("exit 3: ptrain: error: "
                                                                      "the training loss became")
    assert [t.state.name for t in trials.values()].count("FAIL") == 3
    best = trials[False, "adam"]
    assert best.state.name == "COMPLETE" and study.best_trial.number == best.number
    runs = {r["run"]: r["status"] for r in ptrain("runs", "runs/spec", "--json").json()}
    assert runs[best.user_attrs["run_dir"]] == "finished" and len(runs) == 3  # 3 processes
    # each job its share of the cores, unless OMP_NUM_THREADS is set (make test sets 1)
    share = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2))
    start = json.loads((tmp_path / "runs/spec" / best.user_attrs["run_dir"] / "metrics.jsonl")
                       .read_text().splitlines()[0])
    assert start["device"] == f"cpu ({share} thread{'s' if share > 1 else ''})"
    assert 'optimizer = "adam"' in (tmp_path / "runs/spec/best.toml").read_text()
    assert ptrain("train", "--config", "runs/spec/best.toml", "--dry-run").code == 0
    shown = ptrain("sweep", "runs/spec", "--show").out.splitlines()
    assert shown[0].split() == ["trial", "state", "acc", "epochs", "run", "settings"]
    assert len(shown) == 5 and shown[1].split()[:2] == [str(best.number), "complete"]


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.slow
def test_sigterm_stops_the_sweep_at_a_saved_position_and_the_same_command_continues(tmp_path,
                                                                                   group):
    """`group`: to its whole process group, as SLURM, systemd or a terminal's Ctrl-C send it:
    the trials' fork server, in that group, died of it, and each trial's exit code with it (a
    hostile trial's "fail (exit 255: stopped (SIGTERM) ...; saved to last.pt")."""
    spec = _spec(tmp_path, 'epochs = 4\nbatch_size = 256\n[search]\nlr = [0.01]\n')
    sweep = ["sweep", spec, "--sampler", "grid", "--pruner", "none"]
    proc = Forked(sweep, tmp_path)  # a real process, without a new interpreter's imports
    metrics = tmp_path / "runs/spec/trial-000/metrics.jsonl"
    deadline = time.monotonic() + 120
    while '"kind": "epoch"' not in (metrics.read_text() if metrics.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    if group:  # the sweep leads its own session (Forked), its server in its group
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    assert (tmp_path / "runs/spec/trial-000/last.pt").exists()
    assert _study(tmp_path).trials[0].user_attrs.get("interrupted")  # not failed
    again = forked.run(sweep, tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = _study(tmp_path).trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 1 and len(trials) == 2  # the interrupted one, then its resume
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    starts = [r for r in records if r["kind"] == "start"]
    assert len(starts) == 2 and [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2,
                                                                                          3, 4]


def test_a_stop_that_came_while_a_trial_started_reaches_it():
    """A hostile trial's SIGTERM while a warm start's first trials started (the fork server
    importing torch, seconds): no trial was running yet to pass it to, and both trained to
    their end. The stop is now passed to a trial as it joins."""
    import subprocess
    import sys

    from pytorch_cli.commands import sweeping
    sweep = sweeping.Sweep(plan=None, spec=None, study=None, slots=[])
    sweeping.stop(sweep, "SIGTERM")  # the handler: no trial process yet
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sweeping.add_proc(sweep, proc)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
    calm = sweeping.Sweep(plan=None, spec=None, study=None, slots=[])
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sweeping.add_proc(calm, proc)  # no stop: it runs on, until one comes
        time.sleep(0.5)
        assert proc.poll() is None
        sweeping.stop(calm, "SIGINT")
        assert proc.wait(10) != 0 and calm.stop == "SIGINT"
    finally:
        proc.kill()


def test_a_runs_folder_or_another_studys_trials_are_refused_before_any_trial(ptrain, tmp_path):
    """A hostile trial's sweep wrote its study into a finished run's folder; and one whose
    study.db was removed ran 3 trials that each failed on trial-000's run."""
    spec = _spec(tmp_path, 'epochs = 1\nmax_steps = 2\n[search]\nlr = [0.1]\n')
    assert ptrain("train", "--dataset", "fake", "--max-steps", "2", "--run-dir", "runs/r").code == 0
    r = ptrain("sweep", spec, "--dir", "runs/r")
    assert r.code == 2 and r.err == ("ptrain: error: --dir runs/r holds a run (ptrain train's "
                                     "files): a sweep's folder holds its trials' runs; name "
                                     "another\n")
    assert not (tmp_path / "runs/r/study.db").exists()
    assert ptrain("sweep", spec, "--trials", "1").code == 0
    shown = ptrain("sweep", "runs/spec", "--show").out.splitlines()
    assert shown[1].split()[1:4:2] == ["complete", "0.06"]  # 2 of 32 steps, not "1" epoch
    (tmp_path / "runs/spec/study.db").unlink()
    r = ptrain("sweep", spec, "--trials", "1")
    assert r.code == 2 and "runs/spec holds the runs of another study's trials (trial-000) but " \
        "its study has none" in r.err
    assert not _study(tmp_path).trials  # (a new, empty study) and no trial ran


def test_without_optuna_it_is_one_line_naming_the_extra(ptrain, tmp_path, without):
    without("optuna")
    result = ptrain("sweep", _spec(tmp_path, 'epochs = 1\n[search]\nlr = [0.1]\n'))
    assert result.code == 2 and "pytorch-cli[sweep]" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_plot_without_matplotlib_is_one_line_naming_the_extra(ptrain, tmp_path, without):
    without("matplotlib")
    (tmp_path / "runs/spec").mkdir(parents=True)
    result = ptrain("sweep", "runs/spec", "--plot")
    assert result.code == 2 and "pytorch-cli[plot]" in result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_trials_in_two_jobs_log_to_mlflow_under_one_parent_and_to_one_wandb_group(
        ptrain, tmp_path, monkeypatch):
    """2 trials, then the same command with --trials 3: 3 run directories, 3 complete trials,
    MLflow runs nested under the sweep's one run, W&B runs in one group; best.toml trains."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # not logged in: offline
    spec = _spec(tmp_path, 'epochs = 1\nbatch_size = 256\nmlflow = true\nwandb = true\n'
                 '[search]\nlr = {low = 0.01, high = 0.1, log = true}\n')
    for trials in ("2", "3"):
        result = ptrain("sweep", spec, "--trials", trials, "--jobs", "2", "--pruner", "none")
        assert result.code == 0 and f"{trials} of {trials} trials" in result.out, result.err
    names = [f"trial-00{n}" for n in range(3)]
    assert sorted(p.name for p in (tmp_path / "runs/spec").glob("trial-*")) == names
    assert [t.state.name for t in _study(tmp_path).trials] == ["COMPLETE"] * 3
    assert len({t.params["lr"] for t in _study(tmp_path).trials}) == 3  # continued: new draws
    assert ptrain("train", "--config", "runs/spec/best.toml", "--dry-run").code == 0
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("ptrain").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "spec" and parent.info.status == "FINISHED"
    assert _study(tmp_path).user_attrs["mlflow_parent"] == parent.info.run_id
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId")
                  == parent.info.run_id) == names and len(runs) == 4
    from test_wandb_sink import run_record
    logs = sorted(tmp_path.glob("runs/spec/trial-*/wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 3 and {run_record(log).run_group for log in logs} == {"spec"}


@pytest.mark.slow
def test_the_sweeps_mlflow_run_is_ended_by_the_last_worker_not_one_leaving_early(
        ptrain, tmp_path, monkeypatch):
    """A worker that leaves (--timeout) while another worker's trial runs leaves the sweep's
    MLflow run RUNNING; the worker that ends with no trial running anywhere finishes it."""
    pytest.importorskip("mlflow")
    import optuna
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    spec = _spec(tmp_path, 'epochs = 1\nmlflow = true\n[search]\nlr = [0.05, 0.01]\n')
    (tmp_path / "runs/spec").mkdir(parents=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/runs/spec/study.db",
                                         heartbeat_interval=30)
    study = optuna.create_study(study_name="spec", storage=storage, direction="maximize")
    elsewhere = study.ask()  # a worker on another machine, mid-trial, its heartbeat fresh
    storage.record_heartbeat(elsewhere._trial_id)
    left = ptrain("sweep", spec, "--trials", "2", "--timeout", "0.001")  # late at once
    assert left.code == 0 and "1 of 2 trials" in left.out, left.err
    assert "MLflow: the sweep's run stays RUNNING: trials of other workers still run" in left.out
    parent_id = _study(tmp_path).user_attrs["mlflow_parent"]
    assert MlflowClient().get_run(parent_id).info.status == "RUNNING"
    study.tell(elsewhere, 0.5)  # that worker ends its trial
    last = ptrain("sweep", spec, "--trials", "1")
    assert last.code == 0 and "stays RUNNING" not in last.out, last.err
    assert MlflowClient().get_run(parent_id).info.status == "FINISHED"


def test_a_spec_asking_for_a_missing_tracker_is_one_line_before_any_trial(ptrain, tmp_path,
                                                                           without):
    without("wandb")
    result = ptrain("sweep", _spec(tmp_path, 'wandb = true\n[search]\nlr = [0.1]\n'))
    assert result.code == 2 and result.err.splitlines() == [
        "ptrain: error: --wandb needs the wandb package: pip install 'pytorch-cli[wandb]'"]
    assert not (tmp_path / "runs/spec").exists()  # no study made


@pytest.mark.slow
def test_a_trial_is_not_pruned_at_its_last_epoch(ptrain, tmp_path):
    """Its run is over by then: a SIGTERM as it exits once left a finished trial failed (-15)."""
    spec = _spec(tmp_path, 'epochs = 1\nseed = 5\n[search]\nlr = [0.05, 0.04, 1e-7]\n')
    assert ptrain("sweep", spec, "--sampler", "grid").code == 0
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[2].params["lr"] == 1e-7 and trials[2].value < trials[0].value


def test_a_sweep_whose_every_trial_fails_says_so_and_exits_1(ptrain, tmp_path):
    spec = _spec(tmp_path, 'epochs = 1\nmax_steps = 20\n[search]\n'
                 'lr = {low = 1e5, high = 1e6, log = true}\n')  # every trial diverges (exit 3)
    r = ptrain("sweep", spec, "--trials", "2", "--pruner", "none")
    assert r.code == 1 and "2 of 2 trials" in r.out and not (tmp_path / "runs/spec/best.toml"
                                                              ).exists()
    assert r.err == ("ptrain: error: every trial failed (2): no best settings; `ptrain sweep "
                     "runs/spec --show` says why\n")
    note = ptrain("sweep", "runs/spec", "--show").out  # cut between words, not in a number
    assert "…)" in note and "(now 1" not in note.replace("(now 1…", "")


def test_storage_in_memory_and_a_dir_that_is_a_file_are_one_line(ptrain, tmp_path):
    spec = _spec(tmp_path, '[search]\nlr = [0.01, 0.02]\n')
    for url in ("sqlite:///:memory:", "sqlite://"):
        r = ptrain("sweep", spec, "--storage", url)
        assert r.code == 2 and "an in-memory database, which the trials' processes cannot " \
            "share" in r.err, r.err
    (tmp_path / "taken").write_text("mine")
    r = ptrain("sweep", spec, "--dir", "taken")
    assert r.code == 2 and r.err == ("ptrain: error: --dir taken is a file, not a folder: name "
                                     "the sweep's folder\n")
    assert (tmp_path / "taken").read_text() == "mine"


def test_each_job_gets_a_gpu_by_the_name_cuda_visible_devices_gave_it():
    from pytorch_cli.commands.sweep import gpu_slots
    assert gpu_slots(2, 3, "2,3") == [{"CUDA_VISIBLE_DEVICES": d} for d in ("2", "3", "2")]
    assert gpu_slots(2, 2, "") == [{"CUDA_VISIBLE_DEVICES": d} for d in ("0", "1")]


def test_a_users_omp_num_threads_is_kept_for_every_job(monkeypatch):
    """A hostile trial's OMP_NUM_THREADS=1 had become 2 threads a trial on a shared box."""
    from types import SimpleNamespace

    from pytorch_cli.commands.sweep import _slots
    plan, spec = SimpleNamespace(jobs=2), SimpleNamespace(base={"device": "cpu"})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _slots(plan, spec) == [{}, {}]  # the jobs inherit the user's 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert _slots(plan, spec) == [{"OMP_NUM_THREADS": share}] * 2
