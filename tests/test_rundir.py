"""The run directory: the overwrite rule, metrics.jsonl, its lock, links in it."""

import json
import os

import pytest

from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.store import checkpoint, choosing, rundir
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


def test_trim_drops_later_records_and_a_half_written_line(tmp_path):
    run = _make_run(tmp_path / "r", epochs=(0.5, 0.6, 0.7))
    with open(run.file(rundir.METRICS), "a") as f:
        f.write('{"kind": "train", "step": 3')  # SIGKILL in the middle of an append
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]  # readable all the same
    run.trim_metrics(step=20)
    lines = run.file(rundir.METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_trim_drops_a_stepless_record_with_the_records_before_it(tmp_path):
    """A resume from best.pt (epoch 2) of a run that stopped early after epoch 3: its early_stop
    record, which has no step, goes with epoch 3's (it had stayed: two early stops)."""
    run = _make_run(tmp_path / "r", epochs=(0.5, 0.6, 0.55))
    run.append_metrics({"kind": "early_stop", "epoch": 3, "patience": 1})
    run.append_metrics({"kind": "end", "step": 30, "best_acc": 0.6})
    run.trim_metrics(step=20)
    assert [r["kind"] for r in run.read_metrics()] == ["epoch", "epoch"]


def test_metrics_sink_keeps_the_curves_and_how_the_run_ended(tmp_path):
    run = _make_run(tmp_path / "r")
    sink = run.metrics_sink()
    sink({"kind": "abort", "reason": "error"})  # a session that never started leaves no trace
    for kind in ("start", "compile", "sample", "train", "epoch", "profile", "stop", "end", "abort"):
        sink({"kind": kind, "step": 1})
    assert [r["kind"] for r in run.read_metrics()] == ["start", "compile", "train", "epoch", "stop",
                                                       "end", "abort"]


def test_a_skipped_file_whose_name_holds_a_line_break_is_one_line_of_the_listing(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({"dataset": "folder"}, skipped=["a/bad\nname.png is not an image", "b/x.png: empty"])
    assert run.file(rundir.SKIPPED).read_text().splitlines() == [
        "a/bad\\nname.png is not an image", "b/x.png: empty"]


def test_checkpoint_in_a_run_directory(tmp_path):
    run = _make_run(tmp_path / "r")
    assert checkpoint.checkpoint_in(tmp_path / "x.pth", rundir.MODEL) == tmp_path / "x.pth"
    with pytest.raises(PtrainError, match="has no model.pth .*still training"):
        checkpoint.checkpoint_in(run.path, rundir.MODEL)
    run.file(rundir.MODEL).write_bytes(b"")
    assert checkpoint.checkpoint_in(run.path, rundir.MODEL) == run.file(rundir.MODEL)


def test_a_directory_in_use_is_refused_and_overwrite_clears_every_output(tmp_path):
    run = _make_run(rundir.root() / "r")
    run.lock()
    (run.path / rundir.TENSORBOARD).mkdir()
    (run.path / rundir.TRACE).write_text("{}")
    with pytest.raises(UsageError, match="is in use: a ptrain process"):
        choosing.choose("r", overwrite=True)
    run.unlock()
    assert not run.file(rundir.LOCK).exists()
    RunDir(choosing.choose("r", overwrite=True)).clear()
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
        with pytest.raises(PtrainError, match="metrics.jsonl: it is a symbolic link"):
            run.append_metrics({"kind": "start"})
        assert not (tmp_path / "made-outside.jsonl").exists()
        # a resume's rewrite refuses it too (a hostile trial's link was replaced, unsaid)
        (tmp_path / "made-outside.jsonl").write_text(json.dumps({"kind": "start", "step": 0})
                                                     + "\n")
        with pytest.raises(PtrainError, match="metrics.jsonl: it is a symbolic link"):
            run.trim_metrics(0)
        assert run.file("metrics.jsonl").is_symlink()
    finally:
        run.unlock()


GOOD = {"kind": "epoch", "epoch": 1, "step": 10, "test_acc": 0.5}


@pytest.mark.parametrize("line", [
    b"[1, 2]", b"3", b'"x"', b"null", b"{}", b'{"kind": 5}', b'{"kind": "epoch", "epoch": "x"}',
    b'{"kind": "start", "time": "abc"}', b'{"kind": "epoch", "epoch": 2, "test_acc": "high"}',
    b'{"kind": "train", "step": null}', b'{"kind": "epoch", "epoch": NaN}',
    b'{"kind": "start", "time": Infinity}', b'{"kind": "start", "time": -Infinity}',
    b'{"kind": "start", "time": 1e999}', b'{"kind": "start", "step": true}',
    b'{"kind": "start", "step": 1' + b"0" * 400 + b"}", b'{"kind": "epoch", "epoch": [1]}',
    b'{"kind": "stop", "reason": 7}', b"\xff\xfe\x00binary", b'{"kind": "st\xe9"}',
    b"[" * 100_000, b'{"kind": "epoch", "epoch": 1', b"\x00" * 40,
    b'{"kind": "epoch", "epoch": 2, "test_acc": -5}', b'{"kind": "end", "best_acc": 1e308}',
], ids=lambda line: ascii(line[:24]))
def test_a_bad_line_is_skipped_with_a_warning_naming_the_file_and_the_line(tmp_path, capsys,
                                                                           line):
    run = _make_run(tmp_path / "r")
    run.file(rundir.METRICS).write_bytes(
        json.dumps(GOOD).encode() + b"\n" + line + b"\n" + json.dumps(GOOD).encode() + b"\n")
    assert run.read_metrics() == [GOOD, GOOD]  # the lines around it still count
    assert capsys.readouterr().err == (
        f"warning: {run.file(rundir.METRICS)}: skipped 1 unreadable line (first: line 2)\n")


def test_a_line_cut_short_by_a_kill_is_silent_but_other_bad_lines_are_counted(tmp_path, capsys):
    run = _make_run(tmp_path / "r", epochs=(0.5,))
    with open(run.file(rundir.METRICS), "ab") as f:
        f.write(b"[1]\n\xff\n" + json.dumps(GOOD).encode() + b'\n{"kind": "train", "st')
    assert len(run.read_metrics()) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {run.file(rundir.METRICS)}: skipped 2 unreadable lines (first: line 2)"]
    run.file(rundir.METRICS).write_bytes(json.dumps(GOOD).encode())  # complete, no newline
    assert run.read_metrics() == [GOOD] and capsys.readouterr().err == ""


def test_trim_drops_bad_lines_with_a_warning_and_keeps_the_rest(tmp_path, capsys):
    run = _make_run(tmp_path / "r", epochs=(0.5, 0.6, 0.7))
    with open(run.file(rundir.METRICS), "ab") as f:
        f.write(b'{"kind": "epoch", "epoch": "x", "step": 1}\n')
    run.trim_metrics(step=20)
    assert "dropped 1 unreadable line (first: line 4) as the run resumes" in capsys.readouterr().err
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert capsys.readouterr().err == ""  # the file is clean now


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_metrics_file_that_is_no_file_is_one_warning_and_trim_refuses(tmp_path, capsys, kind):
    run = _make_run(tmp_path / "r")
    path = run.file(rundir.METRICS)
    path.mkdir() if kind == "folder" else os.mkfifo(path)  # a FIFO would block a plain read
    assert run.read_metrics() == []
    assert capsys.readouterr().err.startswith(f"warning: {path}: cannot read it")
    with pytest.raises(PtrainError, match=f"cannot read {path}: "):
        run.trim_metrics(step=0)  # rather than rewrite it empty


def test_an_unwritable_run_directory_is_told_what_would_help(tmp_path):
    # a read-only mount was told to "free some space" (a hostile trial)
    import errno

    from pytorch_cli.store import rundir
    said = {code: str(rundir._unwritable(tmp_path, OSError(code, os.strerror(code))))
            for code in (errno.EROFS, errno.ENOSPC, errno.EACCES)}
    assert said[errno.EROFS].endswith("Read-only file system; choose another --run-dir")
    assert said[errno.ENOSPC].endswith("; choose another --run-dir or free some space")
    assert said[errno.EACCES].endswith("; choose another --run-dir or fix its permissions")
