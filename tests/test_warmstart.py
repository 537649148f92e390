"""Warm-started `ptrain` children (a sweep's trials): they run as a fresh process would, in the
caller's folder with the environment given, and the server they fork from stays clean."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytorch_cli.commands import warmstart

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the forkserver path (Linux)")


def _finish(child, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while child.poll() is None:
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.05)
    return child.returncode


def test_a_child_trains_in_the_callers_folder_with_its_environment_and_exit_code(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PTRAIN_RUNS_DIR": "mine"}
    child = warmstart.start(["train", "--dataset", "fake", "--epochs", "1", "--quiet"], env,
                            tmp_path / "train.log")
    assert _finish(child) == 0
    assert "done: test acc" in (tmp_path / "train.log").read_text()
    # PTRAIN_RUNS_DIR, given to it, relative to the caller's folder
    start = json.loads((tmp_path / "mine/fake/metrics.jsonl").read_text().splitlines()[0])
    # OMP_NUM_THREADS: the server imported torch without it; the child still trains on 1 thread
    assert start["kind"] == "start" and start["device"] == "cpu (1 thread)"

    refused = warmstart.start(["train", "--dataset", "fake", "--lr", "-1"], env,
                              tmp_path / "refused.log")
    assert _finish(refused) == 2
    assert (tmp_path / "refused.log").read_text().startswith("ptrain: error: --lr")


@pytest.mark.slow
def test_the_servers_imports_ask_cuda_nothing_and_start_no_thread():
    """What the server imports runs before every trial's fork: had it asked CUDA anything, a
    forked trial could not use the GPU; had it started a thread, the fork would copy its locks.
    (numpy's OpenBLAS starts its pool at import, as in every DataLoader worker's parent, and
    shuts it down around a fork: the count starts after it.)"""
    code = f"""
import os, threading, importlib, numpy, torch
blas = len(os.listdir("/proc/self/task"))
def asked(*args, **kwargs):
    raise AssertionError("CUDA was asked")
torch._C._cuda_getDeviceCount = torch.cuda._lazy_init = asked
for name in {warmstart.PRELOAD!r}:
    importlib.import_module(name)
print(threading.active_count(), len(os.listdir("/proc/self/task")) - blas,
      torch.cuda.is_initialized())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__)
                                                                               .parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "0", "False"]


@pytest.mark.cuda
def test_a_child_forked_from_the_server_trains_on_the_gpu_its_environment_names(tmp_path):
    """The server imported torch in a process that never touched CUDA: its fork initialises CUDA
    afresh, on the GPU CUDA_VISIBLE_DEVICES gives it (a sweep job's)."""
    import torch
    last = str(torch.cuda.device_count() - 1)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": last}
    child = warmstart.start(["train", "--dataset", "fake", "--epochs", "1", "--device", "cuda",
                             "--run-dir", "gpu", "--quiet"], env, tmp_path / "gpu.log")
    assert _finish(child) == 0, (tmp_path / "gpu.log").read_text()[-2000:]
    start = json.loads((tmp_path / "gpu/metrics.jsonl").read_text().splitlines()[0])
    assert start["device"].startswith("cuda:0 (")  # its only visible GPU
