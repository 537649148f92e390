"""`ptrain ARGS` as a real process of its own, without the 4-5 s each new interpreter spends
importing torch and torch._dynamo (here, most of what a signal or SIGKILL test costs).

The processes are ptrain's own warm-started ones (pytorch_cli/commands/warmstart.py, as a
sweep's trials): forked from a server that imported ptrain once and ran no torch operation.
Each is a real process: its own pid, real signals and exit codes, its output in files. Tests
that are about a fresh interpreter (entry points, torch-free start-up, time from launch) or
read a pipe while it runs use subprocess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from pytorch_cli.commands import warmstart


class Forked:
    """The parts of subprocess.Popen these tests use."""

    def __init__(self, args: list, cwd: Path, env: dict | None = None, stdout: str = ""):
        """`stdout`: a file for the output to go to instead (/dev/full, never read back)."""
        self._dir = tempfile.TemporaryDirectory(prefix="forked-")  # removed with this object
        self._files = [stdout or os.path.join(self._dir.name, "stdout"),
                       os.path.join(self._dir.name, "stderr")]
        self._read = [not stdout, True]
        with contextlib.chdir(cwd):
            self._child = warmstart.start([str(a) for a in args], dict(env or os.environ),
                                          *map(Path, self._files))
        self.pid = self._child.pid

    @property
    def returncode(self) -> int | None:
        return self._child.poll()

    def poll(self) -> int | None:
        return self._child.poll()

    def send_signal(self, sig: int) -> None:
        self._child.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._child.process.join(timeout)
        if self.poll() is None:
            raise TimeoutError(f"ptrain (pid {self.pid}) still running after {timeout} s")
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = (Path(path).read_text(errors="replace") if read else ""
                    for path, read in zip(self._files, self._read))
        return out, err


def run(args: list, cwd: Path, env: dict | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(..., capture_output=True, text=True) for `ptrain ARGS`, forked."""
    proc = Forked(args, cwd, env)
    code = proc.wait(timeout)
    return subprocess.CompletedProcess(args, code, *proc.communicate())
