"""Fault injection with real processes and real files: signals to a running `ptrain train`, full
and read-only disks (real tmpfs mounts), a vanished run directory, a diverging run, bad inputs."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked
import pytest
import torch
from conftest import read_metrics, run_cli
from forked import Forked

PY = [sys.executable, "-m", "pytorch_cli"]
# LeNet has dropout: an exact resume needs the RNG state back as well as the weights; three
# epochs (about 2 s here) leave a signal sent at batch 10 time to land before the run ends
RUN = ["train", "--dataset", "fake", "--model", "lenet", "--epochs", "3", "--batch-size", "16",
       "--log-interval", "5", "--deterministic"]


def _one_line_error(out: subprocess.CompletedProcess | tuple, codes=(1, 2)) -> str:
    code, err = (out.returncode, out.stderr) if hasattr(out, "returncode") else out
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in codes and "Traceback" not in err, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("ptrain: error: "), err
    return lines[0]


@pytest.fixture(scope="session")  # session: made once per xdist worker
def full(tmp_path_factory) -> dict:
    """An uninterrupted run to compare the interrupted ones with (in-process: only the
    interrupted runs need a process of their own, to signal)."""
    root = tmp_path_factory.mktemp("faults")
    assert run_cli([*RUN, "--run-dir", "full", "--quiet"], root).code == 0
    return torch.load(root / "full/last.pt", weights_only=True)


def _wait_for(proc: subprocess.Popen, metrics: Path, ready) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        records = read_metrics(metrics.parent) if metrics.exists() else []
        if any(ready(r) for r in records):
            return
        time.sleep(0.02)
    raise AssertionError("the run ended before the signal could be sent")


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["position"]["step"] == b["position"]["step"]
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)]  # SIGUSR1: the SLURM test's
)
def test_a_signal_saves_the_exact_position_and_resume_ends_bit_exact(full, ptrain, tmp_path, sig,
                                                                     code):
    proc = Forked([*RUN, "--run-dir", "cut"], tmp_path)
    _wait_for(
        proc, tmp_path / "cut/metrics.jsonl", lambda r: r["kind"] == "train" and r["batch"] >= 10
    )
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    saved = torch.load(tmp_path / "cut/last.pt", weights_only=True)["position"]
    assert f"stopped ({sig.name}) in epoch {saved['epoch'] + 1}" in out
    assert "`ptrain resume cut`" in out
    assert saved["step"] >= 10 and 0 < saved["batch"] < 125  # mid-epoch, where it stopped
    resumed = ptrain("resume", "cut")
    assert resumed.code == 0, resumed.err
    _assert_same_state(torch.load(tmp_path / "cut/last.pt", weights_only=True), full)


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_the_printing_not_the_run(tmp_path):
    """`ptrain train | head -1`: the pipe closes after the first line; the run goes on."""
    proc = subprocess.Popen(
        [*PY, "train", "--dataset", "fake", "--epochs", "2", "--run-dir", "piped"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().startswith("training lenet")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 0 and err == ""
    assert (tmp_path / "piped/model.pth").exists()
    assert read_metrics(tmp_path / "piped", ("end",))[0]["stopped"] is None


def test_a_full_disk_under_the_output_ends_the_printing_with_a_warning_not_the_run(tmp_path):
    """`ptrain train > train.log` with that disk full (/dev/full: every write fails ENOSPC):
    the run trains to its end and saves; one warning says the printing stopped."""
    proc = forked.Forked(["train", "--dataset", "fake", "--epochs", "1", "--run-dir", "full"],
                         tmp_path, stdout="/dev/full")
    _, err = proc.communicate(60)
    assert proc.returncode == 0 and err == (
        "warning: cannot write the output (No space left on device): printing stops here, the "
        "run goes on; its records go on into metrics.jsonl\n")
    assert (tmp_path / "full/model.pth").exists()
    assert read_metrics(tmp_path / "full", ("end",))[0]["stopped"] is None


def test_a_listing_onto_a_full_disk_names_standard_output(ptrain, tmp_path, mounts):
    """`ptrain runs > runs.txt` on a full disk said only "[Errno 28] No space left on device"."""
    assert ptrain("train", "--dataset", "fake", "--max-steps", "1", "--quiet").code == 0
    disk = mounts(tmp_path / "disk", "64k")
    with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
        f.write(bytes(1 << 20))  # fills it
    for args in (["runs"], ["runs", "--json"]):
        proc = forked.Forked(args, tmp_path, stdout=str(disk / "runs.txt"))
        _, err = proc.communicate(60)
        assert proc.returncode == 1 and err == (
            "ptrain: error: cannot write standard output: No space left on device\n")


@pytest.mark.slow
def test_a_closed_terminal_stops_the_run_at_a_saved_position(tmp_path):
    """The terminal (or the SSH session) goes away: the kernel's SIGHUP stops the run at a saved
    position, though nothing can be printed any more (writes to a hung-up terminal fail)."""
    import pty
    import select
    pid, fd = pty.fork()  # the child's controlling terminal: closing our end hangs it up
    if pid == 0:
        os.chdir(tmp_path)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a suite run under nohup ignores it
        os.execv(sys.executable, [*PY, *RUN, "--run-dir", "tty"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # drain the bar, so the child never blocks on a full pty
        if select.select([fd], [], [], 0.05)[0]:
            os.read(fd, 65536)
        done = read_metrics(tmp_path / "tty") if (tmp_path / "tty/metrics.jsonl").exists() else []
        if any(r["kind"] == "train" and r["batch"] >= 10 for r in done):
            break
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129
    stop = read_metrics(tmp_path / "tty", ("stop",))[0]
    saved = torch.load(tmp_path / "tty/last.pt", weights_only=True)["position"]
    assert stop["reason"] == "SIGHUP" and saved["batch"] == stop["batch"]
    assert saved["step"] == stop["step"] >= 10


@pytest.mark.slow
def test_under_nohup_a_hangup_changes_nothing(tmp_path):
    proc = subprocess.Popen(
        [*PY, "train", "--dataset", "fake", "--epochs", "2", "--run-dir", "nohup"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )  # as nohup does
    _wait_for(proc, tmp_path / "nohup/metrics.jsonl", lambda r: r["kind"] == "train")
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert (tmp_path / "nohup/model.pth").exists() and not read_metrics(
        tmp_path / "nohup", ("stop",)
    )


def test_a_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tmp_path):
    # big steps (mnist-cnn's: about 0.5 s here), so that the second Ctrl-C lands while the first
    # one waits for the step to end; a checkpoint every 2 steps
    proc = Forked([*RUN, "--model", "mnist-cnn", "--epochs", "2", "--batch-size", "512",
                   "--save-interval", "2", "--run-dir", "cut"], tmp_path)
    while proc.poll() is None and not (tmp_path / "cut/last.pt").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.15)  # two pending SIGINTs would merge into one
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    line = _one_line_error((proc.returncode, err), codes=(130,))
    assert "interrupted twice" in line and "ptrain resume cut" in line
    saved = torch.load(tmp_path / "cut/last.pt", weights_only=True)  # intact, loadable
    assert saved["position"]["step"] >= 2 and not list((tmp_path / "cut").glob(".*tmp*"))


def test_sigusr1_under_slurm_saves_then_requeues_the_job(full, ptrain, tmp_path):
    bin_dir = tmp_path / "bin"  # SLURM's scontrol, as far as this job can tell
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/scontrol.args\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = Forked([*RUN, "--name", "job", "--resume", "auto"], tmp_path, env)
    _wait_for(proc, tmp_path / "runs/job/metrics.jsonl", lambda r: r["kind"] == "train")
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "SLURM job 4242 requeued" in err, err
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert (tmp_path / "runs/job/last.pt").exists()
    # the requeued job runs the same line: it continues, and a third start has nothing to do
    again = ptrain(*RUN, "--name", "job", "--resume", "auto")
    assert again.code == 0 and "resuming at epoch 1" in again.out, again.err
    _assert_same_state(torch.load(tmp_path / "runs/job/last.pt", weights_only=True), full)
    done = ptrain(*RUN, "--name", "job", "--resume", "auto")
    assert done.code == 0 and "nothing to do" in done.out
    done = ptrain(*RUN, "--name", "job", "--resume", "auto", "--json")  # stdout: JSON, still
    assert done.code == 0 and "nothing to do" in done.err
    assert json.loads(done.out)["nothing_to_do"] is True
    other = ptrain(*RUN, "--lr", "0.5", "--name", "job", "--resume", "auto")
    assert "was made with other settings (lr)" in _one_line_error((other.code, other.err))


def test_a_diverging_run_stops_before_saving_and_json_stays_valid(ptrain, tmp_path):
    r = ptrain("train", "--dataset", "fake", "--lr", "1e6", "--epochs", "2", "--run-dir", "nan",
               "--json")
    line = _one_line_error((r.code, r.err.split("\n", 1)[-1]), codes=(3,))
    assert "became NaN in epoch 1" in line and "--lr" in line and "--clip-grad" in line
    assert sorted(p.name for p in (tmp_path / "nan").iterdir()) == ["config.toml", "metrics.jsonl"]
    for text in (tmp_path / "nan/metrics.jsonl").read_text().splitlines():
        json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))


def test_detect_anomaly_names_the_operation_that_made_the_nan(tmp_path):
    """A process of its own: autograd's warning goes to the real stderr."""
    out = forked.run(["train", "--dataset", "fake", "--lr", "1e6", "--epochs", "1", "--run-dir",
                      "nan", "--detect-anomaly"], tmp_path, timeout=120)
    assert out.returncode == 3 and "Error detected in" in out.stderr  # autograd's own warning
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ptrain: error: autograd anomaly mode: Function '") and "nan" in last
    assert not (tmp_path / "nan/last.pt").exists()


def test_eval_json_of_a_dead_model_has_no_bare_nan(ptrain, tmp_path):
    from pytorch_cli.models.zoo import build
    weights = build("lenet", 1, 10, 28).state_dict()
    weights["fc2.bias"][:] = float("nan")
    torch.save(weights, tmp_path / "dead.pt")
    out = ptrain("eval", "dead.pt", "--model", "lenet", "--dataset", "fake", "--json")
    result = json.loads(out.out, parse_constant=lambda c: pytest.fail(f"bare {c} in --json"))
    assert result["loss"] is None and result["total"] == 500
    from PIL import Image
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    out = ptrain("predict", "dead.pt", "digit.png", "--model", "lenet", "--dataset", "fake",
                 "--json")
    result = json.loads(out.out, parse_constant=lambda c: pytest.fail(f"bare {c} in --json"))
    assert result["results"][0]["top"][0]["prob"] is None


@pytest.mark.slow
def test_a_json_reader_that_goes_away_is_one_line_and_exit_141(tmp_path):
    """`ptrain train --json | consumer` where the consumer exits first: the run is saved, and the
    lost summary is said, with the exit code a shell gives a writer its pipe killed."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    done = subprocess.run([*PY, "train", "--dataset", "fake", "--epochs", "1", "--max-steps", "3",
                           "--json", "--quiet", "--run-dir", "r"], cwd=tmp_path, stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 141, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == ("ptrain: error: the reader of standard output went "
                                            "away (broken pipe); what was left to print is lost")
    assert "Traceback" not in done.stderr and (tmp_path / "r/model.pth").exists()


def test_a_listing_whose_reader_goes_away_ends_quietly_as_ls_does(tmp_path):
    """`ptrain runs | head`: head leaving is what it is for; exit 141, and no error line."""
    (tmp_path / "runs/a").mkdir(parents=True)
    (tmp_path / "runs/a/config.toml").write_text('dataset = "fake"\n')
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run([*PY, "runs"], cwd=tmp_path, stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert done.returncode == 141 and done.stderr == ""


def test_closed_stdout_is_no_crash_and_the_run_is_made(ptrain, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python sets when started with >&-
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--max-steps", "2").code == 0
    assert (tmp_path / "runs/fake/model.pth").exists()


def test_ctrl_c_while_the_process_exits_prints_no_traceback(tmp_path):
    """SIGINT after "done", while the interpreter shuts down: it exits with the run's code."""
    code = ("import atexit, os, signal, time, sys; "
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5))); "
            "from pytorch_cli.commands.cli import main; sys.argv = ['ptrain', '--version']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stdout.split()[0], done.stderr) == (0, "ptrain", "")


def test_a_full_disk_during_training_keeps_the_last_checkpoint(ptrain, tmp_path, mounts):
    disk = mounts(tmp_path / "disk", "300k")  # last.pt of lenet (~180 kB) fits once, best.pt not
    out = ptrain("train", "--dataset", "fake", "--epochs", "2", "--run-dir", disk / "run")
    line = _one_line_error((out.code, out.err))
    assert f"cannot write {disk}/run/" in line and "No space left on device" in line
    assert torch.load(disk / "run/last.pt", weights_only=True)["position"]["epoch"] == 1
    assert not [p for p in (disk / "run").iterdir() if ".tmp" in p.name]  # no temporary file left


def test_a_full_disk_for_the_records_names_metrics_jsonl(tmp_path, mounts):
    from pytorch_cli.platform.errors import PtrainError
    from pytorch_cli.store.rundir import RunDir
    disk = mounts(tmp_path / "disk", "64k")
    with open(disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 4096)
    with pytest.raises(PtrainError, match=f"cannot write {disk}/metrics.jsonl: No space left"):
        RunDir(disk).append_metrics({"kind": "start"})


@pytest.fixture(scope="session")  # session: made once per xdist worker
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    assert run_cli(["train", "--dataset", "fake", "--epochs", "1", "--run-dir", "run"],
                   root).code == 0
    return root / "run"


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "torchscript", "safetensors"])
def test_every_export_format_fails_cleanly_on_a_full_disk(ptrain, tmp_path, mounts, trained, fmt):
    disk = mounts(tmp_path / "disk", "32k")
    r = ptrain("export", trained, "--format", fmt, "-o", disk / f"model.{fmt}")
    line = _one_line_error((r.code, r.err))
    assert "No space left on device" in line and "nothing was written" in line
    assert list(disk.iterdir()) == []  # no half file, no temporary file


def test_a_read_only_or_vanished_run_directory_is_one_line(ptrain, tmp_path, mounts):
    ro = mounts(tmp_path / "ro", "1m", ",ro")
    out = ptrain("train", "--dataset", "fake", "--epochs", "1", "--run-dir", ro / "run")
    assert "Read-only file system" in _one_line_error((out.code, out.err))
    proc = Forked(["train", "--dataset", "fake", "--epochs", "3", "--save-interval", "5",
                   "--run-dir", "gone"], tmp_path)
    _wait_for(proc, tmp_path / "gone/metrics.jsonl", lambda r: r["kind"] == "train")
    # one atomic rename: the run's next write finds no directory (an `rm -rf` could race with
    # the run writing a new file into it)
    os.rename(tmp_path / "gone", tmp_path / "moved")
    _, err = proc.communicate(timeout=60)
    assert "No such file or directory" in _one_line_error((proc.returncode, err))


def test_temporary_files_of_a_killed_save_are_cleaned_at_the_next_start(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--run-dir", "run").code == 0
    (tmp_path / "run/.last.pt.tmp99999").write_bytes(b"half a checkpoint")  # a killed save's
    assert ptrain("resume", "run", "--epochs", "2").code == 0
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_debug_shows_the_traceback_and_only_then(ptrain):
    plain = ptrain("eval", "missing.pt")
    _one_line_error((plain.code, plain.err))
    debug = ptrain("eval", "missing.pt", "--debug")
    assert debug.code == 1 and "Traceback" in debug.err and "ptrain: error:" in debug.err


BAD_INPUTS = [  # (what a user typed, part of the one line that must answer it)
    (["train", "--dataset", "fake", "--val-split", "0.9999"], "--val-split"),
    (["train", "--dataset", "fake", "--name", "../../x"], "plain name"),
    (["train", "--dataset", "fake", "--run-dir", "a-file"], "is a file"),
    (["train", "--dataset", "mnist", "--data-dir", "empty", "--no-download"], "empty"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--model", "vgg"], "--model"),
    (["train", "--device", "cuda:7"], "--device"),
    (["train", "--no-such-flag"], "No such option"),
    (["train", "--resume", "sometimes"], "--resume"),
    (["train", "--dataset", "fake", "--resume", "auto"], "--name or --run-dir"),
    # a dry run checks the name as the run would (it had said "dry run ok": a hostile trial)
    (["train", "--dataset", "fake", "--dry-run", "--name", "a/b"], "plain name"),
    (["train", "--dataset", "fake", "--dry-run", "--resume", "auto"], "--name or --run-dir"),
    (["train", "--nproc", "-1"], "--nproc"),
    (["train", "--no-accel", "--device", "cuda"], "--no-accel/--no-cuda contradict --device cuda"),
    (["train", "--profile", "-1"], "--profile"),
    (["train", "--config", "missing.toml"], "missing.toml"),
    (["eval", "missing.pt"], "missing.pt"),
    (["eval", "a-file"], "a-file"),
    (["resume", "empty"], "has no last.pt (it ended before its first save, or ran with "),
    (["resume", "empty", "--lr", "0.1"], "ptrain resume takes no --lr: a resumed run keeps its "
                                         "settings (--lr too); a new run with --init-from"),
    (["export", "missing.pt", "--format", "onnx"], "missing.pt"),
    (["export", "missing.pt", "--format", "zip"], "--format"),
    (["predict", "missing.pt", "x.png"], "missing.pt"),
    (["eval", "missing.pt", "--device", "gpu"], "--device must be auto, cpu, cuda, cuda:N or mps, "
                                                "got 'gpu'"),  # (it was torch's RuntimeError)
    (["predict", "missing.pt", "x.png", "--device", "cuda:x"], "--device must be auto, cpu,"),
]


@pytest.mark.parametrize("args, says", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_every_bad_input_is_one_line_and_a_usage_or_data_exit_code(ptrain, tmp_path, monkeypatch,
                                                                   args, says):
    (tmp_path / "a-file").write_text("not a checkpoint")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PTRAIN_DATA_DIR", str(tmp_path / "empty"))
    r = ptrain(*args)  # in-process: the same main() as the console script, without 4 s of imports
    assert says in _one_line_error((r.code, r.err))
