"""A sweep's Optuna study: opened (made, or continued when its metric and spec are the ones it
was made with) and its sampler, seeded for each ask. Where it is stored: sweepstore.py."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from pytorch_cli.commands import sweepstore
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import sweepspec

if TYPE_CHECKING:
    from pytorch_cli.commands.sweeping import Plan

METRIC = "metric"  # the study's user attr: the --metric it was made with
SPEC = "spec"  # and the spec's settings and search, as JSON


def open_study(plan: Plan, spec: sweepspec.SweepSpec | None, create: bool = True):
    """The study of this folder (created, or continued: the same name in the same storage)."""
    optuna = sweepstore.import_optuna()
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
               "none": optuna.pruners.NopPruner}
    direction = "maximize" if plan.metric == "acc" else "minimize"
    name = sweepstore.study_name(plan)
    if not create:
        return sweepstore.load(plan, name)
    try:
        study = optuna.create_study(study_name=name, storage=sweepstore.storage(plan),
                                    load_if_exists=True,
                                    sampler=sampler(plan, spec, 0),
                                    pruner=pruners[plan.pruner](), direction=direction)
    except ValueError as e:
        raise UsageError(f"{plan.folder}: {e}") from None
    _same_metric(plan, study, name)
    if spec is not None:
        _same_spec(plan, study, name, spec)
    sweepstore.remember(plan, name)
    return study


def study_metric(study) -> str:
    """The metric the study was made with; a study of an older ptrain has only its direction."""
    return study.user_attrs.get(METRIC) or ("acc" if _maximised(study) else "loss")


def _maximised(study) -> bool:
    import optuna
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def _same_metric(plan: Plan, study, name: str) -> None:
    """A continued study keeps its metric and direction: Optuna's create_study(load_if_exists)
    loads it whatever direction is asked, and values of two metrics would be ranked as one."""
    made, maximised = study_metric(study), _maximised(study)
    if made != plan.metric or maximised != (plan.metric == "acc"):
        said = {True: "maximised", False: "minimised"}
        raise UsageError(f"{plan.folder}: the study {name!r} was made with --metric {made} "
                         f"({said[maximised]}); this sweep asks --metric {plan.metric} "
                         f"({said[plan.metric == 'acc']}): give --metric {made}, or another "
                         "--dir or --study for a new study")
    if METRIC not in study.user_attrs:
        study.set_user_attr(METRIC, plan.metric)


def _same_spec(plan: Plan, study, name: str, spec: sweepspec.SweepSpec) -> None:
    """A continued study keeps its spec: trials of other settings ranked together would name a
    'best' no setting reproduces (a hostile trial's best.toml held batch 8, its trial ran 64),
    and Optuna raises mid-sweep on a range turned from log to linear."""
    said = json.dumps({"settings": spec.base, "search": [dataclasses.asdict(d)
                                                         for d in spec.search]},
                      sort_keys=True, default=str)
    made = study.user_attrs.get(SPEC)
    if made is None:
        study.set_user_attr(SPEC, said)
    elif made != said:
        was, now = json.loads(made), json.loads(said)
        old, new = _meant(was["settings"]), _meant(now["settings"])
        what = sorted({k for k in {*old, *new} if old.get(k) != new.get(k)} |
                      {d["name"] for d in was["search"] + now["search"]
                       if (d in was["search"]) != (d in now["search"])})
        if not what:  # the same settings, spelt otherwise
            return
        raise UsageError(f"{plan.folder}: the study {name!r} was made with another spec "
                         f"({', '.join(what)} differ): trials of both would be ranked as one; "
                         "give the spec it was made with, or another --dir or --study for a "
                         "new study")


def sampler(plan: Plan, spec: sweepspec.SweepSpec | None, asked: int):
    """Optuna's sampler for the study's next trial, `asked` trials after its first."""
    optuna = sweepstore.import_optuna()
    import numpy as np
    seed = spec.base.get("seed", 1) if spec else 1
    if plan.sampler == "grid":  # it skips the points tried (and running) by itself
        return optuna.samplers.GridSampler(sweepspec.grid_space(spec), seed=seed)
    seed = int(np.random.SeedSequence([seed, asked]).generate_state(1)[0])
    return {"tpe": optuna.samplers.TPESampler,
            "random": optuna.samplers.RandomSampler}[plan.sampler](seed=seed)


def _meant(settings: dict) -> dict:
    """A spec's base as it acts: a value at its default is no setting (`max_steps = 0`, no cap,
    had made a spec without it "another spec": a hostile trial)."""
    from pytorch_cli.settings.config import TrainConfig
    fresh = TrainConfig()
    return {k: v for k, v in settings.items()
            if v != getattr(fresh, k, object()) and not (k == "max_steps" and v in (0, None))}
