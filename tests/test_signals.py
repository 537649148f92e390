"""stop_on_signals with real signals sent to this process, EXIT_CODES and slurm_requeue."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytorch_cli.platform import signals
from pytorch_cli.platform.signals import (
    EXIT_CODES,
    STOPPING,
    StoppedEarly,
    check_stop,
    slurm_requeue,
    stop_on_signals,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def keep_handlers():
    """Whatever a test does to the stopping signals' handlers is undone after it."""
    saved = {s: signal.getsignal(s) for s in STOPPING}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def send(sig):
    # to this thread, the main one, whose Python handler then runs before the call returns; a
    # signal to the process may land in another thread (torch's, a tracker's) and run later
    signal.raise_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT])
def test_a_stopping_signal_requests_a_stop_with_its_name(sig):
    # under `nohup make test` SIGHUP is ignored, which stop_on_signals honours (tested apart)
    before = signal.signal(sig, signal.SIG_DFL)
    try:
        asked = []
        with stop_on_signals(asked.append):
            send(sig)
            assert asked == [sig.name]
    finally:
        signal.signal(sig, before)


def test_the_block_s_flag_is_the_one_record_the_loop_and_the_data_layer_read():
    # one flag: the loop polls it (session passes it on), and decoding a folder checks it
    with stop_on_signals() as stop:
        check_stop("decoding")  # nothing asked: nothing raised
        send(signal.SIGTERM)
        send(signal.SIGUSR1)
        assert stop.reason == "SIGTERM" and stop  # the first reason is kept
        with pytest.raises(StoppedEarly, match=r"^stopped \(SIGTERM\) while decoding") as e:
            check_stop("decoding")
        assert e.value.exit_code == 143
    check_stop("decoding")  # outside a block, no flag routes the signals: none is read
    with stop_on_signals() as again:
        assert not again  # each block starts with its own, unset
        again.request("SIGINT")  # set by a caller, not a signal: read the same way
        with pytest.raises(StoppedEarly) as e:
            check_stop("reading headers")
        assert e.value.exit_code == 130


def test_repeated_signals_request_again():
    asked = []
    with stop_on_signals(asked.append):
        send(signal.SIGTERM)
        send(signal.SIGUSR1)
        send(signal.SIGTERM)
    assert asked == ["SIGTERM", "SIGUSR1", "SIGTERM"]


def test_a_second_sigint_aborts():
    asked = []
    with stop_on_signals(asked.append):
        send(signal.SIGTERM)
        send(signal.SIGINT)  # the first Ctrl-C only asks
        assert asked == ["SIGTERM", "SIGINT"]
        with pytest.raises(KeyboardInterrupt):
            send(signal.SIGINT)
    assert asked == ["SIGTERM", "SIGINT"]


def test_previous_handlers_come_back_after_the_block():
    before = []
    for s in STOPPING:
        signal.signal(s, lambda signum, frame: before.append(signum))
    handlers = {s: signal.getsignal(s) for s in STOPPING}
    asked = []
    with stop_on_signals(asked.append):
        assert all(signal.getsignal(s) is not handlers[s] for s in STOPPING)
    assert {s: signal.getsignal(s) for s in STOPPING} == handlers
    for s in STOPPING:
        send(s)
    assert before == list(STOPPING) and asked == []


def test_an_ignored_signal_stays_ignored():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    asked = []
    with stop_on_signals(asked.append):
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        send(signal.SIGHUP)
        send(signal.SIGTERM)
    assert asked == ["SIGTERM"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_exit_codes():
    assert EXIT_CODES == {"SIGINT": 130, "SIGTERM": 143, "SIGUSR1": 143, "SIGHUP": 129}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # 128 + the signal, as a shell reports it
        assert EXIT_CODES[name] == 128 + signal.Signals[name]
    assert EXIT_CODES["SIGUSR1"] == EXIT_CODES["SIGTERM"]  # SLURM's warning stops as SIGTERM


def test_no_requeue_outside_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm_requeue() == "not requeued: SLURM_JOB_ID is not set"


def test_no_requeue_without_scontrol(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_requeue() == "not requeued: scontrol is not on PATH"


@pytest.mark.parametrize("script, said", [
    ('[ "$1 $2" = "requeue 4242" ] || exit 9', "SLURM job 4242 requeued"),
    ('echo "Invalid job id specified" >&2; exit 1',
     "scontrol requeue 4242 failed: Invalid job id specified"),
])
def test_requeue_runs_scontrol(monkeypatch, tmp_path, script, said):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f"#!/bin/sh\n{script}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_requeue() == said


def test_a_hanging_scontrol_is_given_up_on_and_said(monkeypatch, tmp_path):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\nexec sleep 60\n")  # slurmctld down: scontrol waits
    scontrol.chmod(0o755)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(signals, "REQUEUE_TIMEOUT_S", 0.5)
    t0 = time.monotonic()
    said = slurm_requeue()
    assert time.monotonic() - t0 < 10
    assert said == ("not requeued: `scontrol requeue 4242` did not answer in 0.5 s (requeue the "
                    "job yourself, or resume it later)")


WORKER_PARENT = """
import functools, os, signal, time, torch
from pytorch_cli.platform import signals
signal.signal(signal.SIGTERM, lambda *a: print("stop asked", flush=True))  # as ptrain's
class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 3000  # 30 s: a test that goes wrong leaves nothing running for long
    def __getitem__(self, i):
        time.sleep(0.01)
        return os.getpid()
loader = torch.utils.data.DataLoader(Slow(), num_workers=1, worker_init_fn=functools.partial(
    signals.worker_init, os.getpid()))
for i, pid in enumerate(loader):
    if i == 0:
        print(int(pid), flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: dead, not reaped
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_dataloader_worker_leaves_group_signals_to_its_parent_and_dies_with_it():
    """A process group's SIGTERM (`timeout`, scancel, Ctrl-C) killed decode workers first and
    failed the run; a SIGKILLed ptrain left them hung for good, holding memory and run.lock."""
    parent = subprocess.Popen([sys.executable, "-c", WORKER_PARENT], stdout=subprocess.PIPE,
                              text=True, start_new_session=True, cwd=ROOT)
    worker = 0
    try:
        worker = int(parent.stdout.readline())
        os.killpg(parent.pid, signal.SIGTERM)  # the whole group, as `timeout` sends it
        assert parent.stdout.readline() == "stop asked\n"
        time.sleep(1.0)
        assert not _gone(worker) and parent.poll() is None  # the loader still runs
        parent.kill()
        deadline = time.monotonic() + 10
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(worker)
    finally:
        parent.kill()
        parent.wait()
        if worker and not _gone(worker):
            os.kill(worker, signal.SIGKILL)
