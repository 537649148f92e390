"""worker_argv and the refusals of handoff (`ptrain train --nproc N`), and a signal to the
launcher of a real two-worker job."""

import json
import os
import signal
import time

import pytest
import torch
from forked import Forked

from pytorch_cli.platform.errors import UsageError
from pytorch_cli.platform.launch import handoff, worker_argv

TORCHRUN_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}


@pytest.mark.parametrize("argv, kept", [
    (["train", "--nproc", "2", "--epochs", "3", "--max-restarts", "1", "--lr=0.1"],
     ["train", "--epochs", "3", "--lr=0.1"]),
    (["train", "--nproc=2", "--epochs", "2", "--max-restarts=3", "--seed", "2"],
     ["train", "--epochs", "2", "--seed", "2"]),
    (["train", "mnist", "--max-restarts", "0", "--nproc=4"], ["train", "mnist"]),
    (["train", "--nprocs-note", "x", "--max-restarts-hint=1"],
     ["train", "--nprocs-note", "x", "--max-restarts-hint=1"]),
    (["train"], ["train"]),
])
def test_worker_argv_drops_our_flags_and_keeps_the_rest_in_order(argv, kept):
    given = list(argv)
    assert worker_argv(argv, "") == kept
    assert argv == given  # the caller's list is not changed


def test_worker_argv_appends_the_run_dir():
    argv = ["train", "--nproc", "2", "--epochs", "1"]
    assert worker_argv(argv, "runs/a") == ["train", "--epochs", "1", "--run-dir", "runs/a"]


@pytest.mark.parametrize("nproc, max_restarts", [(0, 0), (-1, 0), (2, -1)])
def test_handoff_refuses_bad_counts(monkeypatch, nproc, max_restarts):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="--nproc must be at least 1") as info:
        handoff(["train"], nproc, max_restarts, "")
    assert info.value.exit_code == 2


def test_handoff_refuses_inside_a_torchrun_worker(monkeypatch):
    for name, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match="already a torchrun worker") as info:
        handoff(["train", "--nproc", "2"], 2, 0, "")
    assert info.value.exit_code == 2


@pytest.mark.slow
def test_sigterm_to_the_launcher_exits_143_after_the_workers_saved(tmp_path):
    proc = Forked(["train", "--nproc", "2", "--dataset", "fake", "--epochs", "50",
                   "--batch-size", "32", "--log-interval", "5", "--run-dir", "r"], tmp_path)
    metrics, deadline = tmp_path / "r" / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and '"kind": "train"' in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # as `kill`, `timeout` or a scheduler would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SignalException" not in err and "Traceback" not in err
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    stop = next(r for r in records if r["kind"] == "stop")
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["position"]["step"] == stop["step"] > 0 and saved["world"] == 2
