"""atomic_write, read_regular and appends, with real files, links, devices and pipes."""

import os
from pathlib import Path

import pytest

from pytorch_cli.platform import files


def test_atomic_write_writes_the_new_content(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    files.atomic_write(target, lambda f: f.write(b"new content"))
    assert target.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_write_creates_a_missing_file(tmp_path):
    files.atomic_write(tmp_path / "config.toml", lambda f: f.write(b"epochs = 1\n"))
    assert (tmp_path / "config.toml").read_bytes() == b"epochs = 1\n"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_write_never_writes_through_a_planted_link(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    run = tmp_path / "run"
    run.mkdir()
    # where earlier versions put the temporary file (a predictable name), and the target itself
    (run / f".last.pt.tmp{os.getpid()}").symlink_to(outside)
    (run / "last.pt").symlink_to(outside)
    files.atomic_write(run / "last.pt", lambda f: f.write(b"checkpoint"))
    assert outside.read_bytes() == b"precious"
    target = run / "last.pt"
    assert not target.is_symlink() and target.read_bytes() == b"checkpoint"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes files, not 0600


def test_atomic_write_never_replaces_a_device_or_a_pipe(tmp_path):
    """A rename would put a plain file where /dev/full was (as root: a hostile trial's `ptrain
    plot -o /dev/full` did): a device, a named pipe or a socket is refused, and stays."""
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="it is a named pipe, never replaced by a file"):
        files.atomic_write(tmp_path / "pipe", lambda f: f.write(b"x"))
    with pytest.raises(OSError, match="a character device"):
        files.atomic_write_pair(tmp_path / "a.onnx", b"x", Path("/dev/null"), b"y")
    assert files.special(tmp_path / "pipe") == "a named pipe" and sorted(
        p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file, no a.onnx
    assert files.special(Path("/dev/null")) == "a character device"
    assert files.special(tmp_path / "missing") == "" == files.special(tmp_path)


def test_only_the_temporary_files_atomic_write_leaves_count_as_leftovers(tmp_path):
    mine = [".last.pt.k2j4_x9.ptrain-tmp", ".config.toml.a1b2c3.ptrain-tmp", ".last.pt.tmp4242"]
    users = [".env.tmpl", ".notes.tmp", ".vimrc.tmpfile", ".cache.tmp.json", ".last.pt.tmpx",
             "last.pt.tmp1", ".other.pt.tmp12"]
    for name in mine + users:
        (tmp_path / name).write_bytes(b"")
    found = files.leftovers(tmp_path, ("last.pt", "config.toml"))
    assert sorted(p.name for p in found) == sorted(mine)


def test_an_append_never_goes_through_a_link(tmp_path):
    dangling = tmp_path / "metrics.jsonl"
    dangling.symlink_to(tmp_path / "made-outside.jsonl")
    with pytest.raises(OSError, match="symbolic link"):
        files.open_append(dangling)
    assert not (tmp_path / "made-outside.jsonl").exists()


def test_read_regular_refuses_what_would_block_or_never_end_without_opening_it_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # a blocking open would wait for a writer forever
    for path, kind in ((tmp_path / "fifo", "a FIFO"), (Path("/dev/zero"), "a device"),
                       (tmp_path, "a directory")):
        with pytest.raises(files.NotRegular, match=f"not a regular file \\({kind}\\)"):
            files.read_regular(path)
    (tmp_path / "big").write_bytes(b"x" * 100)
    assert files.read_regular(tmp_path / "big", max_bytes=10) == b"x" * 11  # one over: too big
    assert files.read_regular(tmp_path / "big") == b"x" * 100
