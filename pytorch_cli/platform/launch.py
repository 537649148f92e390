"""`ptrain train --nproc N` (and `resume --nproc N`): hand the job to torch.distributed.run
(torchrun) inside this process, as torchtune's `tune run` does. The workers are torchrun's: the
same process model, environment variables and elastic restarts as `torchrun --standalone
--nproc-per-node N -m pytorch_cli train ...`; ptrain spawns nothing of its own."""

from __future__ import annotations

import logging

from pytorch_cli.platform import signals
from pytorch_cli.platform.errors import PtrainError, UsageError

OWN_FLAGS = ("--nproc", "--max-restarts")  # this process's flags, not the workers'


def worker_argv(argv: list[str], run_dir: str) -> list[str]:
    """The workers' command line: ours without --nproc/--max-restarts (either form, `--f N` or
    `--f=N`), with the run directory fixed so that every worker, restarted ones too, uses it."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in OWN_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in OWN_FLAGS)):
            out.append(arg)
    return out + ["--run-dir", run_dir] if run_dir else out


def handoff(argv: list[str], nproc: int, max_restarts: int, run_dir: str) -> None:
    """Run `python -m pytorch_cli` + argv in `nproc` torchrun workers on this machine; returns
    when they all finished, raises PtrainError (with the failed worker's exit code) if not."""
    from pytorch_cli.platform import distributed
    if nproc < 1 or max_restarts < 0:
        raise UsageError("--nproc must be at least 1 (and --max-restarts 0 or more)")
    if distributed.launched():
        raise UsageError("--nproc: this is already a torchrun worker; leave --nproc to torchrun's "
                         "--nproc-per-node")
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}",
                                f"--max-restarts={max_restarts}", "-m", "pytorch_cli",
                                *worker_argv(argv, run_dir)])
    for name in list(logging.root.manager.loggerDict):  # the ranks and our last line say it all
        if name.startswith(("torch.distributed.run", "torch.distributed.elastic")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except SignalException as e:
        # torchrun's agent caught SIGTERM/SIGINT, passed it to the workers (each in a session of
        # its own, so they get it once) and waited for them: they saved and said where. Exit as
        # a single process would: 128 + the signal, with nothing more to say.
        stopped = PtrainError(f"stopped by {e.sigval.name}", exit_code=128 + int(e.sigval))
        stopped.echo = True
        raise stopped from None
    except ChildFailedError as e:
        rank, failure = _cause(e)
        code = failure.exitcode
        # a rank stopped by a signal: every rank saved, rank 0 said where; a usage error (2):
        # rank 0 said it (cli.main), the settings being every rank's. Nothing more to say
        if code in (2, *signals.EXIT_CODES.values()):
            said = PtrainError("stopped", exit_code=code)
            said.echo = True
            raise said from None
        how = (f"was killed by {failure.signal_name()}" if code < 0 else f"exited with code {code}")
        raise PtrainError(f"the job stopped: worker rank {rank} {how}"
                          + (f" after {max_restarts} restart(s)" if max_restarts else ""),
                          exit_code=code if code > 0 else 1) from None


def _cause(e) -> tuple[int, object]:
    """The failed worker to name: one a signal killed (SIGKILL, an OOM kill, a crash) over the
    first one torchrun saw fail, which may be a peer that only stopped because it lost that
    worker (exit 1, faster than the agent noticed the death); not SIGTERM, which the agent
    itself sends to the workers left after a failure."""
    import signal
    killed = [(rank, f) for rank, f in sorted(e.failures.items())
              if f.exitcode < 0 and -f.exitcode != signal.SIGTERM]
    return killed[0] if killed else e.get_first_failure()
