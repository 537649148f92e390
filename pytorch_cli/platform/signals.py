"""Signals that stop a run cleanly: SIGINT (Ctrl-C), SIGTERM (SLURM preemption, `timeout`,
torchrun passing on its own), SIGUSR1 (SLURM's `--signal=USR1@N` warning) and SIGHUP (the
terminal or SSH session closed) set the stop flag;
the loop finishes the optimizer step, saves last.pt at that exact position and returns. A
second SIGINT aborts at once, leaving the checkpoints already written as they are."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from pytorch_cli.platform.errors import PtrainError

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGUSR1": 143, "SIGHUP": 129}  # 128 + the signal
# scontrol asks slurmctld, which answers in well under a second when it is up; a job being
# stopped has seconds left (SLURM's --signal=USR1@N), and the checkpoint is already saved
REQUEUE_TIMEOUT_S = 30.0
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)


@dataclass
class StopFlag:
    """The one record of a stop: set by the signal handlers (or a test, a sweep's pruner); the
    training loop polls it after each optimizer step, saves the exact position to last.pt and
    returns, and the long phases before the first step read it (check_stop)."""
    reason: str = ""

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason

    def __bool__(self) -> bool:
        return bool(self.reason)


_routed: list[StopFlag] = []  # the flag of the stop_on_signals block that routes them now


class StoppedEarly(PtrainError):
    """A stop signal during a phase with no position to save (reading a folder before the
    first step): the run ends there, with the signal's exit code."""

    def __init__(self, reason: str, doing: str):
        super().__init__(f"stopped ({reason}) while {doing}, before the first step: nothing "
                         "was trained or saved; run the same command again",
                         EXIT_CODES.get(reason, 143))
        self.reason = reason


def check_stop(doing: str) -> None:
    """Raise StoppedEarly if a signal asked for a stop: for the long phases before training
    (decoding a large folder takes minutes, and a scheduler's grace period is often 30 s)."""
    if _routed and _routed[-1]:
        raise StoppedEarly(_routed[-1].reason, doing)


@contextlib.contextmanager
def stop_on_signals(then: Callable[[str], None] | None = None) -> Iterator[StopFlag]:
    """Route the stopping signals to a new StopFlag, the block's (`as stop`), and then to
    `then(signal name)` (a sweep passes each on to its trials), while the block runs; then
    restore the previous handlers."""
    stop = StopFlag()

    def handle(signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and getattr(handle, "interrupted", False):
            raise KeyboardInterrupt  # the second Ctrl-C: abort now
        handle.interrupted = handle.interrupted or name == "SIGINT"
        stop.request(name)
        if then is not None:
            then(name)

    handle.interrupted = False
    # a signal ignored when we started stays ignored: `nohup` (SIGHUP) and a script's background
    # job (SIGINT) asked for exactly that
    previous = {
        s: signal.signal(s, handle) for s in STOPPING if signal.getsignal(s) != signal.SIG_IGN
    }
    _routed.append(stop)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _routed.remove(stop)


def exit_now(code: int) -> None:
    """End the process with `code` at once, its streams flushed: for when everything else is
    saved, and the interpreter's teardown could only go wrong."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def exit_quietly(code: int) -> None:
    """From here on the process only exits: everything is saved and said. A SIGINT or SIGTERM
    during the interpreter's shutdown (its atexit callbacks: torch's, multiprocessing's) ends it
    with `code` at once, not with a KeyboardInterrupt traceback."""
    def handle(signum, frame):
        exit_now(code)
    for s in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(s) != signal.SIG_IGN:
            signal.signal(s, handle)


def slurm_requeue() -> str:
    """Ask SLURM to queue this job again (after SIGUSR1 under SLURM); returns what happened."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "not requeued: SLURM_JOB_ID is not set"
    if not shutil.which("scontrol"):
        return "not requeued: scontrol is not on PATH"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=REQUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"not requeued: `scontrol requeue {job}` did not answer in "
                f"{REQUEUE_TIMEOUT_S:g} s (requeue the job yourself, or resume it later)")
    if done.returncode:
        return f"scontrol requeue {job} failed: {(done.stderr or done.stdout).strip()[:200]}"
    return f"SLURM job {job} requeued"


def sigterm_with_parent(orphaned: bool = False):
    """A Popen preexec_fn (Linux; None elsewhere): the child gets SIGTERM when the thread that
    started it dies, so a SIGKILLed `ptrain sweep` leaves no trial training on unseen: each
    saves at a position, as on any SIGTERM. Bound here, before the fork: the child only calls.
    `orphaned`: called by the child itself, later (a torchrun worker): one whose parent died
    before it asked (adopted by init, pid 1) gets the SIGTERM at once."""
    if sys.platform != "linux":
        return None if not orphaned else lambda: None
    prctl = _prctl()

    def ask():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if orphaned and os.getppid() == 1:
            os.kill(os.getpid(), signal.SIGTERM)
    return ask


PR_SET_PDEATHSIG = 1


def _prctl():
    import ctypes
    return ctypes.CDLL(None, use_errno=True).prctl


def worker_init(parent: int, _worker_id: int = 0) -> None:
    """A DataLoader worker_init_fn (Linux; nothing elsewhere), `parent` the pid that iterates.
    The worker is killed with its parent: after a SIGKILL (OOM, a scheduler's escalation) it
    hung for good on a full pipe, holding 350 MB and the run's lock (a hostile trial). And the
    stop signals that reach a whole process group or cgroup (`timeout`, scancel, systemd, a
    terminal's Ctrl-C) are left to the parent, which stops where it can and ends its workers:
    a worker dying of them first failed the run ("worker exited unexpectedly", exit 1). A
    thread takes those signals (blocked everywhere else) and ends the worker only on the
    parent's own SIGTERM, DataLoader's shutdown."""
    if sys.platform != "linux":
        return
    _prctl()(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)  # before any thread: all inherit it
    threading.Thread(target=_take_stops, args=(parent,), name="ptrain-stops", daemon=True).start()


def _take_stops(parent: int) -> None:
    while True:
        got = signal.sigwaitinfo(STOPPING)
        if got.si_signo == signal.SIGTERM and got.si_pid == parent:
            os._exit(0)  # as torch's own handler does for its parent's SIGTERM
