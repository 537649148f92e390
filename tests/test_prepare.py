"""prepare.train and prepare.resume: where a run starts from, checked before anything is written."""

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from pytorch_cli.commands import prepare
from pytorch_cli.commands.cli import main
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store import rundir
from pytorch_cli.store.rundir import RunDir

CFG = TrainConfig(dataset="fake", epochs=1, max_steps=2)


def tiny_run(folder):
    """folder/run: a real `ptrain train` of 2 steps on the fake dataset (1 epoch of 2 batches of
    1,000, finished)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        main(["train", "--dataset", "fake", "--epochs", "1", "--batch-size", "1000", "--quiet",
              "--run-dir", "run"])
    except SystemExit as e:
        assert not e.code, f"the tiny training exited with {e.code}"
    finally:
        os.chdir(here)
    return folder / "run"


@pytest.fixture(scope="session")  # session: made once per xdist worker
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("prepare"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _names(path):
    return sorted(p.name for p in path.iterdir())


def test_unnamed_runs_take_the_next_free_name_and_nothing_is_written(in_tmp, run):
    first = prepare.train(CFG, "", "", "fake", False, False)
    assert (first.run_dir.path, first.clear, first.saved, first.cfg) == (
        rundir.root() / "fake", False, None, CFG)
    assert not rundir.root().exists()
    shutil.copytree(run, rundir.root() / "fake")
    assert prepare.train(CFG, "", "", "fake", False, False).run_dir.path == rundir.root() / "fake-2"


def test_a_named_run_is_taken_over_only_with_overwrite(in_tmp, run):
    shutil.copytree(run, rundir.root() / "mine")
    before = _names(rundir.root() / "mine")
    with pytest.raises(UsageError, match="already holds a run.*--overwrite"):
        prepare.train(CFG, "mine", "", "fake", False, False)
    start = prepare.train(CFG, "mine", "", "fake", True, False)
    assert (start.run_dir.path, start.clear, start.saved) == (rundir.root() / "mine", True, None)
    assert _names(rundir.root() / "mine") == before  # the session clears it, under the lock


@pytest.mark.parametrize("flag, given", [("init_from", "mine"), ("init_from", "mine/best.pt"),
                                         ("weights", "mine/model.pth")])
def test_overwrite_keeps_the_weights_the_new_run_starts_from(in_tmp, run, flag, given):
    shutil.copytree(run, rundir.root() / "mine")
    shutil.copy(run / "model.pth", rundir.root() / "mine" / "best.pt")
    cfg = dataclasses.replace(CFG, **{flag: str(rundir.root() / given)})
    with pytest.raises(UsageError, match="is a file of the run --overwrite replaces; copy it out"):
        prepare.train(cfg, "mine", "", "fake", True, False)
    # a file of the user's own in that folder is not the run's: --overwrite leaves it be
    shutil.copy(run / "model.pth", rundir.root() / "mine" / "start.pth")
    cfg = dataclasses.replace(CFG, **{flag: str(rundir.root() / "mine" / "start.pth")})
    assert prepare.train(cfg, "mine", "", "fake", True, False).clear


def test_resume_auto_of_a_finished_run_that_kept_no_last_pt_has_nothing_to_do(in_tmp, run):
    """A hostile trial: a finished --no-save-model run, run again with --resume auto, started
    over and replaced its metrics.jsonl."""
    shutil.copytree(run, rundir.root() / "nosave")
    (rundir.root() / "nosave" / "last.pt").unlink()
    records = (rundir.root() / "nosave" / "metrics.jsonl").read_bytes()
    with pytest.raises(prepare.AlreadyFinished, match="already finished, with no last.pt"):
        prepare.train(CFG, "nosave", "", "fake", False, True)
    assert (rundir.root() / "nosave" / "metrics.jsonl").read_bytes() == records


def test_a_hand_edited_config_toml_is_said_to_be_not_what_a_resume_runs(in_tmp, run, capsys):
    """A hostile trial edited lr in config.toml: the resume trained at last.pt's, in silence."""
    shutil.copytree(run, Path("r"))
    text = Path("r/config.toml").read_text()
    assert prepare.resume(Path("r"), 2).cfg.lr == 0.01 and capsys.readouterr().err == ""
    Path("r/config.toml").write_text(text.replace("lr = 0.01", "lr = 0.5"))
    assert prepare.resume(Path("r"), 2).cfg.lr == 0.01  # last.pt's
    assert "r/config.toml differs from last.pt (lr): a resume continues" in capsys.readouterr().err
    Path("r/config.toml").write_text(text.replace("lr = 0.01", "lr = -1"))
    prepare.resume(Path("r"), 2)
    assert "r/config.toml is not read by a resume (" in capsys.readouterr().err


def test_resume_auto_says_a_batch_as_the_images_a_step(in_tmp, run):
    """A hostile trial's `--nproc 2` run (64 a process) then `--resume auto` in one process
    with its own --batch-size 64 was told "other settings (batch-size)", nothing more."""
    shutil.copytree(run, rundir.root() / "r")
    cfg = prepare.training_state(run / "last.pt")[1]
    with pytest.raises(UsageError, match=r"other settings \(batch-size: 1 process\(es\) x 1000 "
                                         r"images a step there, 1 x 500 here\)"):
        prepare.train(dataclasses.replace(cfg, batch_size=500), "r", "", "fake", False, True)


def test_resume_auto_needs_the_run_named(in_tmp):
    with pytest.raises(UsageError, match="--name or --run-dir"):
        prepare.train(CFG, "", "", "fake", False, True)


@pytest.mark.parametrize("name, epochs, error, says", [
    ("model.pth", None, UsageError, "not a training-state checkpoint"),
    ("", 0.5, UsageError, "--epochs 0.5: the run was set for 1; it can only be extended"),
    ("", None, prepare.AlreadyFinished, "already finished its 1 epoch; pass --epochs N"),
    ("last.pt", 1, prepare.AlreadyFinished, "already finished its 1 epoch"),
])
def test_resume_refusals(run, name, epochs, error, says):
    with pytest.raises(error, match=says):
        prepare.resume(run / name, epochs=epochs)


def test_resume_extends_a_finished_run_from_its_last_checkpoint(run):
    start = prepare.resume(run, epochs=3)
    assert start.cfg.epochs == 3 and start.cfg.dataset == "fake" and start.cfg.model == "lenet"
    assert start.saved["position"]["step"] == 2 and start.saved["position"]["epoch"] == 1
    assert start.run_dir == RunDir(run) and not start.clear


def test_a_run_that_max_steps_ended_is_finished_whatever_epochs_asks(in_tmp):
    try:
        main(["train", "--dataset", "fake", "--epochs", "1", "--max-steps", "3", "--quiet",
              "--run-dir", "capped"])
    except SystemExit as e:
        assert not e.code
    says = ("already finished: --max-steps 3 ended it; to train on from its weights, start a "
            "new run with --init-from capped")  # before this, it trained 0 steps and said "done"
    for epochs in (None, 1, 5):
        with pytest.raises(prepare.AlreadyFinished, match=says):
            prepare.resume(Path("capped"), epochs=epochs)
    with pytest.raises(prepare.AlreadyFinished, match=says):  # --resume auto: nothing to do
        prepare.train(TrainConfig(dataset="fake", epochs=5, max_steps=3), "", "capped", "fake",
                      False, True)


def test_a_run_that_fractional_epochs_ended_is_finished_whatever_epochs_asks(in_tmp):
    """--epochs 0.5 ends part-way through epoch 1 and records it whole: no position to go on
    from (an extension skipped the rest of that epoch; --epochs 1 said "finished its 1")."""
    try:
        main(["train", "--dataset", "fake", "--epochs", "0.5", "--quiet", "--run-dir", "half"])
    except SystemExit as e:
        assert not e.code
    says = ("already finished: --epochs 0.5 ended it part-way through epoch 1, recorded whole; "
            "to train on from its weights, start a new run with --init-from half")
    for epochs in (None, 0.8, 1, 3):
        with pytest.raises(prepare.AlreadyFinished, match=says):
            prepare.resume(Path("half"), epochs=epochs)


def test_resume_auto_continues_with_the_commands_test_batch(in_tmp, run):
    shutil.copytree(run, "mine")
    same = TrainConfig(dataset="fake", epochs=3, batch_size=1000)  # the run's, extended
    start = prepare.train(dataclasses.replace(same, test_batch_size=100), "",
                          "mine", "fake", False, True)
    assert start.saved is not None  # continued, not started afresh
    assert (start.cfg.test_batch_size, start.cfg.epochs) == (100, 3)
    # the command's intervals, workers and TensorBoard (had been accepted, then the run's kept)
    free = dict(log_interval=3, save_interval=2, workers=1, tensorboard=True)
    start = prepare.train(dataclasses.replace(same, **free), "", "mine", "fake", False, True)
    assert {k: getattr(start.cfg, k) for k in free} == free
    with pytest.raises(UsageError, match=r"made with other settings \(lr\)"):
        prepare.train(dataclasses.replace(same, lr=0.5), "", "mine", "fake", False, True)
    # the run's --precision auto is float32 on a CPU: --precision 32 is the same, bf16 is not
    assert prepare.train(dataclasses.replace(same, precision="32", device="cpu"), "", "mine",
                         "fake", False, True).saved is not None
    with pytest.raises(UsageError, match=r"made with other settings \(precision\)"):
        prepare.train(dataclasses.replace(same, precision="bf16", device="cpu"), "", "mine",
                      "fake", False, True)


def test_resuming_a_live_run_before_its_first_save_says_in_use(in_tmp, tmp_path):
    live = RunDir(tmp_path / "live")
    live.lock()  # as a run does first, before its first last.pt
    try:
        with pytest.raises(UsageError, match=r"live is in use: a ptrain process \(pid \d+\)"):
            prepare.resume(live.path)
    finally:
        live.unlock()


def test_resume_auto_reads_the_data_from_the_commands_data_folder(ptrain, tmp_path, mnist_dir):
    # a data folder moved between restarts of a script: the run continues, reading it there
    assert ptrain("train", "--data-dir", mnist_dir, "--epochs", "1", "--run-dir", "r").code == 0
    mnist_dir.rename(tmp_path / "moved")
    r = ptrain("train", "--data-dir", "moved", "--epochs", "2", "--run-dir", "r",
               "--resume", "auto")
    assert r.code == 0, r.err
    assert f'data_dir = "{tmp_path / "moved"}"' in (tmp_path / "r/config.toml").read_text()
    # the fake set reads no folder: --data-dir there is a mistake said, not a setting ignored
    r = ptrain("train", "--dataset", "fake", "--data-dir", "moved", "--max-steps", "1")
    assert r.code == 2 and r.err == ("ptrain: error: --data-dir: --dataset fake is generated and "
                                     "reads no folder; drop --data-dir, or name the dataset it "
                                     "holds (mnist, folder...)\n")


def test_ptrain_resume_takes_another_number_of_workers_and_zero_is_zero(in_tmp, run):
    """`train --resume auto` could change --workers, `ptrain resume` refused it, saying a
    resumed run keeps it (a hostile trial); --workers 0 must not read as "not given"."""
    shutil.copytree(run, "mine")
    assert prepare.resume(Path("mine"), 2.0).cfg.workers == 0  # the run's
    assert prepare.resume(Path("mine"), 2.0, workers=2).cfg.workers == 2
    started = prepare.resume(Path("mine"), 2.0, workers=2)
    assert dataclasses.replace(started.cfg, workers=0) == prepare.resume(Path("mine"), 2.0).cfg
    assert prepare.resume(Path("mine"), 2.0, workers=None).cfg.workers == 0  # not given


def test_the_resume_command_reads_workers_and_ptrain_workers(ptrain, tmp_path, monkeypatch):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--batch-size", "1000",
                  "--workers", "1", "--run-dir", "w", "--quiet").code == 0
    monkeypatch.setenv("PTRAIN_WORKERS", "-3")  # read, and checked
    r = ptrain("resume", "w", "--epochs", "2")
    assert r.code == 2 and "--workers must be 0 or more, got -3" in r.err, r.err
    r = ptrain("resume", "w", "--epochs", "2", "--workers", "0", "--quiet")  # typed: it wins
    assert r.code == 0, r.err


def test_resume_auto_takes_the_same_settings_however_they_are_spelt(in_tmp, run, ptrain):
    """A relative --init-from (saved absolute) and --image-size 16 against a file's 16 were
    "other settings": the same command line could not continue its own run (a hostile
    trial)."""
    shutil.copytree(run, "src")
    line = ["train", "--dataset", "fake", "--epochs", "1", "--batch-size", "1000", "--quiet",
            "--init-from", "src", "--image-size", "16", "--name", "again", "--resume", "auto"]
    assert ptrain(*line).code == 0
    Path("sized.toml").write_text('image_size = "16x16"\n')
    for extra in ([], ["--config", "sized.toml"]):  # the same line: nothing to do
        r = ptrain(*line, *extra)
        assert r.code == 0 and "nothing to do" in r.out + r.err, r.err


def test_a_run_found_through_the_default_places_saves_where(tmp_path, mnist_dir, ptrain,
                                                             monkeypatch):
    """data_dir was saved "" for data found through PTRAIN_DATA_DIR or ./data: its eval and
    its config.toml failed from any other folder (a hostile trial)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTRAIN_DATA_DIR", mnist_dir)
    assert ptrain("train", "--epochs", "1", "--max-steps", "2", "--run-dir", "m",
                  "--quiet").code == 0
    assert f'data_dir = "{Path(mnist_dir).resolve()}"' in (tmp_path / "m/config.toml").read_text()
    monkeypatch.delenv("PTRAIN_DATA_DIR")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    r = ptrain("eval", str(tmp_path / "m"), "--no-download")
    assert r.code == 0, r.err
