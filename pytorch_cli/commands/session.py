"""One train/resume session, start to end, with one owner: it joins the process group once,
takes the run directory's lock once (and releases it once), builds the sinks (progress,
metrics.jsonl, TensorBoard, MLflow, W&B) and closes them once, routes signals to a stop at a
saved position, and maps how the run ended to its summary or to one error line and an exit code
(130/143/129 for signals, 3 for a non-finite loss)."""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

import typer

from pytorch_cli.commands.prepare import Start
from pytorch_cli.output.report import reporter
from pytorch_cli.platform import distributed, events, runtime, signals
from pytorch_cli.platform.errors import PtrainError, first_line
from pytorch_cli.settings.run import RunOptions
from pytorch_cli.store.rundir import LAST
from pytorch_cli.training import loop, stopping
from pytorch_cli.training.job import UnfitState
from pytorch_cli.training.state import position_of


def run(prepare: Callable[[], Start], opts: RunOptions) -> None:
    """Run one session: `prepare` (rank 0 alone) says where it starts from."""
    distributed.init()
    main = distributed.world().main  # asked now: after close() every process looks like rank 0
    start = None
    # to the end of the session: a signal after "done" only sets the flag (a hostile trial's
    # finished runs exited 130 or 143 when one came while they closed down)
    with signals.stop_on_signals() as stop:
        try:
            start = distributed.from_main(lambda: claim(prepare()))
            summary = _train(start, opts, stop)
        finally:
            if start is not None and start.run_dir is not None and main:
                start.run_dir.unlock()
        distributed.close()  # not after a failure: a lost peer could make it hang
        if opts.json and main:
            print(json.dumps(events.json_safe(summary), allow_nan=False))
    if summary["stopped"]:
        reason = summary["stopped"]
        if reason == "SIGUSR1" and opts.requeue and main and os.environ.get("SLURM_JOB_ID"):
            print(f"ptrain: {signals.slurm_requeue()}", file=sys.stderr)
        raise typer.Exit(signals.EXIT_CODES.get(reason, 143))


def claim(start: Start) -> Start:
    """Lock the run directory, then mark it to be cleared (--overwrite) or drop the metrics
    logged after the checkpoint it continues from (they are logged again)."""
    run_dir = start.run_dir
    if run_dir is None:
        return start
    run_dir.lock()
    try:
        run_dir.replacing = start.clear  # once the run is set up (RunDir.create)
        if start.saved is not None:
            run_dir.trim_metrics(position_of(start.saved).step)
    except BaseException:
        run_dir.unlock()
        raise
    return start


def _train(start: Start, opts: RunOptions, stop: signals.StopFlag) -> dict:
    emit = _sinks(start, opts)
    try:
        return loop.train(start.cfg, start.run_dir, emit, stop=stop, resume=start.saved,
                          dry_run=opts.dry_run, profile=opts.profile)
    except BaseException as e:
        reason, instead = _failure(e, start)
        emit({"kind": "abort", "reason": reason,
              "error": first_line(instead or e)})
        if instead is not None:
            raise instead from None
        raise


def _sinks(start: Start, opts: RunOptions) -> events.Emit:
    if not distributed.world().main:  # the other ranks print and write nothing
        return events.fanout()
    cfg, run_dir = start.cfg, start.run_dir
    trackers = []
    if run_dir is not None:  # (not with --dry-run)
        from pytorch_cli.output import mlflow_sink, tensorboard_sink, wandb_sink
        config, resumed = cfg.to_dict(), start.saved is not None
        at = position_of(start.saved).step if resumed else None
        if cfg.tensorboard:
            trackers.append(tensorboard_sink.sink(run_dir.path, config))
        if cfg.mlflow:
            trackers.append(mlflow_sink.sink(run_dir, config, at))
        if cfg.wandb:
            trackers.append(wandb_sink.sink(run_dir, config, resumed))
    return events.fanout(reporter(sys.stderr if opts.json else sys.stdout, opts.quiet),
                         run_dir.metrics_sink() if run_dir else None, *trackers)


def _failure(e: BaseException, start: Start) -> tuple[str, BaseException | None]:
    """(the reason an abort record gives, the one-line error to raise instead, if any)."""
    run_dir = start.run_dir
    if isinstance(e, KeyboardInterrupt):  # a second Ctrl-C: out at once
        resumable = run_dir is not None and run_dir.file(LAST).exists()
        return "interrupted", PtrainError(
            "interrupted twice: stopped at once; the checkpoints already written are intact"
            + (f" (continue with `ptrain resume {run_dir.path}`)" if resumable else ""),
            exit_code=130)
    if isinstance(e, stopping.NonFiniteLoss):
        return "nan", None
    if isinstance(e, signals.StoppedEarly):  # while reading a folder: nothing to save
        return getattr(e, "reason", "stopped"), None
    if isinstance(e, RuntimeError) and "returned nan values" in str(e):  # --detect-anomaly
        return "nan", stopping.NonFiniteLoss(f"autograd anomaly mode: {str(e).splitlines()[0]} "
                                             "Nothing was saved from that state")
    if runtime.out_of_memory(e):  # in a training step (evaluation's is handled in the loop)
        return "out of memory", PtrainError(
            f"out of memory training in batches of {start.cfg.batch_size} ({first_line(e)}); "
            "use a smaller --batch-size (--grad-accum N keeps the step's images), --precision "
            "bf16 or --grad-checkpointing" + (f"; {run_dir.path / LAST} holds the last save"
                                              if run_dir and run_dir.file(LAST).exists() else ""))
    if isinstance(e, UnfitState) and start.saved_from is not None:
        return "error", PtrainError(f"{start.saved_from}: {e}", e.exit_code)
    if isinstance(e, RuntimeError) and distributed.world().size > 1:  # DDP lost a peer
        return "error", distributed.peer_lost(e)
    return "error", None
