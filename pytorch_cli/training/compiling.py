"""--compile: every compile found, reported, and timed apart from training and evaluation.

torch.compile compiles at the first call and again whenever one of its guards fails: a new
batch size, eval mode or inference mode (evaluation), a parameter's requires_grad changing
(airbench freezes its whitening layer after epoch 2). Two things keep that to a minimum: the
batch dimension is marked dynamic, so a shorter last batch (or another --test-batch-size) reuses
the graph, and the loop compiles the evaluation path once before the first step. What is left
is found here: dynamo counts the graphs it makes, and a call after which the count rose
compiled. A compile blocks the host, so the host time of that call is the compile's time (plus
the one call's own work): no device sync is needed to measure it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from pytorch_cli.platform.events import Emit


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
        yield
        made = graphs() - self.seen
        if made:
            seconds = time.perf_counter() - t0
            self.seen, self.seconds = self.seen + made, self.seconds + seconds
            self.emit({"kind": "compile", "mode": self.mode, "what": what, "step": self.step,
                       "graphs": made, "seconds": seconds})


OFF = Watch()  # no --compile (and `ptrain eval`): finds nothing, marks nothing
