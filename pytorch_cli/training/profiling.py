"""--profile N: torch.profiler over N optimizer steps after a warm-up, a Chrome trace in the run
directory and the top operators as a table (a "profile" event)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from pytorch_cli.platform import streams
from pytorch_cli.platform.events import Emit
from pytorch_cli.platform.files import atomic_write

WARMUP_STEPS = 5  # steps left out first: cuDNN autotuning, allocator growth, --compile


def sort_key(cuda: bool) -> str:
    """The table's order: the operators' own GPU time on a GPU (the key averages' name since
    torch 2.4; "self_cuda_time_total" is deprecated), else their own CPU time."""
    return "self_device_time_total" if cuda else "self_cpu_time_total"


class StepProfiler:
    """Call .step() after every optimizer step and .close() at the end; a no-op with steps=0."""

    def __init__(self, steps: int, device: torch.device, trace: Path | None, emit: Emit,
                 start_step: int = 0):
        self.steps, self.trace, self.emit, self.done = steps, trace, emit, False
        self.cuda = device.type == "cuda"
        self.prof, self.calls = None, 0
        if steps > 0:
            os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no ERROR lines about absent GPUs
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(
                activities=activities, on_trace_ready=self._ready, record_shapes=True,
                schedule=torch.profiler.schedule(wait=WARMUP_STEPS - 1, warmup=1, active=steps,
                                                 repeat=1))
            self.first = start_step + WARMUP_STEPS + 1
            self.prof.start()

    def step(self) -> None:
        if self.prof is not None and not self.done:
            with streams.native_stderr_quiet():  # its recording starts and stops in a step
                self.prof.step()
            self.calls += 1

    def _ready(self, prof) -> None:
        self.done = True
        if self.trace is not None:
            _write_trace(prof, self.trace)
        sort = sort_key(self.cuda)
        recorded = min(self.steps, self.calls + 1 - WARMUP_STEPS)  # fewer if the run ended first
        self.emit({"kind": "profile", "steps": recorded, "first_step": self.first,
                   "trace": str(self.trace) if self.trace else None,
                   "table": prof.key_averages().table(sort_by=sort, row_limit=15)})

    def close(self) -> None:
        """Stop profiling; a run that ended before the profiled steps says so."""
        if self.prof is None:
            return
        finished = self.done
        with streams.native_stderr_quiet():
            self.prof.stop()  # inside the active steps this still writes what was recorded
        self.prof = None
        if not finished and not self.done:
            self.emit({"kind": "profile", "steps": 0, "first_step": self.first, "trace": None,
                       "table": f"the run ended before step {self.first}: nothing was profiled "
                                f"(the first {WARMUP_STEPS} steps are a warm-up)"})


def _write_trace(prof, trace: Path) -> None:
    """The Chrome trace, written as every file in a run directory is (files.atomic_write): the
    profiler's own export opens the path as it is, and would write through a link planted there."""
    with tempfile.TemporaryDirectory(prefix="ptrain-") as folder:
        exported = Path(folder, trace.name)
        prof.export_chrome_trace(str(exported))
        data = exported.read_bytes()
    atomic_write(trace, lambda f: f.write(data))
