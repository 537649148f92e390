"""The run-directory lock, with real files and a real second process."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytorch_cli.platform import runlock

ROOT = Path(__file__).resolve().parents[1]
CHILD = """import sys
from pytorch_cli.platform import runlock
print(runlock.lock(sys.argv[1]), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def lock_path(tmp_path):
    path = tmp_path / ".lock"
    yield path
    runlock.unlock(path)  # never leave a lock (and its open file) behind for the next test


def test_lock_writes_our_pid_and_unlock_removes_the_file(lock_path):
    assert runlock.holder(lock_path) is None  # no file yet
    assert runlock.lock(lock_path) is None
    assert lock_path.read_text() == f"{os.getpid()}\n"
    assert runlock.holder(lock_path) == os.getpid()
    assert runlock.lock(lock_path) is None  # we hold it already
    runlock.unlock(lock_path)
    assert not lock_path.exists()
    assert runlock.holder(lock_path) is None
    runlock.unlock(lock_path)  # unlocking what we do not hold is harmless


def test_a_lock_held_by_another_process_is_refused_until_it_dies(lock_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the package under test, from any folder
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(lock_path)], cwd=lock_path.parent,
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout.readline() == "None\n"  # the child holds the lock now
        assert runlock.lock(lock_path) == child.pid
        assert runlock.holder(lock_path) == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert lock_path.read_text() == f"{child.pid}\n"  # the killed holder's file stays ...
    assert runlock.holder(lock_path) is None  # ... but means nothing: the kernel dropped the flock
    assert runlock.lock(lock_path) is None
    assert runlock.holder(lock_path) == os.getpid()


def test_a_runs_probe_of_the_lock_does_not_make_a_starting_run_refuse(lock_path, monkeypatch):
    """`ptrain runs` asks holder(), which holds the lock shared for a moment: a run starting
    in that moment waits it out rather than calling its directory in use (pid -1)."""
    monkeypatch.setattr(runlock, "LOCK_RETRY_S", 0.2)  # a loaded machine's scheduling: 0.8 s
    lock_path.write_text("")  # left by a finished or killed run
    probing, done = threading.Event(), threading.Event()

    def probe():
        fd = os.open(lock_path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # what holder() does
        probing.set()
        time.sleep(0.005)
        os.close(fd)
        done.set()

    thread = threading.Thread(target=probe)
    thread.start()
    probing.wait()
    assert runlock.lock(lock_path) is None and done.is_set()
    thread.join()
    assert runlock.holder(lock_path) == os.getpid()


def test_a_lock_file_unlinked_by_its_holders_unlock_is_never_held(lock_path):
    """A taker that opened the file, then its holder unlocked (the file removed): a lock on that
    unlinked file would let a third process take the new file too. It is refused and retaken."""
    assert runlock.lock(lock_path) is None
    opened = runlock._open_lock(lock_path)  # a second taker, between its open and its flock...
    runlock.unlock(lock_path)  # ...when the holder lets go: the file it opened is gone
    try:
        assert runlock._take(opened, lock_path) == -1  # locked, but not the file the path names
    finally:
        os.close(opened)
    assert runlock.lock(lock_path) is None and runlock.holder(lock_path) == os.getpid()
    assert lock_path.read_text() == f"{os.getpid()}\n"


def test_the_lock_is_never_taken_through_a_link(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    (tmp_path / "run.lock").symlink_to(outside)
    with pytest.raises(OSError, match="symbolic link"):
        runlock.lock(tmp_path / "run.lock")
    assert outside.read_bytes() == b"precious" and runlock.holder(tmp_path / "run.lock") is None


def test_a_forked_child_never_holds_its_parents_lock(lock_path):
    """DataLoader's workers are forked: a worker that kept the open file kept the flock after a
    SIGKILL of its parent, and the restarted run was refused as "in use" by a dead pid."""
    script = f"""import os, time
from pytorch_cli.platform import runlock
assert runlock.lock({str(lock_path)!r}) is None
child = os.fork()
if child == 0:
    os.write(1, b"child\\n")  # (after the fork's hooks ran)
    time.sleep(60)
    os._exit(0)
os.write(1, f"{{child}}\\n".encode())  # one write each: unbuffered prints interleave
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=env)
    lines = {parent.stdout.readline().strip() for _ in range(2)}  # in either order
    child = int((lines - {"child"}).pop())
    try:
        assert runlock.holder(lock_path) == parent.pid
        parent.kill()
        parent.wait()
        assert runlock.holder(lock_path) is None  # the child lives on, without the lock
        assert runlock.lock(lock_path) is None
    finally:
        os.kill(child, signal.SIGKILL)
