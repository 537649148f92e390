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

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGUSR1": 143, "SIGHUP": 129}  # 128 + the signal
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(request):
    """Route the stopping signals to `request(reason)` while the block runs, then restore the
    previous handlers."""
    def handle(signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and getattr(handle, "interrupted", False):
            raise KeyboardInterrupt  # the second Ctrl-C: abort now
        handle.interrupted = handle.interrupted or name == "SIGINT"
        request(name)

    handle.interrupted = False
    # a signal ignored when we started stays ignored: `nohup` (SIGHUP) and a script's background
    # job (SIGINT) asked for exactly that
    previous = {
        s: signal.signal(s, handle) for s in STOPPING if signal.getsignal(s) != signal.SIG_IGN
    }
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def slurm_requeue() -> str:
    """Ask SLURM to queue this job again (after SIGUSR1 under SLURM); returns what happened."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return "not requeued: SLURM_JOB_ID is not set"
    if not shutil.which("scontrol"):
        return "not requeued: scontrol is not on PATH"
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode:
        return f"scontrol requeue {job} failed: {(done.stderr or done.stdout).strip()[:200]}"
    return f"SLURM job {job} requeued"
