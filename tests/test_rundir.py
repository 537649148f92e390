"""The run directory: names, the overwrite rule, metrics.jsonl, the listing of runs."""

import json
from pathlib import Path

import pytest

from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.store import rundir
from pytorch_cli.store.rundir import RunDir


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _make_run(path, epochs=(), config=None):
    run = RunDir(path)
    run.create(config or {"dataset": "fake", "model": "lenet", "epochs": 3})
    for i, acc in enumerate(epochs, 1):
        run.append_metrics({"kind": "epoch", "epoch": i, "step": 10 * i, "test_acc": acc})
    return run


def test_default_names_count_up_and_explicit_names_are_never_reused_silently():
    assert rundir.choose(default="mnist") == rundir.root() / "mnist"
    _make_run(rundir.root() / "mnist")
    assert rundir.choose(default="mnist") == rundir.root() / "mnist-2"
    with pytest.raises(
        UsageError, match="already holds a run.*ptrain resume runs/mnist.*--overwrite"
    ):
        rundir.choose(name="mnist")
    (rundir.root() / "mnist" / "notes.txt").write_text("mine")
    assert rundir.choose(name="mnist", overwrite=True) == rundir.root() / "mnist"
    RunDir(rundir.root() / "mnist").clear()  # as the session does, once it holds the lock
    assert [p.name for p in (rundir.root() / "mnist").iterdir()] == [
        "notes.txt"
    ]  # only run files go


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "a\\b"])
def test_names_that_leave_runs_are_refused(name):
    with pytest.raises(UsageError, match="must be a plain name inside runs/"):
        rundir.choose(name=name)


def test_a_file_where_the_run_directory_goes_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="f is a file, not a directory"):
        rundir.choose(run_dir="f")
    with pytest.raises(
        PtrainError, match="cannot create the run directory f/sub: a file is in the way"
    ):
        RunDir(Path("f/sub")).lock()  # a parent that is a file


def test_trim_drops_later_records_and_a_half_written_line(tmp_path):
    run = _make_run(tmp_path / "r", epochs=(0.5, 0.6, 0.7))
    with open(run.file(rundir.METRICS), "a") as f:
        f.write('{"kind": "train", "step": 3')  # SIGKILL in the middle of an append
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]  # readable all the same
    run.trim_metrics(step=20)
    lines = run.file(rundir.METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_metrics_sink_keeps_the_curves_and_how_the_run_ended(tmp_path):
    run = _make_run(tmp_path / "r")
    sink = run.metrics_sink()
    sink({"kind": "abort", "reason": "error"})  # a session that never started leaves no trace
    for kind in ("start", "compile", "sample", "train", "epoch", "profile", "stop", "end", "abort"):
        sink({"kind": kind, "step": 1})
    assert [r["kind"] for r in run.read_metrics()] == ["start", "compile", "train", "epoch", "stop",
                                                       "end", "abort"]


def test_checkpoint_in_a_run_directory(tmp_path):
    run = _make_run(tmp_path / "r")
    assert rundir.checkpoint_in(tmp_path / "x.pth", rundir.MODEL) == tmp_path / "x.pth"
    with pytest.raises(PtrainError, match="has no model.pth .*still training"):
        rundir.checkpoint_in(run.path, rundir.MODEL)
    run.file(rundir.MODEL).write_bytes(b"")
    assert rundir.checkpoint_in(run.path, rundir.MODEL) == run.file(rundir.MODEL)


def test_a_directory_in_use_is_refused_and_overwrite_clears_every_output(tmp_path):
    run = _make_run(rundir.root() / "r")
    run.lock()
    (run.path / rundir.TENSORBOARD).mkdir()
    (run.path / rundir.TRACE).write_text("{}")
    with pytest.raises(UsageError, match="is in use: a ptrain process"):
        rundir.choose("r", overwrite=True)
    run.unlock()
    assert not run.file(rundir.LOCK).exists()
    RunDir(rundir.choose("r", overwrite=True)).clear()
    assert sorted(p.name for p in run.path.iterdir()) == []  # old curves never mix with new ones


def test_links_in_a_run_directory_are_refused_and_user_files_survive_the_clean_up(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.file("run.lock").symlink_to(outside)
    with pytest.raises(PtrainError, match=r"run\.lock: it is a symbolic link"):
        run.lock()
    run.file("run.lock").unlink()
    run.lock()
    try:
        users = [".env.tmpl", ".notes.tmp", ".vimrc.tmpfile", ".cache.tmp.json"]
        for name in [*users, ".last.pt.tmp99999", ".last.pt.x1y2z3.ptrain-tmp"]:
            run.file(name).write_bytes(b"")
        run.create({"epochs": 1})  # cleans a killed save's temporary files, and only those
        assert sorted(p.name for p in run.path.iterdir()) == sorted(
            [*users, "config.toml", "run.lock"])
        run.file("metrics.jsonl").symlink_to(tmp_path / "made-outside.jsonl")  # dangling
        with pytest.raises(OSError, match="symbolic link"):
            run.append_metrics({"kind": "start"})
        assert not (tmp_path / "made-outside.jsonl").exists()
    finally:
        run.unlock()
