"""The sweep's study storage: a lost worker's trial taken over, PostgreSQL shared by workers on
two hosts (network namespaces) with the trial count exact, and storage errors as one line."""

import json
import os
import signal
import subprocess
import sys
import time

import forked
import pytest
from conftest import run_cli
from forked import Forked
from pgserver import Server, TwoHosts

optuna = pytest.importorskip("optuna")

SPEC = 'dataset = "fake"\nmodel = "lenet"\n'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytorch_cli", "sweep", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT}


@pytest.mark.slow
def test_a_sigkilled_workers_trial_is_taken_over_and_resumed_from_its_last_pt(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC + 'epochs = 3\nbatch_size = 256\n'
                                        '[search]\nlr = [0.01]\n')
    sweep = ["sweep", "spec.toml", "--sampler", "grid", "--pruner", "none", "--heartbeat", "1"]
    proc = Forked(sweep, tmp_path)  # a real process, without a new interpreter's imports
    run = tmp_path / "runs/spec/trial-000"
    deadline = time.monotonic() + 120
    while '"kind": "epoch"' not in ((run / "metrics.jsonl").read_text()
                                    if (run / "metrics.jsonl").exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the worker, not its trial: that one is told by the kernel
    proc.wait(10)
    while not (run / "last.pt").exists() or '"kind": "stop"' not in (run / "metrics.jsonl") \
            .read_text():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    again = forked.run(sweep, tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="spec",
                              storage=f"sqlite:///{tmp_path}/runs/spec/study.db")
    lost, successor = study.trials
    assert lost.state.name == "FAIL" and successor.state.name == "COMPLETE"
    assert successor.user_attrs == {**successor.user_attrs, "continues": 0, "resume": run.name}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert len([r for r in records if r["kind"] == "start"]) == 2  # trained on, not over
    assert not (tmp_path / "runs/spec/trial-001").exists()
    shown = run_cli(["sweep", "runs/spec", "--show"], tmp_path).out
    assert "worker lost; continued as trial 1" in shown


def _hosts():
    try:
        return TwoHosts().__enter__(), True
    except RuntimeError:
        return [("127.0.0.1", ()), ("127.0.0.1", ())], False


@pytest.mark.slow
def test_workers_on_two_hosts_share_one_postgresql_study_and_its_count_exactly(tmp_path):
    pytest.importorskip("psycopg")
    hosts, namespaces = _hosts()
    try:
        (server_host, server_prefix), _ = hosts
        try:
            server = Server(server_host, server_prefix)
            url = server.__enter__()
        except RuntimeError as e:
            pytest.skip(f"no PostgreSQL server: {e}")
        try:
            _two_workers(tmp_path, url, hosts)
        finally:
            server.__exit__()
    finally:
        if namespaces:
            TwoHosts().__exit__()


def _two_workers(tmp_path, url: str, hosts) -> None:
    (tmp_path / "lr.toml").write_text(SPEC + 'epochs = 1\nbatch_size = 256\n'
                                      '[search]\nlr = {low = 0.001, high = 0.1, log = true}\n')
    workers = [subprocess.Popen([*prefix, *_sweep("lr.toml", "--storage", url, "--study", "lr",
                                                  "--trials", "3", "--jobs", "2", "--dir",
                                                  f"host-{i}")],
                                cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for i, (_, prefix) in enumerate(hosts)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    dirs = sorted(p.name for p in tmp_path.glob("host-*/trial-*"))
    assert dirs == [f"trial-{n:03d}" for n in range(3)]  # each trial on one host, once
    assert all("of 3 trials" in out for out, _ in outs)
    # the server is only reachable from the hosts: read the study back from host B
    shown = subprocess.run([*hosts[1][1], *_sweep("host-0", "--show", "--storage", url)],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    states = [line.split()[1] for line in shown.stdout.splitlines()[1:]]  # (under the header)
    assert states == ["complete"] * 3, shown.stderr  # not 4: four jobs asked


def test_an_unreachable_storage_is_one_line(ptrain, tmp_path):
    pytest.importorskip("psycopg")
    (tmp_path / "s.toml").write_text(SPEC + '[search]\nlr = [0.1]\n')
    port = __import__("pgserver").free_port()  # nothing listens there
    result = ptrain("sweep", "s.toml", "--storage",
                    f"postgresql://me:secret@127.0.0.1:{port}/db")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "cannot open the study storage postgresql://me:***@127.0.0.1" in result.err
    assert "secret" not in result.err


def test_show_finds_a_study_stored_elsewhere_and_makes_no_file_where_there_is_none(ptrain,
                                                                                   tmp_path):
    """A study made (no trial: --timeout) with --storage elsewhere: --show of its folder finds it
    by itself; --show of a folder with no study says so in one line and creates nothing."""
    (tmp_path / "s.toml").write_text(SPEC + '[search]\nlr = [0.1]\n')
    made = ptrain("sweep", "s.toml", "--storage", "sqlite:///elsewhere.db", "--dir", "runs/q",
                  "--trials", "1", "--timeout", "0.001")
    assert made.code == 0 and (tmp_path / "elsewhere.db").is_file(), made.err
    assert made.out.splitlines()[-2:] == [  # the timeout said, no best.toml named
        "sweep runs/q: 0 of 1 trials", "--timeout 0.001 s: no trial started after it"]
    shown = ptrain("sweep", "runs/q", "--show")
    assert (shown.code, shown.out, shown.err) == (0, "no trials yet\n", "")
    (tmp_path / "runs/empty").mkdir()
    none = ptrain("sweep", "runs/empty", "--show")
    assert none.code == 2 and none.err.count("\n") == 1
    assert "runs/empty holds no study" in none.err and "--storage" in none.err
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*.db")) == []
    (tmp_path / "runs/empty/study.db").touch()  # an empty file: Optuna would write its schema
    none = ptrain("sweep", "runs/empty", "--show")
    assert none.code == 2 and none.err == ("ptrain: error: runs/empty: study.db is empty: it "
                                           "holds no study\n")
    assert (tmp_path / "runs/empty/study.db").stat().st_size == 0


@pytest.mark.slow
def test_a_storage_that_stops_answering_stops_the_trials_saved_in_one_line(tmp_path):
    """A hostile trial stopped PostgreSQL mid-sweep: 146 lines of threads' tracebacks, then
    "StorageInternalError ... exceeding max length". Now one line; the trial saved."""
    pytest.importorskip("psycopg")
    server = Server()
    try:
        url = server.__enter__()
    except RuntimeError as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    try:
        (tmp_path / "s.toml").write_text(SPEC + 'epochs = 300\n[search]\nlr = [0.01]\n')
        sweep = subprocess.Popen(_sweep("s.toml", "--storage", url, "--study", "s", "--pruner",
                                        "none", "--heartbeat", "2"),
                                 cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        metrics = tmp_path / "runs/s/trial-000/metrics.jsonl"
        deadline = time.monotonic() + 120
        while '"kind": "epoch"' not in (metrics.read_text() if metrics.exists() else ""):
            assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()
            time.sleep(0.2)
    finally:
        server.__exit__()  # (pg_ctl stop -m immediate: as a crashed server)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("ptrain: error: the sweep's study storage "
                                                   "failed ("), err
    assert err.endswith(f"run the same command again once {url} answers\n")
    assert (tmp_path / "runs/s/trial-000/last.pt").exists()  # the trial stopped, saved
