"""Choosing a new run's directory: default names counting up, explicit names never reused
silently, and never a folder of somebody else's files or a sweep's."""

import re
from pathlib import Path

import pytest

from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.store import choosing, rundir
from pytorch_cli.store.rundir import RunDir


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _make_run(path):
    run = RunDir(path)
    run.create({"dataset": "fake", "model": "lenet", "epochs": 3})
    return run


def test_a_default_name_a_starting_run_has_locked_is_taken():
    """A run holds its lock while it reads its data and builds its model (seconds, for a folder
    to decode) before it writes a file: a second run started then takes NAME-2, not "in use"."""
    starting = RunDir(rundir.root() / "cifar10")
    starting.lock()
    try:
        assert choosing.choose(default="cifar10") == rundir.root() / "cifar10-2"
    finally:
        starting.unlock()
    assert choosing.choose(default="cifar10") == rundir.root() / "cifar10"  # free again


def test_default_names_count_up_and_explicit_names_are_never_reused_silently():
    assert choosing.choose(default="mnist") == rundir.root() / "mnist"
    _make_run(rundir.root() / "mnist")
    assert choosing.choose(default="mnist") == rundir.root() / "mnist-2"
    with pytest.raises(
        UsageError, match="already holds a run.*ptrain resume runs/mnist.*--overwrite"
    ):
        choosing.choose(name="mnist")
    (rundir.root() / "mnist" / "notes.txt").write_text("mine")
    assert choosing.choose(name="mnist", overwrite=True) == rundir.root() / "mnist"
    RunDir(rundir.root() / "mnist").clear()  # as the session does, once it holds the lock
    assert [p.name for p in (rundir.root() / "mnist").iterdir()] == [
        "notes.txt"
    ]  # only run files go


@pytest.mark.parametrize("files, said", [
    ({"model.pth": b"my weights", "best.pt": b"my yolo"}, "best.pt, model.pth"),  # Ultralytics'
    # a static site's: a hostile trial was told "already holds a run", and --overwrite deleted it
    ({"config.toml": b'baseURL = "https://example.org/"\n', "model.pth": b"precious"},
     "config.toml, model.pth")])
def test_files_of_a_runs_names_ptrain_did_not_write_are_never_chosen_overwrite_or_not(files, said):
    """Without a config.toml ptrain wrote they are not a run: --overwrite would delete them,
    and a run would write over them."""
    theirs = rundir.root() / "mine"
    theirs.mkdir(parents=True)
    for name, data in files.items():
        (theirs / name).write_bytes(data)
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=re.escape(f"mine holds {said} but no config.toml "
                                                       "that ptrain wrote: not a ptrain run's")):
            choosing.choose(run_dir=str(theirs), overwrite=overwrite)
    assert all((theirs / name).read_bytes() == data for name, data in files.items())
    assert choosing.choose(default="mine") == rundir.root() / "mine-2"  # passed by, not reused


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "a\\b"])
def test_names_that_leave_runs_are_refused(name):
    with pytest.raises(UsageError, match="must be a plain name inside runs/"):
        choosing.choose(name=name)


def test_a_file_where_the_run_directory_goes_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="f is a file, not a directory"):
        choosing.choose(run_dir="f")
    with pytest.raises(
        PtrainError, match="cannot create the run directory f/sub: a file is in the way"
    ):
        RunDir(Path("f/sub")).lock()  # a parent that is a file


def test_a_runs_config_edited_by_hand_or_its_metrics_alone_still_make_a_run(tmp_path):
    edited = _make_run(tmp_path / "edited")
    text = edited.file(rundir.CONFIG).read_text().split("\n", 1)[1]  # its first line deleted
    edited.file(rundir.CONFIG).write_text(text)
    assert choosing.choose(run_dir=str(edited.path), overwrite=True) == edited.path
    records = RunDir(tmp_path / "records")
    records.path.mkdir()
    records.append_metrics({"kind": "start", "step": 0})
    assert choosing.choose(run_dir=str(records.path), overwrite=True) == records.path
    with pytest.raises(UsageError, match="already holds a run"):
        choosing.choose(run_dir=str(records.path))


def test_a_sweeps_folder_is_never_chosen_for_a_run():
    """A hostile trial's `--name sw` trained into a sweep's folder, beside its study.db and
    trial folders, without --overwrite."""
    sweep = rundir.root() / "sw"
    (sweep / choosing.TRIALS).mkdir(parents=True)
    (sweep / choosing.STUDY_DB).write_bytes(b"")
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=r"sw is a sweep's folder \(`ptrain sweep`\)"):
            choosing.choose(name="sw", overwrite=overwrite)
    assert choosing.choose(default="sw") == rundir.root() / "sw-2"  # passed by
