"""session.run and session.claim in-process: the run directory's lock, its clearing, the end."""

import io
import json
import os
import shutil
import signal
import sys

import pytest
import torch
import typer

from pytorch_cli.commands import prepare, session
from pytorch_cli.platform import runlock
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store.rundir import LAST, LOCK, MODEL, RunDir

try:
    from pytorch_cli.commands.session import RunOptions
except ImportError:  # it is moving to the settings package
    from pytorch_cli.settings.run import RunOptions

TINY = TrainConfig(dataset="fake", epochs=1, batch_size=700, log_interval=1)  # 3 steps


class Progress(io.StringIO):
    """The stream the session prints progress to: notes who holds the run's lock at each write,
    and sends this process a real SIGTERM on the first line that starts with `stop_at`."""

    def __init__(self, lock, stop_at=""):
        super().__init__()
        self.lock, self.stop_at, self.holders = lock, stop_at, []

    def write(self, text):
        self.holders.append(runlock.holder(self.lock))
        if self.stop_at and text.startswith(self.stop_at):
            self.stop_at = ""
            signal.raise_signal(signal.SIGTERM)  # to this thread: handled at once
        return super().write(text)


def run_json_session(path, stop_at=""):
    """session.run of TINY into `path` with --json: (exit code, progress, stdout)."""
    progress, out = Progress(path / LOCK, stop_at), io.StringIO()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, progress  # --json: the summary on stdout, progress on stderr
    try:
        session.run(lambda: prepare.Start(TINY, RunDir(path)), RunOptions(json=True))
        code = 0
    except typer.Exit as e:
        code = e.exit_code
    finally:
        sys.stdout, sys.stderr = streams
    return code, progress, out.getvalue()


@pytest.fixture(scope="session")  # session: made once per xdist worker
def finished(tmp_path_factory):
    """One real training of 3 steps: (run dir, exit code, progress, stdout)."""
    path = tmp_path_factory.mktemp("session") / "r"
    return path, *run_json_session(path)


@pytest.fixture(scope="session")  # session: made once per xdist worker
def stopped(tmp_path_factory):
    """A run sent SIGTERM as it prints its start line, before its first step."""
    path = tmp_path_factory.mktemp("stopped") / "r"
    return path, *run_json_session(path, stop_at="training ")


def test_the_run_directory_is_locked_while_training_and_released_at_the_end(finished):
    path, code, progress, _ = finished
    assert code == 0 and "done: test acc" in progress.getvalue()
    assert progress.holders and set(progress.holders) == {os.getpid()}  # every line, the last too
    assert not (path / LOCK).exists() and runlock.holder(path / LOCK) is None
    assert runlock.lock(path / LOCK) is None  # free for the next session
    runlock.unlock(path / LOCK)


def test_the_json_summary_is_printed_once(finished):
    path, _, progress, out = finished
    assert out.count("\n") == 1
    summary = json.loads(out)
    assert (summary["step"], summary["run_dir"], summary["stopped"]) == (3, str(path), None)
    assert "epoch 1/1" in progress.getvalue() and "epoch 1/1" not in out


def test_claim_with_clear_removes_the_old_runs_files_and_keeps_the_rest(finished, tmp_path):
    """--overwrite: claimed, the old run stays whole until the new one is set up and writes its
    config (a typo in its data or settings loses nothing); then only the run's files go."""
    old = tmp_path / "old"
    shutil.copytree(finished[0], old)
    (old / "notes.txt").write_text("mine")
    (old / "tensorboard").mkdir()
    (old / "tensorboard" / "events.out").write_text("old curves")
    before = sorted(p.name for p in old.iterdir())
    start = session.claim(prepare.Start(TINY, RunDir(old), clear=True))
    assert sorted(p.name for p in old.iterdir()) == sorted([*before, LOCK])
    start.run_dir.create(TINY.to_dict())
    assert sorted(p.name for p in old.iterdir()) == sorted(["config.toml", "notes.txt", LOCK])
    assert runlock.holder(old / LOCK) == os.getpid()
    start.run_dir.unlock()
    assert sorted(p.name for p in old.iterdir()) == ["config.toml", "notes.txt"]


def test_claim_of_a_resume_drops_the_records_logged_after_its_checkpoint(finished, tmp_path):
    cut = RunDir(tmp_path / "cut")
    shutil.copytree(finished[0], cut.path)
    kept = cut.read_metrics()
    for step in (4, 5):  # logged by a run killed before it saved again
        cut.append_metrics({"kind": "train", "epoch": 1, "step": step, "train_loss": 2.3})
    start = session.claim(prepare.resume(cut.path, epochs=2))
    try:
        assert start.saved["position"]["step"] == 3
        assert cut.read_metrics() == kept
    finally:
        start.run_dir.unlock()


def test_a_prepare_that_refuses_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="--name or --run-dir"):
        session.run(lambda: prepare.train(TINY, "", "", "fake", False, auto=True), RunOptions())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["r", "runs/mnist"])
def test_a_new_run_whose_setup_fails_leaves_no_directory(tmp_path, where):
    cfg = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "nothing"), download=False)
    with pytest.raises(PtrainError, match="no dataset files found"):
        session.run(lambda: prepare.Start(cfg, RunDir(tmp_path / where)), RunOptions())
    assert list(tmp_path.iterdir()) == []


def test_a_stop_before_the_first_step_exits_143_and_releases_the_lock(stopped):
    path, code, progress, out = stopped
    assert code == 143 and "stopped (SIGTERM)" in progress.getvalue()
    assert (json.loads(out)["stopped"], json.loads(out)["step"]) == ("SIGTERM", 0)
    assert not (path / MODEL).exists()
    assert not (path / LOCK).exists() and runlock.holder(path / LOCK) is None


def test_a_stop_before_the_first_step_saves_the_last_pt_it_promises(stopped):
    path, _, progress, _ = stopped
    assert "saved to last.pt" in progress.getvalue()
    assert torch.load(path / LAST, weights_only=True)["position"]["step"] == 0


class SignalOnWrite(io.StringIO):
    """stdout that sends this process a real SIGTERM as the --json summary is written: after
    "done", when a hostile trial's finished runs exited 143."""

    def write(self, text):
        if text.strip():
            signal.raise_signal(signal.SIGTERM)
        return super().write(text)


def test_a_signal_after_done_leaves_the_run_finished_with_exit_0(tmp_path):
    def outside(signum, frame):
        raise AssertionError("SIGTERM after 'done' reached a handler outside the session")
    before = signal.signal(signal.SIGTERM, outside)
    streams, out = (sys.stdout, sys.stderr), SignalOnWrite()
    sys.stdout, sys.stderr = out, io.StringIO()
    try:
        session.run(lambda: prepare.Start(TINY, RunDir(tmp_path / "r")), RunOptions(json=True))
    finally:
        sys.stdout, sys.stderr = streams
        signal.signal(signal.SIGTERM, before)
    assert json.loads(out.getvalue())["stopped"] is None  # and no typer.Exit(143) was raised
    assert (tmp_path / "r" / MODEL).exists()
