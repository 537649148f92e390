"""One training session, as `train` and `resume` run it: the sinks (progress, metrics.jsonl,
TensorBoard), signals that stop at a saved position, and how the session ends: its summary,
or one error line and an exit code (130/143 for signals, 3 for a non-finite loss)."""

from __future__ import annotations

import json
import os
import sys

import typer

from pytorch_cli import config as configlib, distributed, events, loop, rundir, signals, stopping
from pytorch_cli.errors import PtrainError
from pytorch_cli.report import reporter


def _sinks(cfg: configlib.TrainConfig, run: rundir.RunDir | None, json_out: bool,
           quiet: bool) -> events.Emit:
    if not distributed.world().main:  # the other ranks print and write nothing
        return events.fanout()
    tensorboard = None
    if cfg.tensorboard and run is not None:
        from pytorch_cli import tensorboard_sink
        tensorboard = tensorboard_sink.sink(run.path, cfg.to_dict())
    return events.fanout(reporter(sys.stderr if json_out else sys.stdout, quiet),
                         run.metrics_sink() if run else None, tensorboard)


def _failure(e: BaseException, run: rundir.RunDir | None) -> tuple[str, BaseException | None]:
    """(the reason an abort record gives, the one-line error to raise instead, if any)."""
    if isinstance(e, KeyboardInterrupt):  # a second Ctrl-C: out at once
        resumable = run is not None and run.file(rundir.LAST).exists()
        return "interrupted", PtrainError(
            "interrupted twice: stopped at once; the checkpoints already written are intact"
            + (f" (continue with `ptrain resume {run.path}`)" if resumable else ""), exit_code=130)
    if isinstance(e, stopping.NonFiniteLoss):
        return "nan", None
    if isinstance(e, RuntimeError) and "returned nan values" in str(e):  # --detect-anomaly
        return "nan", stopping.NonFiniteLoss(f"autograd anomaly mode: {str(e).splitlines()[0]} "
                                             "Nothing was saved from that state")
    if isinstance(e, RuntimeError) and distributed.world().size > 1:  # DDP lost a peer
        return "error", distributed.peer_lost(e)
    return "error", None


def run_training(cfg: configlib.TrainConfig, run: rundir.RunDir | None, json_out: bool,
                 quiet: bool, requeue: bool = True, **kwargs) -> None:
    """Progress to stdout (stderr with --json), metrics.jsonl, the summary; signals stop the run
    at a saved position (exit 130 or 143). kwargs go to loop.train."""
    main = distributed.world().main  # asked now: after close() every process looks like rank 0
    emit = _sinks(cfg, run, json_out, quiet)
    stop = stopping.StopFlag()
    try:
        with signals.stop_on_signals(stop.request):
            summary = loop.train(cfg, run, emit, stop=stop, **kwargs)
    except BaseException as e:
        reason, instead = _failure(e, run)
        emit({"kind": "abort", "reason": reason,
              "error": (str(instead or e).strip().splitlines() or [type(e).__name__])[0][:300]})
        if instead is not None:
            raise instead from None
        raise
    finally:
        if run is not None and main:
            run.unlock()  # taken when the run directory was chosen
    distributed.close()
    if json_out and main:
        print(json.dumps(events.finite(summary)))
    if summary["stopped"]:
        if stop.reason == "SIGUSR1" and requeue and main and os.environ.get("SLURM_JOB_ID"):
            print(f"ptrain: {signals.slurm_requeue()}", file=sys.stderr)
        raise typer.Exit(signals.EXIT_CODES.get(stop.reason, 143))
