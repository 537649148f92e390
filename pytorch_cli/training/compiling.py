"""--compile: every compile found, reported, and timed apart from training and evaluation.

torch.compile compiles at the first call and again whenever one of its guards fails: a new
batch size, eval mode or inference mode (evaluation), a parameter's requires_grad changing
(airbench freezes its whitening layer after epoch 2). Two things keep that to a minimum: the
batch dimension is marked dynamic, so a shorter last batch (or another --test-batch-size) reuses
the graph where no kernel's choice hangs on the batch size (on a CPU, a batch under 16 images
compiles once more: dynamo guards `16 <= N` there, a hostile trial found), and the loop
compiles the evaluation path once before the first step. What is left is found here: dynamo
counts the graphs it makes, and a call after which the count rose compiled. A compile blocks
the host, so the host time of that call is the compile's time (plus the one call's own work):
no device sync is needed to measure it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from pytorch_cli.platform.errors import PtrainError, first_line
from pytorch_cli.platform.events import Emit


def named(cfg) -> str:
    """How the lines name the compile: its mode, and its backend where not inductor (an
    aot_eager run was "compiled (default)" as an inductor one: a hostile trial)."""
    backend = cfg.compile_backend
    return cfg.compile_mode + (f", {backend}" if backend != "inductor" else "")


def quiet_logs() -> None:
    """Inductor's C++ build logs "No CUDA runtime is found, using CUDA_HOME=..." as a warning on
    every CPU-only machine that has a CUDA_HOME: noise amid a run's lines (a hostile trial)."""
    import logging
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def graphs() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


@dataclass
class Watch:
    """Wrap each call of a compiled model in `watch(what, step)` (step: the optimizer step it is
    part of, if any). `seconds` sums every compile so far, so a span's compile time is the
    difference of two readings. Off (no --compile): a no-op."""
    on: bool = False
    mode: str = "default"
    emit: Emit = lambda record: None
    seconds: float = 0.0
    seen: int = 0  # graphs counted so far
    step: int = 0  # the last optimizer step seen: an evaluation's records are logged at it

    def __post_init__(self):
        self.seen = graphs() if self.on else 0

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Mark the batch dimension dynamic: one graph for every batch size. Only when compiling:
        it imports torch._dynamo, seconds of start-up an eager run does without."""
        if self.on:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return x

    @contextlib.contextmanager
    def __call__(self, what: str, step: int | None = None):
        if not self.on:
            yield
            return
        self.step = self.step if step is None else step  # (metrics.jsonl's steps are ints)
        t0 = time.perf_counter()
        try:
            yield
        except Exception as e:
            if _compiler_error(e):
                raise _failed(e) from None
            raise
        made = graphs() - self.seen
        if made:
            seconds = time.perf_counter() - t0
            self.seen, self.seconds = self.seen + made, self.seconds + seconds
            self.emit({"kind": "compile", "mode": self.mode, "what": what, "step": self.step,
                       "graphs": made, "seconds": seconds})


OFF = Watch()  # no --compile (and `ptrain eval`): finds nothing, marks nothing


def _compiler_error(e: Exception) -> bool:
    """An error of torch's compiler (dynamo, a backend, inductor's C++ or Triton build)."""
    return type(e).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _failed(e: Exception) -> PtrainError:
    """The compiler's failure in one line a user can act on: with no C++ compiler (inductor
    builds its CPU kernels with g++), it was an "unexpected" InductorError (a hostile trial)."""
    while (inner := getattr(e, "inner_exception", None) or e.__cause__) is not None:
        e = inner  # dynamo's BackendCompilerFailed and inductor's InductorError wrap the cause
    detail = f"{type(e).__name__}: {first_line(e, 160)}"
    if "C++ compiler" in detail or "InvalidCxxCompiler" in detail:
        return PtrainError(f"--compile: torch's inductor found no working C++ compiler ({detail});"
                           " install one (g++), or pass --compile-backend aot_eager, or leave "
                           "out --compile")
    return PtrainError(f"--compile: torch could not compile the model ({detail}); pass "
                       "--compile-backend aot_eager, or leave out --compile")
