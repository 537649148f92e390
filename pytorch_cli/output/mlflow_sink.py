"""--mlflow (optional extra `mlflow`): the run in an MLflow tracking store, from rank 0.

- Where: MLFLOW_TRACKING_URI, else MLflow's own default (./mlflow.db, SQLite, in MLflow 3);
  the experiment is MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME, else "ptrain".
- Params: the resolved config. Metrics: every log record's and every epoch's (events.SCALARS),
  against the optimizer step. At the end: model.pth, config.toml, metrics.jsonl and, with the
  plot extra, curves.png as artifacts.
- A resumed run continues its MLflow run (its id in RUN_DIR/trackers.json); the steps it had
  logged after the checkpoint are not logged twice when the resume computes them again, bit for
  bit. Where it computes other values (an earlier checkpoint resumed with another --epochs...),
  MLflow cannot replace them: the run goes on in a new MLflow run holding the old one's history
  up to the checkpoint, and the old one is marked KILLED, with a tag naming the new one.
- A sweep's trials are nested runs under the sweep's own (PARENT, set by `ptrain sweep`).
- The store unreachable at the start is one error line before any training; a failure later is
  one warning, and the run trains on (metrics.jsonl keeps every record).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import time
from pathlib import Path

from pytorch_cli.platform.errors import PtrainError, UsageError, first_line, warn
from pytorch_cli.platform.events import SCALARS, Emit, best_effort
from pytorch_cli.store.rundir import CONFIG, METRICS, MODEL, RunDir

PARENT = "PTRAIN_MLFLOW_PARENT"  # the run id trials nest under (set by `ptrain sweep`)
TIMINGS = {"Throughput/images_per_s", "Throughput/images_per_s_epoch"}  # differ in a replay
STATUS = {"end": "FINISHED", "stop": "KILLED", "abort": "FAILED"}  # a stop resumes: RUNNING


def require() -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise UsageError("--mlflow needs the mlflow package: pip install 'pytorch-cli[mlflow]'")


def client():
    """MLflow's client on the tracking store, with its INFO lines (creating its tables) off."""
    from mlflow.tracking import MlflowClient
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # after the import, which sets INFO
    return MlflowClient()


def experiment(mlflow_client) -> str:
    """MLFLOW_EXPERIMENT_ID, else the experiment named MLFLOW_EXPERIMENT_NAME or "ptrain"."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "ptrain"
    for _ in range(2):  # trials starting at once: another may create it first
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return mlflow_client.create_experiment(name)
        except Exception:
            continue
    raise PtrainError(f"MLflow: cannot create the experiment {name!r}")


def _store_error(e: Exception) -> PtrainError:
    from mlflow import get_tracking_uri
    return PtrainError(f"--mlflow: cannot log to the MLflow tracking store {get_tracking_uri()}: "
                       f"{first_line(e)}; set MLFLOW_TRACKING_URI, or leave --mlflow out")


def _params(config: dict) -> list:
    from mlflow.entities import Param
    return [Param(k, str(v)[:6000]) for k, v in config.items() if v is not None]


def _history(mlflow_client, run) -> dict[tuple[str, int], list[float]]:
    """(metric, step) -> the values the run holds, as logged (several in runs of a ptrain before
    2026-12-06's, whose --grad-accum logged more than once a step: such a run may be resumed)."""
    held: dict[tuple[str, int], list[float]] = {}
    for k in run.data.metrics:
        for m in sorted(mlflow_client.get_metric_history(run.info.run_id, k),
                        key=lambda m: m.timestamp):
            held.setdefault((k, m.step), []).append(m.value)
    return held


def _branch(mlflow_client, old: str, run_dir: RunDir, config: dict,
            held: dict[tuple[str, int], list[float]], at: int, replayed: list) -> str:
    """A new MLflow run holding `held`'s history up to step `at` and the metrics the resume
    replayed as they were since (`replayed`), continuing the old one."""
    from mlflow.entities import Metric
    new = _open(mlflow_client, run_dir, config, None)[0]
    kept = [Metric(k, v, 0, step) for (k, step), vs in sorted(held.items()) if step <= at
            for v in vs] + replayed
    for i in range(0, len(kept), 1000):  # log_batch takes at most 1000 metrics a call
        mlflow_client.log_batch(new, metrics=kept[i:i + 1000])
    mlflow_client.set_tag(old, "ptrain.continued_in", new)
    mlflow_client.set_terminated(old, "KILLED")
    run_dir.remember_tracker("mlflow", new)
    warn(f"--mlflow: this resume from step {at} computes other values than MLflow run {old} "
         f"logged after it; continuing in the new MLflow run {new} (with {old}'s history up "
         f"to step {at})")
    return new


def _found(mlflow_client, run_id: str):
    """The run of this id in the store, or None (not there, or deleted)."""
    from mlflow.exceptions import MlflowException
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return run if run.info.lifecycle_stage != "deleted" else None


def _open(mlflow_client, run_dir: RunDir, config: dict,
          resumed_at: int | None) -> tuple[str, dict[tuple[str, int], list[float]]]:
    """(the MLflow run's id, the history it already holds): continued (resumed from the
    checkpoint of step resumed_at), or created with the config as its params."""
    saved = run_dir.tracker_id("mlflow") if resumed_at is not None else None
    found = _found(mlflow_client, saved) if saved else None
    if found is not None:
        mlflow_client.update_run(saved, status="RUNNING")
        return saved, _history(mlflow_client, found)
    if saved:  # another store (MLFLOW_TRACKING_URI changed), or the run was deleted
        warn(f"--mlflow: the run's MLflow run {saved} is not in this store; logging to a new one")
    parent = os.environ.get(PARENT)
    run = mlflow_client.create_run(experiment(mlflow_client), run_name=run_dir.path.name,
                                   tags={"mlflow.parentRunId": parent} if parent else None)
    params = _params(config)
    for i in range(0, len(params), 100):  # log_batch takes at most 100 params a call
        mlflow_client.log_batch(run.info.run_id, params=params[i:i + 100])
    return run.info.run_id, {}


def _artifacts(mlflow_client, run_id: str, run_dir: RunDir) -> None:
    for name in (MODEL, CONFIG, METRICS):
        if run_dir.file(name).is_file():
            mlflow_client.log_artifact(run_id, str(run_dir.file(name)))
    if importlib.util.find_spec("matplotlib") is not None:
        from pytorch_cli.output import plot
        with tempfile.TemporaryDirectory() as tmp:
            curves = Path(tmp) / "curves.png"
            plot.curves({run_dir.path.name: run_dir.read_metrics()}, curves)
            mlflow_client.log_artifact(run_id, str(curves))


def sink(run_dir: RunDir, config: dict, resumed_at: int | None) -> Emit:
    """The MLflow run opens now, so an unreachable store stops the run before it trains.
    resumed_at: the step of the checkpoint a resume continues from (None: a new run)."""
    try:
        mlflow_client = client()  # (it opens the store: a SQLite file's folder is made here)
        run_id, held = _open(mlflow_client, run_dir, config, resumed_at)
    except Exception as e:  # MLflow's own, the database driver's, the HTTP client's, OSError
        raise _store_error(e) from None
    done = max((step for _, step in held), default=-1)  # logged: replayed, not logged again
    replayed: list = []  # the metrics since the checkpoint that matched what the run held

    def log(r: dict) -> None:
        from mlflow.entities import Metric
        nonlocal run_id, done, replayed
        kind = r["kind"]
        if kind == "start":
            run_dir.remember_tracker("mlflow", run_id)
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(r[key]), now, r["step"])
                   for key, name in SCALARS.get(kind, ()) if r.get(key) is not None]
        if metrics and r["step"] <= done:  # replayed: what the run holds is skipped, what it
            # never got (killed before logging it) is logged, other values after the
            # checkpoint's step go on in a new run (an earlier ptrain's --grad-accum logged the
            # step reached mid-step: at the checkpoint's own step, a record may be new)
            def known(m) -> bool:
                held_here = held.get((m.key, m.step), [])
                return m.value in held_here or (m.key in TIMINGS and bool(held_here))
            if any(not known(m) and (m.key, m.step) in held and m.step > resumed_at
                   for m in metrics):
                run_id = _branch(mlflow_client, run_id, run_dir, config, held, resumed_at,
                                 replayed)
                done, replayed = -1, []
            else:
                replayed += [m for m in metrics if known(m)]
                metrics = [m for m in metrics if not known(m)]
        if metrics:
            mlflow_client.log_batch(run_id, metrics=metrics)
        if kind == "end" and not r.get("stopped") and not r.get("dry_run"):
            _artifacts(mlflow_client, run_id, run_dir)
        if kind in STATUS and not (kind == "end" and r.get("stopped")):
            mlflow_client.set_terminated(run_id, STATUS[kind])
    return best_effort(log, lambda e: str(_store_error(e)))


def parent_run(study) -> str:
    """`ptrain sweep`: the sweep's own MLflow run, its trials' parent. Made once per study, its
    id kept in the study, so every worker and a continued sweep nest under the same one."""
    try:
        mlflow_client = client()
        saved = study.user_attrs.get("mlflow_parent")
        if saved:
            mlflow_client.update_run(saved, status="RUNNING")
            return saved
        run = mlflow_client.create_run(experiment(mlflow_client), run_name=study.study_name,
                                       tags={"ptrain.sweep": study.study_name})
    except Exception as e:
        raise _store_error(e) from None
    study.set_user_attr("mlflow_parent", run.info.run_id)
    return run.info.run_id


def end_parent(run_id: str, stopped: bool) -> None:
    try:
        client().set_terminated(run_id, "KILLED" if stopped else "FINISHED")
    except Exception as e:
        warn(str(_store_error(e)))
