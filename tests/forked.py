"""`ptrain ARGS` as a real process of its own, without the 4-5 s each new interpreter spends
importing torch and torch._dynamo (here, most of what a signal or SIGKILL test costs).

The processes are forked from multiprocessing's fork server, which imported ptrain once and ran
no torch operation, so no OpenMP pool is inherited. Each is a real process: its own pid, real
signals and exit codes, its output in files. Tests that are about a fresh interpreter (entry
points, torch-free start-up, time from launch) or read a pipe while it runs use subprocess.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# the server starts with the first process, importing these once
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["torch", "torch._dynamo", "pytorch_cli.commands.cli", "forked"])


def _child(args: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["ptrain", *args]
    from pytorch_cli.commands.cli import main
    main(args)  # raises SystemExit: multiprocessing makes its code the exit code


class Forked:
    """The parts of subprocess.Popen these tests use."""

    def __init__(self, args: list, cwd: Path, env: dict | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="forked-")  # removed with this object
        self._files = [os.path.join(self._dir.name, name) for name in ("stdout", "stderr")]
        self._proc = _CONTEXT.Process(target=_child, args=([str(a) for a in args], str(cwd),
                                                      dict(env or os.environ), *self._files))
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise TimeoutError(f"ptrain (pid {self.pid}) still running after {timeout} s")
        return self._proc.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = (Path(path).read_text(errors="replace") for path in self._files)
        return out, err


def run(args: list, cwd: Path, env: dict | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(..., capture_output=True, text=True) for `ptrain ARGS`, forked."""
    proc = Forked(args, cwd, env)
    code = proc.wait(timeout)
    return subprocess.CompletedProcess(args, code, *proc.communicate())
