"""`ptrain sweep SPEC.toml` runs a study's trials (sweeping.py); `ptrain sweep SWEEP_DIR --show`
lists them, best first. Torch-free to import; Optuna is imported once the arguments are checked."""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Literal, Optional

import typer

from pytorch_cli.commands.train import require_trackers
from pytorch_cli.platform import signals
from pytorch_cli.platform.errors import PtrainError, UsageError, first_line
from pytorch_cli.settings import sweepspec
from pytorch_cli.store import rundir

Sampler = Literal["tpe", "random", "grid"]
Pruner = Literal["median", "hyperband", "none"]
Metric = Literal["acc", "loss"]
Start = Literal["warm", "fresh"]


def _slots(plan, spec: sweepspec.SweepSpec) -> list[dict]:
    """Each job's environment: its own GPU where there are GPUs, else its share of the cores
    (an OMP_NUM_THREADS the user set is theirs: a hostile trial's 1 had become 2 a job)."""
    gpus = 0
    if spec.base.get("device", "auto") not in ("cpu", "mps"):
        import torch
        gpus = torch.cuda.device_count()
    if gpus:
        return gpu_slots(gpus, plan.jobs, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if os.environ.get("OMP_NUM_THREADS"):
        return [{} for _ in range(plan.jobs)]
    share = str(max(1, (os.cpu_count() or 1) // plan.jobs))
    return [{"OMP_NUM_THREADS": share} for _ in range(plan.jobs)]


def gpu_slots(gpus: int, jobs: int, visible: str) -> list[dict]:
    """A GPU a job, round robin, by the names CUDA_VISIBLE_DEVICES (`visible`) gave them: under
    CUDA_VISIBLE_DEVICES=2,3 a job given "0" would use the machine's GPU 0."""
    names = visible.split(",") if len(visible.split(",")) == gpus else list(map(str, range(gpus)))
    return [{"CUDA_VISIBLE_DEVICES": names[j % gpus]} for j in range(jobs)]


def _worker(sweep, slot: int) -> None:
    """Ask, run, tell, until the count is reached and no trial runs anywhere: while one does,
    its worker may be lost, and this one is there to take it over. A failure of the study's
    storage (its database server stopped), or any other, stops the other trials, each saved."""
    from pytorch_cli.commands import sweeping
    try:
        _work(sweep, slot)
    except Exception as e:  # (a thread's traceback, 146 lines in a hostile trial, said nothing)
        sweep.failed = sweep.failed or e
        sweeping.stop(sweep, "SIGTERM")


def _work(sweep, slot: int) -> None:
    from pytorch_cli.commands import sweeping, sweepstore
    plan = sweep.plan
    while not sweep.stop:
        with sweepstore.asking(sweep):
            late = plan.timeout and time.monotonic() - sweep.started > plan.timeout
            full = late or sweepstore.counted(sweep.study) >= plan.trials
            if full and (late or not sweepstore.running(sweep.study)):
                return
            trial = None if full else sweeping.ask(sweep)
            if trial is not None:
                sweepstore.beat(sweep.study, trial)
        if trial is None:  # a second: the wait ends soon after the last trial does
            _pause(sweep, min(1.0, plan.heartbeat))
        else:
            sweeping.run_trial(sweep, trial, slot)
            _said(sweep, trial)


def _said(sweep, trial) -> None:
    """A line as each trial ends (a hostile trial's sweep said nothing for its whole run): read
    alone, not with every trial of the study (a sweep's thousandth trial read a thousand)."""
    from pytorch_cli.output.runs_table import trial_line
    row = _row(sweep.study._storage.get_trial(trial._trial_id), None)  # (Optuna has no public
    if row["state"] != "running":                                       # read of one trial)
        print(trial_line(row), flush=True)

def _pause(sweep, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not sweep.stop and time.monotonic() < end:
        time.sleep(0.2)


def _trackers(sweep) -> dict:
    """The trials' environment for the spec's trackers: W&B runs grouped by the study's name,
    MLflow runs nested under the sweep's own."""
    from pytorch_cli.commands import sweepstore
    from pytorch_cli.output import mlflow_sink
    base, env = sweep.spec.base, {}
    if base.get("wandb"):
        env["WANDB_RUN_GROUP"] = os.environ.get("WANDB_RUN_GROUP") or sweep.study.study_name
    if base.get("mlflow"):
        with sweepstore.asking(sweep):  # one parent, however many workers start at once
            env[mlflow_sink.PARENT] = mlflow_sink.parent_run(sweep.study)
    return env


def _end_parent(sweep, run_id: str) -> None:
    """The sweep's MLflow run ends with the last worker: one leaving (--timeout, a signal) while
    trials still run elsewhere leaves it RUNNING, for their worker to end."""
    from pytorch_cli.commands import sweepstore
    from pytorch_cli.output import mlflow_sink
    with sweepstore.asking(sweep):  # lost workers' trials failed first: they run nowhere
        elsewhere = sweepstore.running(sweep.study)
    if elsewhere:
        print("MLflow: the sweep's run stays RUNNING: trials of other workers still run")
    else:
        mlflow_sink.end_parent(run_id, bool(sweep.stop))


def run(spec_file: Path, plan) -> int:
    """Run the study's trials; the exit code (130/143 after a signal)."""
    from pytorch_cli.commands import sweeping, sweepstudy
    from pytorch_cli.output import mlflow_sink
    _check_folder(plan.folder)
    spec = sweepspec.load(spec_file)
    require_trackers(spec.base)  # once, before the study, rather than as every trial's failure
    if plan.sampler == "grid":
        plan.trials = min(plan.trials, math.prod(map(len, sweepspec.grid_space(spec).values())))
    plan.folder.mkdir(parents=True, exist_ok=True)
    sweep = sweeping.Sweep(plan, spec, sweepstudy.open_study(plan, spec), _slots(plan, spec))
    _no_orphans(sweep)
    trackers = _trackers(sweep)
    for slot in sweep.slots:
        slot.update(trackers)

    threads = [threading.Thread(target=_worker, args=(sweep, j), daemon=True)
               for j in range(plan.jobs)]
    with signals.stop_on_signals(functools.partial(sweeping.stop, sweep)):
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)  # the main thread stays free for the signal handler
    if sweep.failed is not None:
        raise _failed(sweep)
    if trackers.get(mlflow_sink.PARENT):
        _end_parent(sweep, trackers[mlflow_sink.PARENT])
    return _ended(sweep)


def _failed(sweep) -> PtrainError:
    """What ended a worker's thread, in one line: the study's storage (its database's errors),
    or anything else, named by its type."""
    from pytorch_cli.commands import sweepstore
    e = sweep.failed
    stored = type(e).__module__.startswith(("optuna", "sqlalchemy", "psycopg", "sqlite3"))
    what = ("the sweep's study storage failed" if stored else
            f"a worker of the sweep failed ({type(e).__name__})")
    again = f" once {sweepstore.shown_storage(sweep.plan)} answers" if stored else ""
    return PtrainError(f"{what} ({first_line(e, 200)}); the running trials stopped, each saved "
                       f"where it was: run the same command again{again}")


def _check_folder(folder: Path) -> None:
    """A sweep's folder holds its study and its trials' runs: never a run's own folder (a
    hostile trial's sweep wrote its study and trial-000/ into a finished run's)."""
    from pytorch_cli.store.rundir import holds_run
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--dir {folder} is a file, not a folder: name the sweep's folder")
    if holds_run(folder):
        raise UsageError(f"--dir {folder} holds a run (ptrain train's files): a sweep's folder "
                         "holds its trials' runs; name another")


def _no_orphans(sweep) -> None:
    """A study with no trials in a folder that holds trial runs (its study.db removed, another
    --study or --storage): each trial would fail on the folder its number names."""
    from pytorch_cli.store.rundir import holds_run
    if sweep.study.get_trials(deepcopy=False):
        return
    held = sorted(p.name for p in sweep.plan.folder.glob("trial-*")
                  if holds_run(p))
    if held:
        raise UsageError(f"{sweep.plan.folder} holds the runs of another study's trials "
                         f"({', '.join(held[:2])}{', ...' if len(held) > 2 else ''}) but its "
                         "study has none (its study.db removed, or another --study or "
                         "--storage): name a new --dir, or remove those folders")


def _ended(sweep) -> int:
    """The closing line(s) and the exit code."""
    from pytorch_cli.commands import sweeping, sweepstore
    plan, trials = sweep.plan, sweep.study.get_trials(deepcopy=False)
    done = sweepstore.counted(sweep.study)
    best = any(t.state.name == "COMPLETE" for t in trials)  # (a best.toml of its own trials)
    print(f"sweep {plan.folder}: {done} of {plan.trials} trials"
          + (f"; best settings in {plan.folder / sweeping.BEST}" if best else ""))
    if sweep.stop:
        return signals.EXIT_CODES[sweep.stop]
    if plan.timeout and done < plan.trials:
        print(f"--timeout {plan.timeout:g} s: no trial started after it")
    states = [t.state.name for t in trials]
    if states and all(s == "FAIL" for s in states):  # (a pruned trial is a result)
        print(f"ptrain: error: every trial failed ({len(states)}): no best settings; `ptrain "
              f"sweep {plan.folder} --show` says why", file=sys.stderr)
        return 1
    return 0


def show(study, metric: str) -> list[dict]:
    """The study's trials, best first (then running, pruned, failed), as rows."""
    from pytorch_cli.commands import sweepstore
    sign = -1 if metric == "acc" else 1
    trials = study.get_trials(deepcopy=False)
    successors = sweepstore.continued(trials)
    rows = [_row(t, successors.get(t.number)) for t in trials]
    order = {"complete": 0, "running": 1, "pruned": 2, "waiting": 3, "fail": 4}
    return sorted(rows, key=lambda r: (order.get(r["state"], 5),
                                       sign * (r["value"] if r["value"] is not None else 0)))


def _row(t, successor: int | None) -> dict:
    """A trial's row; `successor`: the trial that continued it, if any."""
    return {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
            "epochs": t.user_attrs.get("epochs") or (max(t.intermediate_values, default=0)),
            "params": t.params, "run_dir": t.user_attrs.get("run_dir", ""),
            "note": t.user_attrs.get("error") or _note(t, successor)}


def _note(trial, successor: int | None) -> str:
    if successor is None:
        return ""
    why = "interrupted" if trial.user_attrs.get("interrupted") else "worker lost"
    return f"{why}; continued as trial {successor}"


def sweep(
    target: Path = typer.Argument(..., metavar="SPEC.toml|SWEEP_DIR",
                                  help="A sweep spec (a base config and a [search] table), or "
                                  "with --show a sweep's folder."),
    trials: int = typer.Option(20, min=1, help="Trials in all (a continued study counts its "
                               "earlier ones)."),
    jobs: int = typer.Option(1, min=1, max=64, help="Trials at once: each on its own GPU, or "
                             "its share of the CPU cores."),
    sampler: Sampler = typer.Option("tpe", help="Optuna's sampler."),
    pruner: Pruner = typer.Option("median", help="Stop trials whose epochs fall behind."),
    timeout: float = typer.Option(0, min=0, help="Seconds after which no trial starts (0: "
                                  "none)."),
    metric: Metric = typer.Option("acc", help="acc: val accuracy (test without --val-split), "
                                  "maximised; loss: its loss, minimised. A continued study keeps "
                                  "its own; --show and --plot use it."),
    storage: str = typer.Option("", help="An Optuna RDB URL (postgresql://user@host/db): "
                                "workers on many machines join one study. Default: SQLite in "
                                "the folder."),
    study: str = typer.Option("", help="The study's name in the storage (default: the "
                              "folder's name); workers that give the same one join it."),
    heartbeat: int = typer.Option(30, min=1, help="Seconds between a worker's signs of life: "
                                  "a trial silent for two is taken over by another worker."),
    start: Start = typer.Option("warm", "--trial-start", help="warm: trials forked from a process "
                                "that imported torch once (3-5 s sooner; on a CPU up to 8% "
                                "slower to train); fresh: a new interpreter each."),
    folder: Optional[Path] = typer.Option(None, "--dir", help="The sweep's folder (default: "
                                          "runs/SPEC_NAME)."),
    show_only: bool = typer.Option(False, "--show", help="List the trials of SWEEP_DIR, best "
                                   "first."),
    plot: bool = typer.Option(False, "--plot", help="Draw SWEEP_DIR/history.png (each trial's "
                              "metric, the best so far) and importances.png (Optuna's parameter "
                              "importances); pip install 'pytorch-cli[plot]'."),
) -> None:
    """Search settings with Optuna (pip install 'pytorch-cli[sweep]'): each trial is an ordinary
    run in SWEEP_DIR/trial-NNN; best.toml holds the best trial's settings."""
    from pytorch_cli.commands import sweeping, sweepstore, sweepstudy
    from pytorch_cli.output import plot as plotting
    from pytorch_cli.output.runs_table import print_trials
    sweepstore.import_optuna()
    if show_only or plot:
        if not target.is_dir():
            raise UsageError(f"--show and --plot take a sweep's folder; {target} is not one")
        if plot:
            plotting.require_matplotlib("--plot")
        found = sweepstudy.open_study(sweeping.Plan(target, metric=metric, storage=storage,
                                                  study=study), None, create=False)
        own = sweepstudy.study_metric(found)  # not --metric's default: the study's own
        if show_only:
            print_trials(show(found, own), sys.stdout, own)
        if plot:
            print("\n".join(plotting.sweep_plots(found, target, own)))
        return
    if target.is_dir():
        raise UsageError(f"{target} is a folder: give the spec file to run the sweep, or --show "
                         "or --plot")
    plan = sweeping.Plan(folder or rundir.root() / target.stem, trials, jobs, sampler, pruner,
                         timeout, metric, storage, study, heartbeat, start)
    code = run(target, plan)
    if code:
        raise typer.Exit(code)
