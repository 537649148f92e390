"""--profile N: a Chrome trace of real operator events in the run directory, the top operators
printed, and a clear note when the run is too short to profile."""

import json

import pytest

from pytorch_cli.training.profiling import WARMUP_STEPS

RUN = ["train", "--dataset", "fake", "--batch-size", "50", "--epochs", "1"]


def test_profile_writes_a_trace_and_prints_the_top_operators(ptrain, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "outside.json").write_text("keep")  # a link planted where the trace goes
    (tmp_path / "p/profile-trace.json").symlink_to(tmp_path / "outside.json")
    r = ptrain(*RUN, "--profile", "3", "--run-dir", "p")
    assert r.code == 0, r.err
    assert (tmp_path / "outside.json").read_text() == "keep"
    assert not (tmp_path / "p/profile-trace.json").is_symlink()
    assert (
        f"profiled 3 steps from step {WARMUP_STEPS + 1}" in r.out
        and "p/profile-trace.json" in r.out
    )
    assert "Self CPU" in r.out and "aten::" in r.out  # the operators table
    trace = json.loads((tmp_path / "p/profile-trace.json").read_text())
    ops = [
        e
        for e in trace["traceEvents"]
        if e.get("ph") == "X" and e.get("name", "").startswith("aten::")
    ]
    assert {"aten::convolution_backward", "aten::addmm"} <= {e["name"] for e in ops}
    steps = {
        e["name"] for e in trace["traceEvents"] if e.get("name", "").startswith("ProfilerStep#")
    }
    assert len(steps) == 3


def test_the_profilers_own_log_lines_stay_off_the_terminal(capfd):
    """Kineto printed "USDT: ... profiler_start" and "profiler_stop" to file descriptor 2 in the
    middle of a run's output (a hostile trial); what Python prints after still shows."""
    import torch

    from pytorch_cli.training.profiling import StepProfiler
    said = []
    prof = StepProfiler(2, torch.device("cpu"), None, said.append)
    for _ in range(WARMUP_STEPS + 2):
        torch.ones(8, 8).sum()
        prof.step()
    prof.close()
    print("after", file=__import__("sys").stderr)
    assert said[0]["steps"] == 2 and capfd.readouterr().err == "after\n"


def test_a_run_shorter_than_the_warm_up_says_so(ptrain, tmp_path):
    r = ptrain(*RUN, "--max-steps", "3", "--profile", "2", "--run-dir", "p")
    assert r.code == 0 and "nothing was profiled" in r.out
    assert not (tmp_path / "p/profile-trace.json").exists()


def test_the_tables_sort_keys_are_key_averages_columns_of_this_torch():
    import warnings

    import torch

    from pytorch_cli.training.profiling import sort_key
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.randn(64, 64) @ torch.randn(64, 64)
    averages = prof.key_averages()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated name warns
        for cuda in (True, False):
            assert isinstance(getattr(averages[0], sort_key(cuda)), (int, float))
            assert "aten::mm" in averages.table(sort_by=sort_key(cuda))


@pytest.mark.cuda
def test_cuda_profile_table_has_the_gpu_times(ptrain, tmp_path):
    r = ptrain(*RUN, "--device", "cuda", "--profile", "3", "--run-dir", "p")
    assert r.code == 0 and "Self CUDA" in r.out, r.err
