"""`ptrain runs`: each run's status from its files and its lock, checked on synthetic run
directories and on real processes (finished, SIGTERMed, diverged, still running)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pytorch_cli.platform import files
from pytorch_cli.store import listing
from pytorch_cli.store.rundir import LAST, LOCK, MODEL, RunDir

PY = [sys.executable, "-m", "pytorch_cli"]
FAKE = ["train", "--dataset", "fake", "--batch-size", "16", "--log-interval", "5"]


def _run(path, *records, files_=()):
    run = RunDir(path)
    run.create({"dataset": "fake", "model": "lenet", "epochs": 3})
    for r in records:
        run.append_metrics(r)
    for name in files_:
        run.file(name).write_bytes(b"")
    return run


START = {"kind": "start", "step": 0, "time": 0}


def _epoch(i, acc, **more):
    return {"kind": "epoch", "epoch": i, "step": 10 * i, "test_acc": acc, "elapsed_s": 5.0 * i,
            **more}


@pytest.mark.parametrize(
    "records,files_,expected",
    [
        ([START, _epoch(1, 0.5), {"kind": "end", "step": 10}], [MODEL], ("finished", "")),
        (
            [START, _epoch(1, 0.5), {"kind": "stop", "reason": "SIGTERM", "step": 12}],
            [LAST],
            ("interrupted", "SIGTERM"),
        ),
        ([START, _epoch(1, 0.5)], [LAST], ("interrupted", "killed")),  # SIGKILL, OOM: no last word
        ([START], [], ("failed", "killed before a checkpoint")),
        (
            [START, {"kind": "abort", "reason": "nan", "error": "loss became NaN"}],
            [],
            ("failed", "nan"),
        ),
        (
            [
                START,
                _epoch(1, 0.5),
                {"kind": "abort", "reason": "error", "error": "CUDA out of memory"},
            ],
            [LAST],
            ("failed", "CUDA out of memory"),
        ),
        (
            [START, _epoch(1, 0.5), {"kind": "abort", "reason": "interrupted"}],
            [LAST],
            ("interrupted", "aborted"),
        ),
        ([_epoch(1, 0.5)], [MODEL], ("finished", "")),  # a run from before end records were kept
        # resumed after a stop, then finished: the last word counts
        (
            [START, {"kind": "stop", "reason": "SIGINT", "step": 3}, START, {"kind": "end"}],
            [MODEL, LAST],
            ("finished", ""),
        ),
    ],
)
def test_status_follows_the_last_word_and_the_files(tmp_path, records, files_, expected):
    run = _run(tmp_path / "r", *records, files_=files_)
    assert listing.status(run, run.read_metrics()) == expected


def test_summary_sorting_and_nested_runs(tmp_path):
    _run(tmp_path / "a", START, _epoch(1, 0.5), _epoch(2, 0.9), _epoch(3, 0.8), {"kind": "end"})
    _run(tmp_path / "sweep/b", START, _epoch(1, 0.6, val_acc=0.95), files_=[LAST])
    (tmp_path / "empty").mkdir()
    os.utime(tmp_path / "a/metrics.jsonl", (1, 1))  # a is the older one
    found = listing.list_runs(tmp_path)
    assert [r["run"] for r in found] == ["sweep/b", "a"]
    a = found[1]
    assert (a["epochs_done"], a["epochs"], a["last_acc"], a["best_acc"], a["elapsed_s"]) == (
        3, 3, 0.8, 0.9, 15.0)
    assert found[0]["best_acc"] == 0.95 and found[0]["best_on"] == "val" and found[0]["resumable"]
    assert [r["run"] for r in listing.list_runs(tmp_path, "acc")] == ["sweep/b", "a"]
    assert [r["run"] for r in listing.list_runs(tmp_path, "name")] == ["a", "sweep/b"]


def test_a_lock_held_by_a_live_process_means_running_and_dies_with_it(tmp_path):
    run = _run(tmp_path / "r", START, _epoch(1, 0.5), files_=[LAST])
    holder = subprocess.Popen([sys.executable, "-c", f"""
from pytorch_cli.platform import files
assert files.lock({str(run.file(LOCK))!r}) is None
print("held", flush=True)
import time; time.sleep(60)"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert files.holder(run.file(LOCK)) == holder.pid
        assert listing.status(run, run.read_metrics()) == ("running", f"pid {holder.pid}")
        assert files.lock(run.file(LOCK)) == holder.pid  # a second trainer is refused
    finally:
        holder.kill()
        holder.wait()
    assert run.file(LOCK).exists()  # SIGKILL left the file: it means nothing without the lock
    assert listing.status(run, run.read_metrics()) == ("interrupted", "killed")


def test_ptrain_runs_on_real_runs(ptrain, tmp_path):
    """A finished, a diverged (NaN), a running then SIGTERMed run, as `ptrain runs` sees them.
    Only the running one is another process: the lock it holds is the point."""
    assert ptrain(*FAKE, "--epochs", "1", "--run-dir", "runs/done").code == 0
    assert ptrain(*FAKE, "--lr", "1e6", "--run-dir", "runs/nan").code == 3
    long = subprocess.Popen([*PY, *FAKE, "--epochs", "50", "--run-dir", "runs/long"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "runs/long/last.pt").exists():  # running, with a checkpoint
            assert long.poll() is None and time.monotonic() < deadline, long.stderr.read()
            time.sleep(0.05)
        seen = {r["run"]: r for r in ptrain("runs", "--json").json()}
        assert seen["long"]["status"] == "running" and seen["long"]["detail"] == f"pid {long.pid}"
        taken = ptrain(*FAKE, "--run-dir", "runs/long", "--overwrite")
        assert taken.code == 2 and f"is in use: a ptrain process (pid {long.pid})" in taken.err
        resumed = ptrain("resume", "runs/long")
        assert resumed.code == 2 and "is in use" in resumed.err
        long.send_signal(signal.SIGTERM)
        assert long.wait(60) == 143
    finally:
        long.kill()
    seen = {r["run"]: r for r in ptrain("runs", "--json").json()}
    assert (seen["done"]["status"], seen["done"]["epochs_done"]) == ("finished", 1)
    assert (seen["nan"]["status"], seen["nan"]["detail"]) == ("failed", "nan")
    assert (seen["long"]["status"], seen["long"]["detail"]) == ("interrupted", "SIGTERM")
    assert seen["long"]["resumable"] and not (tmp_path / "runs/long" / LOCK).exists()
    table = ptrain("runs").out
    lines = table.splitlines()
    assert lines[0].split() == ["run", "dataset", "model", "epochs", "best", "last", "time",
                                "status", "modified"]
    assert "interrupted (SIGTERM)" in table and "failed (nan)" in table and "\x1b" not in table
    assert sorted(line.split()[0] for line in lines[1:]) == ["done", "long", "nan"]
