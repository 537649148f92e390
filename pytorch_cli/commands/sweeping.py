"""`ptrain sweep`: the trials of a spec, chosen by Optuna (the optional extra `sweep`), each one
an ordinary `ptrain train` process and run directory (SWEEP_DIR/trial-007/), so eval, export,
resume, plot and runs work on it unchanged.

The study lives in SWEEP_DIR/study.db or --storage's database (sweepstore.py). --jobs J runs
J trials at once, each in its own process: on a GPU box each on its own GPU
(CUDA_VISIBLE_DEVICES), on a CPU with its share of the cores (OMP_NUM_THREADS). This process
reads each trial's metrics.jsonl as it grows and reports every epoch's metric to Optuna; a trial
its pruner stops gets SIGTERM, saves as any stopped run does, and is marked pruned.

A signal stops every trial at a saved position; their Optuna trials are failed as interrupted
and enqueued again with the same settings, so running the same command continues them with
`ptrain resume` (the trial count counts each once). A trial whose worker was killed outright is
taken over the same way, once its heartbeat is missed (sweepstore.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytorch_cli.commands import sweepstore
from pytorch_cli.platform import files, signals
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import sweepspec
from pytorch_cli.store.rundir import LAST, RunDir

BEST, TRIALS = "best.toml", ".trials"
POLL_S = 0.5  # how often a trial's metrics.jsonl is read: an epoch takes seconds at least


@dataclass
class Plan:
    """What the command line asks for."""
    folder: Path
    trials: int = 20
    jobs: int = 1
    sampler: str = "tpe"
    pruner: str = "median"
    timeout: float = 0.0  # seconds after which no trial starts; 0: none
    metric: str = "acc"  # acc (val accuracy, test without a split: maximised) | loss
    storage: str = ""  # an RDB URL; "": SQLite in the folder
    study: str = ""  # the study's name in the storage; "": the folder's name
    heartbeat: int = 30  # seconds; a trial silent for two is taken over


@dataclass
class Sweep:
    plan: Plan
    spec: sweepspec.SweepSpec
    study: object
    slots: list[dict]  # each job's environment additions
    stop: str = ""  # the signal that stops the sweep
    procs: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)


def open_study(plan: Plan, spec: sweepspec.SweepSpec | None, create: bool = True):
    """The study of this folder (created, or continued: the same name in the same storage)."""
    optuna = sweepstore.import_optuna()
    seed = (spec.base.get("seed", 1) if spec else 1)
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "grid": lambda: optuna.samplers.GridSampler(sweepspec.grid_space(spec), seed=seed)}
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
               "none": optuna.pruners.NopPruner}
    direction = "maximize" if plan.metric == "acc" else "minimize"
    name, storage = sweepstore.study_name(plan), sweepstore.storage(plan)
    try:
        if not create:
            return optuna.load_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    sampler=samplers[plan.sampler](),
                                    pruner=pruners[plan.pruner](), direction=direction)
    except (KeyError, ValueError) as e:  # no such study; a direction other than its own
        raise UsageError(f"{plan.folder}: {e}") from None
    sweepstore.remember_name(plan, name)
    return study


def metric(record: dict, name: str) -> float | None:
    split = "val" if f"val_{name}" in record else "test"
    value = record.get(f"{split}_{name}")
    return float(value) if isinstance(value, (int, float)) else None


def _command(run_dir: Path, config: Path, resuming: bool) -> list[str]:
    ptrain = [sys.executable, "-m", "pytorch_cli"]
    if resuming:
        return [*ptrain, "resume", str(run_dir), "--quiet"]
    return [*ptrain, "train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]


def _watch(sweep: Sweep, trial, proc: subprocess.Popen, run: RunDir) -> int:
    """Report each new epoch record until the process ends; returns the epoch it was pruned
    at (0: not pruned)."""
    seen, pruned, beaten = set(), 0, time.monotonic()
    while True:
        done = proc.poll() is not None
        if time.monotonic() - beaten >= sweep.plan.heartbeat:
            sweepstore.beat(sweep.study, trial)
            beaten = time.monotonic()
        for r in run.read_metrics() if run.path.exists() else []:
            value = metric(r, sweep.plan.metric) if r.get("kind") == "epoch" else None
            if value is None or r["epoch"] in seen:
                continue
            seen.add(r["epoch"])
            trial.report(value, int(r["epoch"]))
            last = r["epoch"] >= r.get("epochs", float("inf"))  # a stop now would cut nothing
            if not pruned and not done and not last and trial.should_prune():
                pruned = int(r["epoch"])
                proc.send_signal(signal.SIGTERM)
        if done:
            return pruned
        time.sleep(POLL_S)


def run_trial(sweep: Sweep, trial, slot: int) -> None:
    """One trial from start to its end in the study."""
    import optuna
    folder, again = sweep.plan.folder, trial.user_attrs.get("resume", "")
    try:
        params = sweepspec.suggest(trial, sweep.spec)
        cfg = sweep.spec.config(params)
    except UsageError as e:  # a combination the settings refuse (nesterov with adam...)
        trial.set_user_attr("error", str(e))
        tell(sweep.study, trial, state=optuna.trial.TrialState.FAIL)
        return
    run = RunDir(folder / (again or f"trial-{trial.number:03d}"))
    config = folder / TRIALS / f"{run.path.name}.toml"
    config.parent.mkdir(exist_ok=True)
    files.atomic_write(config, lambda f: f.write(sweepspec.as_toml(
        cfg.to_dict(), f"trial {trial.number}: {params}").encode()))
    trial.set_user_attr("run_dir", run.path.name)
    log = open(folder / TRIALS / f"{run.path.name}.log", "ab")
    with log:
        proc = subprocess.Popen(_command(run.path, config, bool(again) and run.file(LAST).exists()),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **sweep.slots[slot]},
                                preexec_fn=signals.sigterm_with_parent())
        sweep.procs.add(proc)
        try:
            pruned = _watch(sweep, trial, proc, run)
        finally:
            sweep.procs.discard(proc)
    _tell(sweep, trial, proc.returncode, pruned, run, params)


def _tell(sweep: Sweep, trial, code: int, pruned: int, run: RunDir, params: dict) -> None:
    import optuna
    state = optuna.trial.TrialState
    records = [r for r in run.read_metrics() if r.get("kind") == "epoch"] if run.path.exists() \
        else []
    # the pruner's SIGTERM: 143 from ptrain's handler, or -15 where it landed as ptrain exited
    if pruned and code in (signals.EXIT_CODES["SIGTERM"], -signal.SIGTERM):
        run.append_metrics({"kind": "pruned", "epoch": pruned, "time": time.time()})
        tell(sweep.study, trial, state=state.PRUNED)
    elif code == 0 and records and metric(records[-1], sweep.plan.metric) is not None:
        trial.set_user_attr("epochs", records[-1]["epoch"])
        tell(sweep.study, trial, metric(records[-1], sweep.plan.metric))
        write_best(sweep)
    elif sweep.stop and code in signals.EXIT_CODES.values():  # stopped with the sweep
        trial.set_user_attr("interrupted", True)
        tell(sweep.study, trial, state=state.FAIL)
        sweepstore.continue_later(sweep.study, params, run.path.name, trial.number)
    else:
        tail = (sweep.plan.folder / TRIALS / f"{run.path.name}.log").read_bytes()[-300:]
        lines = tail.decode(errors="replace").strip().splitlines()
        trial.set_user_attr("error", f"exit {code}: {lines[-1] if lines else ''}"[:200])
        tell(sweep.study, trial, state=state.FAIL)


def tell(study, trial, *args, **kw) -> None:
    """Study.tell, whose trial is stored even when the grid sampler then calls study.stop(),
    which raises outside study.optimize: this loop counts the grid's trials itself."""
    try:
        study.tell(trial, *args, **kw)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def write_best(sweep: Sweep) -> None:
    """SWEEP_DIR/best.toml: the best trial's settings, a file `ptrain train --config` takes."""
    best = sweep.study.best_trial
    values = sweep.spec.config(best.params).to_dict()
    text = sweepspec.as_toml(values, f"the best trial of {sweep.plan.folder.name}: trial "
                                     f"{best.number}, {sweep.plan.metric} {best.value:.6g}")
    files.atomic_write(sweep.plan.folder / BEST, lambda f: f.write(text.encode()))
