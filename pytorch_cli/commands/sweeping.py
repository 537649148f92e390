"""`ptrain sweep`: the trials of a spec, chosen by Optuna (the optional extra `sweep`), each one
an ordinary `ptrain train` process (forked warm: commands/warmstart.py) and run directory
(SWEEP_DIR/trial-007/), so eval, export, resume, plot and runs work on it unchanged.

The study lives in SWEEP_DIR/study.db or --storage's database (sweepstore.py), opened and
checked by sweepstudy.py. --jobs J runs
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
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pytorch_cli.commands import sweepstore, sweepstudy, warmstart
from pytorch_cli.platform import files, signals
from pytorch_cli.platform.errors import UsageError, clip
from pytorch_cli.settings import sweepspec
from pytorch_cli.store.choosing import TRIALS
from pytorch_cli.store.rundir import LAST, RunDir

BEST = "best.toml"
# a trial's exit by a signal: ptrain's code for it, or the signal's own where it landed as
# ptrain exited, its handler gone
SIGNALLED = (*signals.EXIT_CODES.values(), -signal.SIGTERM, -signal.SIGINT)
POLL_S = 0.5  # how often a trial's metrics.jsonl is read; short epochs land several a read


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
    start: str = "warm"  # warm: trials forked from an import server (warmstart.py); fresh


@dataclass
class Sweep:
    plan: Plan
    spec: sweepspec.SweepSpec
    study: object
    slots: list[dict]  # each job's environment additions
    stop: str = ""  # the signal that stops the sweep
    procs: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    signalling: threading.Lock = field(default_factory=threading.Lock)  # (stop, procs): add_proc
    failed: BaseException | None = None  # what ended a worker's thread (the storage failing)
    started: float = field(default_factory=time.monotonic)


def ask(sweep: Sweep):
    """The next trial, from a sampler seeded by the spec's seed and the trials the study holds:
    one seeded once replays its first draws in a continued study, or in every worker that
    joins one, and would try the same settings again. A fresh sweep stays reproducible."""
    study = sweep.study
    if sweep.plan.sampler != "grid":
        study.sampler = sweepstudy.sampler(sweep.plan, sweep.spec,
                                           len(study.get_trials(deepcopy=False)))
    return study.ask()


def metric(record: dict, name: str) -> float | None:
    split = "val" if f"val_{name}" in record else "test"
    value = record.get(f"{split}_{name}")
    return float(value) if isinstance(value, (int, float)) else None


def _command(run_dir: Path, config: Path, resuming: bool) -> list[str]:
    if resuming:
        return ["resume", str(run_dir), "--quiet"]
    return ["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]


def _watch(sweep: Sweep, trial, proc, run: RunDir) -> bool:
    """Report each new epoch record until the process ends; whether the pruner stopped it."""
    seen, pruned, beaten = set(), False, time.monotonic()
    while True:
        done = proc.poll() is not None
        if time.monotonic() - beaten >= sweep.plan.heartbeat:
            sweepstore.beat(sweep.study, trial)
            beaten = time.monotonic()
        latest = None
        for r in run.read_metrics() if run.path.exists() else []:
            value = metric(r, sweep.plan.metric) if r.get("kind") == "epoch" else None
            if value is None or r["epoch"] in seen:
                continue
            seen.add(r["epoch"])
            trial.report(value, int(r["epoch"]))
            latest = r
        # asked once, at the newest epoch: a read finds several when epochs are short, and a
        # verdict on the first would stop a trial epochs later than it says
        last = latest is None or latest["epoch"] >= latest.get("epochs", float("inf"))
        if not pruned and not done and not last and trial.should_prune():
            pruned = True
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
    run = RunDir(folder / (again or trial_name(trial)))
    config = folder / TRIALS / f"{run.path.name}.toml"
    config.parent.mkdir(exist_ok=True)
    files.atomic_write(config, lambda f: f.write(sweepspec.as_toml(
        cfg.to_dict(), f"trial {trial.number}: {params}").encode()))
    trial.set_user_attr("run_dir", run.path.name)
    args = _command(run.path, config, bool(again) and run.file(LAST).exists())
    proc = warmstart.start(args, {**os.environ, **sweep.slots[slot]},
                           folder / TRIALS / f"{run.path.name}.log",
                           fresh=sweep.plan.start == "fresh")
    add_proc(sweep, proc)
    try:
        pruned = _watch(sweep, trial, proc, run)
    finally:
        sweep.procs.discard(proc)
    _tell(sweep, trial, proc.returncode, pruned, run, params)


def add_proc(sweep: Sweep, proc) -> None:
    """A trial's process joins the ones a stop signals; a stop that came while it started (a
    warm start's first trial waits seconds for the fork server's imports) reaches it now: a
    hostile trial's SIGTERM then was lost, and both trials trained to their end."""
    with sweep.signalling:
        sweep.procs.add(proc)
        late = sweep.stop
    if late:
        proc.send_signal(getattr(signal, late))


def stop(sweep: Sweep, name: str) -> None:
    """A signal to the sweep (its handler, in the main thread): each trial saves where it is,
    as any stopped run; none starts after it."""
    with sweep.signalling:
        sweep.stop = sweep.stop or name
        procs = list(sweep.procs)
    for proc in procs:
        proc.send_signal(getattr(signal, name))


def _tell(sweep: Sweep, trial, code: int, pruned: bool, run: RunDir, params: dict) -> None:
    import optuna
    state = optuna.trial.TrialState
    records = run.read_metrics() if run.path.exists() else []
    epochs = [r for r in records if r.get("kind") == "epoch"]
    ending = next((r for r in reversed(records) if r.get("kind") in ("end", "stop", "abort")), {})
    # a signal (the pruner's, the sweep's) can land after the last epoch, as the run saves its
    # model: the run ends as finished all the same
    finished = ending.get("kind") == "end" and not ending.get("stopped") and code in SIGNALLED
    # the pruner's SIGTERM: 143 from ptrain's handler, or -15 where it landed as ptrain exited
    if pruned and not finished and code in (signals.EXIT_CODES["SIGTERM"], -signal.SIGTERM):
        # the epoch it stopped after, which the run's records show: not the one judged, as the
        # trial trains on until the signal lands
        after = epochs[-1]["epoch"] if epochs else 0
        run.append_metrics({"kind": "pruned", "epoch": after, "time": time.time()})
        tell(sweep.study, trial, state=state.PRUNED)
    elif (code == 0 or finished) and epochs and metric(epochs[-1], sweep.plan.metric) is not None:
        # as `ptrain runs` says it: 0.06 of a run --max-steps cut (its epoch record says 1)
        trial.set_user_attr("epochs", ending.get("epochs_trained") or epochs[-1]["epoch"])
        tell(sweep.study, trial, metric(epochs[-1], sweep.plan.metric))
        write_best(sweep)
    elif sweep.stop and code in SIGNALLED:  # stopped with the sweep
        trial.set_user_attr("interrupted", True)
        tell(sweep.study, trial, state=state.FAIL)
        sweepstore.continue_later(sweep.study, params, run.path.name, trial.number)
    else:
        tail = (sweep.plan.folder / TRIALS / f"{run.path.name}.log").read_bytes()[-300:]
        lines = tail.decode(errors="replace").strip().splitlines()
        trial.set_user_attr("error", clip(f"exit {code}: {lines[-1] if lines else ''}", 200,
                                          "…"))
        tell(sweep.study, trial, state=state.FAIL)


def tell(study, trial, *args, **kw) -> None:
    """Study.tell, whose trial is stored even when the grid sampler then calls study.stop(),
    which raises outside study.optimize: this loop counts the grid's trials itself."""
    try:
        study.tell(trial, *args, **kw)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def trial_name(trial) -> str:
    """A trial's run directory in the sweep's folder, unless it continues another's."""
    return f"trial-{trial.number:03d}"


def write_best(sweep: Sweep) -> None:
    """SWEEP_DIR/best.toml: the best trial's settings, as it ran them (its own config file;
    the spec's, where that is gone), a file `ptrain train --config` takes."""
    best = sweep.study.best_trial
    ran = sweep.plan.folder / TRIALS / f"{best.user_attrs.get('resume') or trial_name(best)}.toml"
    try:
        values = tomllib.loads(ran.read_text())
    except (OSError, ValueError):
        values = sweep.spec.config(best.params).to_dict()
    text = sweepspec.as_toml(values, f"the best trial of {sweep.plan.folder.name}: trial "
                                     f"{best.number}, {sweep.plan.metric} {best.value:.6g}")
    files.atomic_write(sweep.plan.folder / BEST, lambda f: f.write(text.encode()))
