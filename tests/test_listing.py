"""`ptrain runs`: each run's status from its files and its lock, checked on synthetic run
directories and on real processes (finished, SIGTERMed, diverged, still running)."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from forked import Forked

from pytorch_cli.output import runs_table
from pytorch_cli.platform import runlock
from pytorch_cli.store import listing
from pytorch_cli.store.rundir import (
    CONFIG,
    LAST,
    LOCK,
    METRICS,
    MODEL,
    RUN_FILES,
    SKIPPED,
    TRACKERS,
    RunDir,
)

FAKE = ["train", "--dataset", "fake", "--batch-size", "16", "--log-interval", "5"]


def _run(path, *records, files_=()):
    run = RunDir(path)
    run.create({"dataset": "fake", "model": "lenet", "epochs": 3})
    for r in records:
        run.append_metrics(r)
    for name in files_:
        run.file(name).write_bytes(b"")
    return run


START = {"kind": "start", "step": 0, "time": 0}


def _epoch(i, acc, **more):
    return {"kind": "epoch", "epoch": i, "step": 10 * i, "test_acc": acc, "elapsed_s": 5.0 * i,
            "train_s": float(i), **more}


@pytest.mark.parametrize(
    "records,files_,expected",
    [
        ([START, _epoch(1, 0.5), {"kind": "end", "step": 10}], [MODEL], ("finished", "")),
        (
            [START, _epoch(1, 0.5), {"kind": "stop", "reason": "SIGTERM", "step": 12}],
            [LAST],
            ("interrupted", "SIGTERM"),
        ),
        ([START, _epoch(1, 0.5)], [LAST], ("interrupted", "killed")),  # SIGKILL, OOM: no last word
        ([START], [], ("failed", "killed before a checkpoint")),
        (
            [START, {"kind": "abort", "reason": "nan", "error": "loss became NaN"}],
            [],
            ("failed", "nan"),
        ),
        (
            [
                START,
                _epoch(1, 0.5),
                {"kind": "abort", "reason": "error", "error": "CUDA out of memory"},
            ],
            [LAST],
            ("failed", "CUDA out of memory"),
        ),
        (
            [START, _epoch(1, 0.5), {"kind": "abort", "reason": "interrupted"}],
            [LAST],
            ("interrupted", "aborted"),
        ),
        ([_epoch(1, 0.5)], [MODEL], ("finished", "")),  # a run from before end records were kept
        ([], [MODEL, LAST], ("unknown", "no records")),  # metrics.jsonl gone: nothing to go by
        # resumed after a stop, then finished: the last word counts
        (
            [START, {"kind": "stop", "reason": "SIGINT", "step": 3}, START, {"kind": "end"}],
            [MODEL, LAST],
            ("finished", ""),
        ),
    ],
)
def test_status_follows_the_last_word_and_the_files(tmp_path, records, files_, expected):
    run = _run(tmp_path / "r", *records, files_=files_)
    assert listing.status(run, run.read_metrics()) == expected


def test_summary_sorting_and_nested_runs(tmp_path):
    _run(tmp_path / "a", START, _epoch(1, 0.5), _epoch(2, 0.9), _epoch(3, 0.8), {"kind": "end"})
    _run(tmp_path / "sweep/b", START, _epoch(1, 0.6, val_acc=0.95), files_=[LAST])
    (tmp_path / "empty").mkdir()
    os.utime(tmp_path / "a/metrics.jsonl", (1, 1))  # a is the older one
    found = listing.list_runs(tmp_path)
    assert [r["run"] for r in found] == ["sweep/b", "a"]
    a = found[1]
    assert (a["epochs_done"], a["epochs"], a["last_acc"], a["best_acc"], a["elapsed_s"]) == (
        3, 3, 0.8, 0.9, 15.0)
    assert a["train_s"] == 6.0  # no total in its end: its epochs' 1 + 2 + 3 seconds
    assert found[0]["best_acc"] == 0.95 and found[0]["best_on"] == "val" and found[0]["resumable"]
    assert [r["run"] for r in listing.list_runs(tmp_path, "acc")] == ["sweep/b", "a"]
    assert [r["run"] for r in listing.list_runs(tmp_path, "name")] == ["a", "sweep/b"]


def test_a_failed_run_with_a_last_pt_is_resumable_one_without_is_not(tmp_path):
    """A rank that died, an out-of-memory step: the run failed, and its last.pt resumes it
    (a script reading --json's `resumable` restarts it)."""
    _run(tmp_path / "dead", START, _epoch(1, 0.5), {"kind": "abort", "reason": "error",
                                                    "error": "rank 1 stopped answering"},
         files_=[LAST])
    _run(tmp_path / "nothing", START, {"kind": "abort", "reason": "error", "error": "bad"})
    found = {r["run"]: r for r in listing.list_runs(tmp_path)}
    assert (found["dead"]["status"], found["dead"]["resumable"]) == ("failed", True)
    assert (found["nothing"]["status"], found["nothing"]["resumable"]) == ("failed", False)


def test_runs_behind_links_to_folders_are_listed_once_and_loops_end(tmp_path):
    """runs/big -> /scratch/big (a run kept on another disk) is listed, once: a link back up
    to runs/ inside it lists nothing more."""
    _run(tmp_path / "scratch" / "big", START, {"kind": "end"}, files_=[MODEL])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "big").symlink_to(tmp_path / "scratch" / "big")
    (tmp_path / "runs" / "big" / "loop").symlink_to(tmp_path / "runs")
    _run(tmp_path / "runs" / "here", START)
    assert [r["run"] for r in listing.list_runs(tmp_path / "runs", "name")] == ["big", "here"]


def test_a_lock_held_by_a_live_process_means_running_and_dies_with_it(tmp_path):
    run = _run(tmp_path / "r", START, _epoch(1, 0.5), files_=[LAST])
    holder = subprocess.Popen([sys.executable, "-c", f"""
from pytorch_cli.platform import runlock
assert runlock.lock({str(run.file(LOCK))!r}) is None
print("held", flush=True)
import time; time.sleep(60)"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runlock.holder(run.file(LOCK)) == holder.pid
        assert listing.status(run, run.read_metrics()) == ("running", f"pid {holder.pid}")
        assert runlock.lock(run.file(LOCK)) == holder.pid  # a second trainer is refused
    finally:
        holder.kill()
        holder.wait()
    assert run.file(LOCK).exists()  # SIGKILL left the file: it means nothing without the lock
    assert listing.status(run, run.read_metrics()) == ("interrupted", "killed")


def test_ptrain_runs_on_real_runs(ptrain, tmp_path):
    """A finished, a diverged (NaN), a running then SIGTERMed run, as `ptrain runs` sees them.
    Only the running one is another process: the lock it holds is the point."""
    assert ptrain(*FAKE, "--epochs", "1", "--run-dir", "runs/done").code == 0
    assert ptrain(*FAKE, "--lr", "1e6", "--run-dir", "runs/nan").code == 3
    long = Forked([*FAKE, "--epochs", "50", "--run-dir", "runs/long"], tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "runs/long/last.pt").exists():  # running, with a checkpoint
            assert long.poll() is None and time.monotonic() < deadline, long.communicate(1)[1]
            time.sleep(0.05)
        seen = {r["run"]: r for r in ptrain("runs", "--json").json()}
        assert seen["long"]["status"] == "running" and seen["long"]["detail"] == f"pid {long.pid}"
        taken = ptrain(*FAKE, "--run-dir", "runs/long", "--overwrite")
        assert taken.code == 2 and f"is in use: a ptrain process (pid {long.pid})" in taken.err
        resumed = ptrain("resume", "runs/long")
        assert resumed.code == 2 and "is in use" in resumed.err
        long.send_signal(signal.SIGTERM)
        assert long.wait(60) == 143
    finally:
        long.kill()
    seen = {r["run"]: r for r in ptrain("runs", "--json").json()}
    assert (seen["done"]["status"], seen["done"]["epochs_done"]) == ("finished", 1)
    assert (seen["nan"]["status"], seen["nan"]["detail"]) == ("failed", "nan")
    assert (seen["long"]["status"], seen["long"]["detail"]) == ("interrupted", "SIGTERM")
    assert seen["long"]["resumable"] and not (tmp_path / "runs/long" / LOCK).exists()
    table = ptrain("runs").out
    lines = table.splitlines()
    assert lines[0].split() == ["run", "dataset", "model", "epochs", "best", "last", "time",
                                "status", "modified"]
    assert "interrupted (SIGTERM)" in table and "failed (nan)" in table and "\x1b" not in table
    assert sorted(line.split()[0] for line in lines[1:]) == ["done", "long", "nan"]


def _strict(text):
    def refuse(name):
        raise ValueError(f"{name} in --json output")
    return json.loads(text, parse_constant=refuse)


def test_damaged_records_and_configs_cost_a_warning_each_never_the_listing(ptrain, tmp_path):
    good = [START, _epoch(1, 0.5), _epoch(2, 0.7), {"kind": "end", "step": 20}]
    _run(tmp_path / "runs/good", *good, files_=[MODEL])
    lines = _run(tmp_path / "runs/lines", *good, files_=[MODEL])
    with open(lines.file(METRICS), "ab") as f:
        f.write(b'[1, 2]\n\xff\xfe binary\n{"kind": "epoch", "epoch": "x"}\n{"time": NaN}\n')
    configs = {"binary": b"\xff\x00\x01", "not-toml": b"epochs = = 3", "typed":
               b'dataset = 5\nmodel = "lenet"\nepochs = "x"', "nan": b"epochs = nan"}
    for name, text in configs.items():
        _run(tmp_path / "runs" / name, *good, files_=[MODEL]).file(CONFIG).write_bytes(text)
    _run(tmp_path / "runs/fifo").file(CONFIG).unlink()
    os.mkfifo(tmp_path / "runs/fifo" / CONFIG)  # a plain read would wait for a writer forever
    _run(tmp_path / "runs/folder").file(METRICS).mkdir()
    _run(tmp_path / "runs/new\nline", *good, files_=[MODEL])
    r = ptrain("runs", "--sort", "name")
    assert r.code == 0
    rows = r.out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [
        "binary", "fifo", "folder", "good", "lines", "nan", "new\\nline", "not-toml", "typed"]
    assert rows[4].split()[:5] == ["lines", "fake", "lenet", "2/3", "70.00%"]  # good lines count
    assert rows[8].split()[1:4] == ["?", "lenet", "2"]  # the wrong types left blank, no more
    warned = r.err.splitlines()
    assert "warning: runs/lines/metrics.jsonl: skipped 4 unreadable lines (first: line 5)" in warned
    for name in ("binary", "fifo", "nan", "not-toml", "typed"):
        assert any(w.startswith(f"warning: runs/{name}/config.toml: ") for w in warned), name
    assert any(w.startswith("warning: runs/folder/metrics.jsonl: cannot read it") for w in warned)
    assert len(warned) == 7 and all(w.startswith("warning: ") for w in warned)
    found = {x["run"]: x for x in _strict(ptrain("runs", "--json").out)}
    assert len(found) == 9 and found["nan"]["epochs"] is None and found["good"]["epochs"] == 3


def test_the_terminal_table_shows_names_as_they_are_never_as_markup(tmp_path):
    for name in ("[/]", "[bold]x"):
        _run(tmp_path / name, START, _epoch(1, 0.5), files_=[LAST])
    reader, writer = os.openpty()
    with os.fdopen(writer, "w") as terminal:
        runs_table.print_runs(listing.list_runs(tmp_path, "name"), terminal)
    out = b""
    while select.select([reader], [], [], 1)[0]:
        try:
            out += os.read(reader, 65536)
        except OSError:  # the other end is closed: all read
            break
    os.close(reader)
    text = out.decode()
    assert "[/]" in text and "[bold]x" in text and "ptrain resume" in text


def test_resume_of_a_run_with_bad_lines_drops_them_and_leaves_no_lock(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--quiet").code == 0
    run = tmp_path / "runs/fake"
    text = (run / METRICS).read_bytes().split(b"\n")
    (run / METRICS).write_bytes(b"\n".join([*text[:2], b"\xff\xfe", b'{"kind": 5}', *text[2:]]))
    (run / METRICS).rename(run / "kept")
    (run / METRICS).mkdir()  # unreadable: the resume refuses rather than lose the records
    r = ptrain("resume", run, "--epochs", "2", "--quiet")
    assert r.code == 1 and f"cannot read {run / METRICS}: " in r.err
    # (not a folder run's list of bad files, nor the trackers' ids)
    written = [f for f in RUN_FILES if f not in (SKIPPED, TRACKERS)]
    assert sorted(os.listdir(run)) == sorted([*written, "kept"])  # no run.lock
    (run / METRICS).rmdir()
    (run / "kept").rename(run / METRICS)
    r = ptrain("resume", run, "--epochs", "2", "--quiet")
    assert r.code == 0, r.err
    assert (f"warning: {run / METRICS}: dropped 2 unreadable lines (first: line 3) as the run "
            "resumes") in r.err
    assert sorted(os.listdir(run)) == sorted(written)  # no run.lock, no temporary file
    assert all(json.loads(x) for x in (run / METRICS).read_text().splitlines())
    seen = ptrain("runs", "--json")
    assert seen.err == "" and (seen.json()[0]["status"], seen.json()[0]["epochs_done"]) == (
        "finished", 2)


def test_a_run_reading_its_folder_has_only_its_lock_and_is_listed(tmp_path):
    """Before its first step (minutes of decoding a large folder) a run holds run.lock and
    nothing else: it was missing from the table, and so was one killed then."""
    reading, killed = tmp_path / "reading", tmp_path / "killed"
    reading.mkdir()
    killed.mkdir()
    (killed / LOCK).write_text("12345\n")  # left, unlocked, by a SIGKILLed run
    assert runlock.lock(reading / LOCK) is None
    try:
        rows = listing.list_runs(tmp_path)
    finally:
        runlock.unlock(reading / LOCK)
    assert [(r["run"], r["status"], r["detail"]) for r in rows] == [
        ("reading", "running", f"pid {os.getpid()}"),
        ("killed", "failed", "killed before its first step")]
    assert rows[1]["modified"] == (killed / LOCK).stat().st_mtime


def test_a_finished_run_shows_the_figures_of_its_last_line(tmp_path):
    """An early-stopped run (a hostile trial): its last line said test acc 96.50% (model.pth,
    the best epoch's) after 12.8 s of training; the table said 96.35% (the last epoch's) and
    54 s (the time evaluations took too)."""
    _run(tmp_path / "es", START, _epoch(1, 0.9620), _epoch(2, 0.9650), _epoch(3, 0.9635),
         {"kind": "end", "test_acc": 0.9650, "train_s_total": 12.8, "elapsed_s": 54.0,
          "early_stop": 3, "best_epoch": 2}, files_=[MODEL])
    run = listing.list_runs(tmp_path)[0]
    assert (run["last_acc"], run["train_s"], run["elapsed_s"]) == (0.9650, 12.8, 54.0)
