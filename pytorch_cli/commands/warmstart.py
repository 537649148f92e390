"""`ptrain` commands as child processes that start in under a second: forked from a server that
has already imported torch, torchvision and ptrain (multiprocessing's forkserver), not a fresh
interpreter, which spends 3-5 s on those imports before the command's first line. `ptrain
sweep` starts its trials so; the first waits for the server's imports, the rest do not.

The server only imports: it runs no torch op, starts no thread and never asks CUDA anything
(tested), so each fork begins as a fresh process would, CUDA untouched. What a fresh process
would take from its start, the child sets itself: the environment, torch's thread count from
OMP_NUM_THREADS (read by the OpenMP runtime when the server imported torch, not since), its
own session, its output file, SIGTERM when the sweep (or the server) dies, and
a fresh interpreter's exit (atexit callbacks, which multiprocessing's children skip).
Without a forkserver (Windows), a fresh interpreter as before.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # its exit handler registered before ours, so ours runs first
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from pytorch_cli.platform import signals

# what a trial imports on its way to its first step (-X importtime); the rest (trackers, timm,
# onnx) it imports itself as a fresh process would. The server skips a name it cannot import
# without a word: tests import each
PRELOAD = ["pytorch_cli.commands.warmserver", "pytorch_cli.commands.warmstart",
           "pytorch_cli.commands.cli",
           "pytorch_cli.commands.session", "pytorch_cli.training.loop",
           "pytorch_cli.data.datasets", "torchvision", "torch._dynamo", "torch.utils.flop_counter"]


@dataclass(eq=False)  # hashed by identity: kept in a set
class Child:
    """A forked child, with what the sweep uses of subprocess.Popen."""
    process: multiprocessing.process.BaseProcess
    returncode: int | None = None  # the exit code, or -N after signal N

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        if self.returncode is None:
            with _lock:
                self.returncode = self.process.exitcode
            if self.returncode is not None:
                _running.discard(self)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def start(args: list[str], env: dict[str, str], log: Path, errors: Path | None = None,
          fresh: bool = False) -> Child | subprocess.Popen:
    """`ptrain ARGS` with environment `env`, in this working directory, its output appended to
    `log` (stderr too, or to `errors`); `fresh`: in a new interpreter instead."""
    if fresh or "forkserver" not in multiprocessing.get_all_start_methods():
        with open(log, "ab") as out, (open(errors, "ab") if errors
                                      else contextlib.nullcontext(subprocess.STDOUT)) as err:
            return subprocess.Popen([sys.executable, "-m", "pytorch_cli", *args], stdout=out,
                                    stderr=err, start_new_session=True, env=env,
                                    preexec_fn=signals.sigterm_with_parent())
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # taken by the server's first start only
    # multiprocessing's child runs in this working directory (its spawn.prepare); not a
    # daemon: a daemonic process may not start the DataLoader workers of --workers N
    child = Child(context.Process(target=_main, daemon=False,
                                  args=(args, env, str(log), str(errors or log), os.getpid())))
    with _lock:
        child.process.start()
    _running.add(child)
    return child


def _sigterm_when_gone(pid: int) -> None:
    """SIGTERM to this process as soon as process `pid` ends: a trial whose sweep was killed
    saves where it is and stops (Linux's pidfd; elsewhere, the server's end is the signal)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (AttributeError, OSError):
        return

    def watch() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="ptrain-parent-watch", daemon=True).start()


_running: set[Child] = set()
# multiprocessing reads a forked child's exit code from a pipe, once: a second reader at the same
# moment (another job's start polls every child) would find it gone and call it 255
_lock = threading.Lock()


@atexit.register  # before multiprocessing's own exit, which waits for every child to end
def _stop_children() -> None:
    """A sweep ending by an error while trials run: they get SIGTERM and save where they are,
    as when a fresh trial's parent died, rather than this process waiting for them to finish."""
    for child in list(_running):
        child.send_signal(signal.SIGTERM)


def _main(args: list[str], env: dict[str, str], log: str, errors: str, parent: int) -> None:
    """The child: set up as a fresh process, run the command, exit as a fresh process does."""
    os.setsid()  # a session of its own: a terminal's Ctrl-C reaches the sweep, which passes it on
    # multiprocessing hands each child a copy of the parent's end of the pipe whose closing ends
    # the server: kept, a dead sweep's server would live on, and so would this child
    from multiprocessing import forkserver
    server = forkserver._forkserver
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    prctl = signals.sigterm_with_parent()
    if prctl is not None:  # the server's death: after the sweep's, once it has shut down
        prctl()
    _sigterm_when_gone(parent)  # the sweep's own, at once
    os.environ.clear()
    os.environ.update(env)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch
        torch.set_num_threads(int(threads))
    for stream, path in ((1, log), (2, errors)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, stream)
        os.close(fd)
    sys.argv = [sys.argv[0], *args]
    code = 1
    try:
        from pytorch_cli.commands import cli, warmserver
        signal.pthread_sigmask(signal.SIG_UNBLOCK, warmserver.BLOCKED)  # the server's mask
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:  # before ptrain's own handler: as a fresh interpreter, the
        traceback.print_exc()  # traceback, then the signal's own end (-2: a sweep's trial
        code = -signal.SIGINT  # interrupted, not failed with exit 1)
    # a fresh interpreter's exit: other threads waited for, then the atexit callbacks (MLflow's
    # and W&B's end their runs there), which a multiprocessing child would skip
    threading._shutdown()
    atexit._run_exitfuncs()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    signals.exit_now(code)
