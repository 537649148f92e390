"""--compile's watch: each compile found by dynamo's own graph count, reported and timed; a
shorter batch reuses the graph. Compiled with the eager backend: the guards are dynamo's, the
same as inductor's, and nothing is code-generated (the loop's test compiles for real)."""

import torch
from torch import nn

from pytorch_cli.training import compiling


class _Net(nn.Module):
    """A forward of its own, as every ptrain model has: on torch 2.11 (the GPU machine's),
    Module.compile() of an nn.Sequential compiles nothing, its forward being in torch's own
    skipped files (pytorch#150915); 2.14 compiles it."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                                    nn.Linear(144, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return _Net()


def _step(net: nn.Module, watch: compiling.Watch, n: int, step: int) -> None:
    with watch("the training step", step):
        net(watch.batch(torch.randn(n, 1, 8, 8))).sum().backward()


def test_each_compile_is_reported_once_with_its_time_and_a_ragged_batch_reuses_the_graph():
    net, records = _net(), []
    net.compile(backend="eager")
    watch = compiling.Watch(True, "default", records.append)
    before = compiling.graphs()
    _step(net, watch, 64, 1)
    _step(net, watch, 64, 2)
    _step(net, watch, 17, 3)  # the epoch's shorter last batch: the batch dimension is dynamic
    assert [(r["what"], r["step"], r["graphs"]) for r in records] == [("the training step", 1, 1)]
    net.eval()
    with torch.inference_mode(), watch("evaluation"):  # eval + inference mode: a guard fails
        net(watch.batch(torch.randn(100, 1, 8, 8)))
    net.train()
    net.layers[0].weight.requires_grad_(False)  # as airbench freezes its whitening layer
    flipped = compiling.graphs()
    _step(net, watch, 64, 4)
    # torch 2.14 guards requires_grad here and compiles again; 2.11's eager backend does not
    again = [("the training step", 4)] if compiling.graphs() > flipped else []
    assert again or torch.__version__ < (2, 14)
    assert [(r["what"], r["step"]) for r in records] == [
        ("the training step", 1), ("evaluation", 3), *again]  # at the last step: an int
    assert compiling.graphs() - before == 2 + len(again) == sum(r["graphs"] for r in records)
    assert all(r["seconds"] > 0 and r["kind"] == "compile" for r in records)
    assert watch.seconds == sum(r["seconds"] for r in records)
    from pytorch_cli.store import records as metrics_records
    assert all(metrics_records.valid(r) for r in records)  # `ptrain runs` reads them


def test_without_compile_the_watch_reports_nothing():
    records = []
    watch = compiling.Watch(False, "default", records.append)
    _step(_net(), watch, 8, 1)
    assert records == [] and watch.seconds == 0.0


def test_a_compiler_that_fails_is_one_line_saying_what_to_do():
    """Without g++, inductor's InvalidCxxCompiler was an "unexpected" error (a hostile trial)."""
    import pytest
    from torch._inductor.exc import InvalidCxxCompiler

    from pytorch_cli.platform.errors import PtrainError

    def no_cxx(gm, inputs):
        raise InvalidCxxCompiler()

    def broken(gm, inputs):
        raise RuntimeError("a backend that fails")
    for backend, said in ((no_cxx, r"^--compile: torch's inductor found no working C\+\+ "
                                   r"compiler \(.*\); install one \(g\+\+\), or pass "
                                   r"--compile-backend aot_eager, or leave out --compile$"),
                          (broken, r"^--compile: torch could not compile the model \(.*a backend "
                                   r"that fails.*\); pass --compile-backend aot_eager")):
        torch._dynamo.reset()
        net, watch = _net(), compiling.Watch(on=True)
        net.compile(backend=backend)
        with pytest.raises(PtrainError, match=said):
            _step(net, watch, 4, 1)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match="not the compiler's"):  # the model's own: as it is
        with compiling.Watch(on=True)("a step"):
            raise ValueError("not the compiler's")


def test_the_lines_name_a_backend_other_than_inductor():
    """An aot_eager run's lines said "compiled (default)", as an inductor run's (a hostile
    trial): a log could not tell them apart."""
    from pytorch_cli.settings.config import TrainConfig
    assert compiling.named(TrainConfig(compile=True)) == "default"
    assert compiling.named(TrainConfig(compile=True, compile_backend="aot_eager",
                                       compile_mode="default")) == "default, aot_eager"


def test_inductors_cuda_home_warning_is_kept_off_a_cpu_runs_lines(caplog):
    import logging
    compiling.quiet_logs()
    logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found")
    assert "No CUDA runtime" not in caplog.text
