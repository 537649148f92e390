"""A sweep's spec (`ptrain sweep SPEC.toml`): a base config, the same keys as `--config`, and a
[search] table of the settings to search, each a range or a list of choices:

    model = "lenet"
    epochs = 2
    [search]
    lr = {low = 1e-4, high = 0.3, log = true}
    optimizer = ["sgd", "adam"]
    batch_size = [64, 128]
    weight_decay = {low = 0, high = 1e-3}

Searched keys are held to the declarations (config.py) as a config file's are: a choice or a
bound that `--config` would refuse is refused here, before any trial starts. Torch-free."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings import tomlfile
from pytorch_cli.settings.declare import check, coerce
from pytorch_cli.settings.rules import UNUSED, unused_reset
from pytorch_cli.store import rundir

RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One searched setting: choices (a list), or a range [low, high] of its type, on a log
    scale with `log`, in steps of `step` (a grid needs one)."""
    name: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid(self) -> list:
        """Every value a grid search takes."""
        if self.choices:
            return list(self.choices)
        if self.step is None:
            raise UsageError(f"--sampler grid needs a list or a step for {self.name} (a "
                             f"range without a step has no grid)")
        n = int(round((self.high - self.low) / self.step))
        values = [self.low + i * self.step for i in range(n + 1)]
        return [int(v) if self.integer else v for v in values]


@dataclass(frozen=True)
class SweepSpec:
    base: dict[str, Any]  # the fixed settings, typed as TrainConfig takes them
    search: tuple[Dimension, ...]

    def config(self, params: dict[str, Any]) -> configlib.TrainConfig:
        """A trial's settings; a base setting its choices leave unused (momentum, for an adam
        trial) back at its default, where a command line would be refused."""
        return configlib.validate(unused_reset(configlib.TrainConfig(**{**self.base, **params})))


def _range(name: str, table: dict, types: tuple, where: str) -> Dimension:
    unknown = set(table) - RANGE_KEYS
    if unknown or not {"low", "high"} <= set(table):
        raise UsageError(f"{where}: {name} = {{...}} takes low, high and optionally log, step; "
                         f"got {', '.join(sorted(table))}")
    if not (int in types or float in types):
        raise UsageError(f"{where}: {name} is not a number: search it with a list of choices")
    integer = float not in types
    low, high = (coerce(types, name, table[k], where) for k in ("low", "high"))
    step = coerce(types, name, table["step"], where) if "step" in table else None
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where}: {name}'s log must be true or false")
    if not low < high:
        raise UsageError(f"{where}: {name}'s range is empty: low {low} must be below high {high}")
    if log and low <= 0:
        raise UsageError(f"{where}: {name}: a log range must start above 0, got low = {low}")
    if step is not None and (step <= 0 or log):
        raise UsageError(f"{where}: {name}'s step must be above 0, and a log range has none")
    steps = (high - low) / step if step else 1.0
    if step and (steps < 1 - 1e-9 or abs(steps - round(steps)) > 1e-9 * steps):
        # Optuna would move high onto the grid (a hostile trial's 16..100 step 32 ran 112) or
        # keep low alone (0.001..0.1 step 0.5: every trial the same), with a warning of its own
        raise UsageError(f"{where}: {name}'s step {step} must divide high - low "
                         f"({high} - {low}): the values are low, low + step, ... up to high")
    return Dimension(name, low=low, high=high, log=log, step=step, integer=integer)


def _dimension(key: str, value: Any, where: str) -> Dimension:
    name = configlib.RENAMED.get(key.replace("-", "_"), key.replace("-", "_"))
    if name not in configlib.FIELD_TYPES:
        raise UsageError(f"{where}: [search] has unknown key {key!r}; valid keys: "
                         f"{', '.join(configlib.FIELD_TYPES)}")
    types = configlib.FIELD_TYPES[name]
    if isinstance(value, list):
        if not value:
            raise UsageError(f"{where}: {key} = [] gives the search nothing to choose")
        choices = tuple(coerce(types, name, v, where) for v in value)
        if len(set(choices)) < len(choices):
            raise UsageError(f"{where}: {key} lists a choice twice")
        return Dimension(name, choices=choices)
    if isinstance(value, dict):
        return _range(name, value, types, where)
    raise UsageError(f"{where}: {key} must be a list of choices or {{low = ..., high = ...}}")


def load(path: Path) -> SweepSpec:
    """Read and check a spec: its base as `--config` checks a file, each searched setting's
    extremes or choices against the setting's own rule, and no key both fixed and searched."""
    raw = tomlfile.read_toml(path)
    search = raw.pop("search", None)
    if not isinstance(search, dict) or not search:
        what = ("no [search] table" if search is None else "its [search] table is empty"
                if isinstance(search, dict) else "search must be a [search] table")
        raise UsageError(f"{path}: {what}: say which settings to search, e.g. "
                         "lr = {low = 1e-4, high = 0.3, log = true}")
    base = configlib.typed_values(raw, path)
    dims = tuple(_dimension(k, v, str(path)) for k, v in search.items())
    for i, d in enumerate(dims):  # two spellings of one setting: Optuna's own error had
        twin = next((k for k, e in zip(search, dims[:i]) if e.name == d.name), None)  # ended
        if twin is not None:  # the sweep, a trial left "running" (a hostile trial)
            raise UsageError(f"{path}: [search] {twin!r} and {list(search)[i]!r} are the same "
                             "setting; keep one of them")
    fixed = [d.name for d in dims if d.name in base]
    if fixed:
        raise UsageError(f"{path}: {', '.join(fixed)} is both fixed in the base config and "
                         "searched in [search]: keep one")
    spec = SweepSpec(base, dims)
    for d in dims:
        _fits(spec, d, path)
        idle = _never_used(spec, d)
        if idle:
            raise UsageError(f"{path}: [search] {d.name} does nothing in any trial: {idle}")
    return spec


def _never_used(spec: SweepSpec, d: Dimension) -> str:
    """What says that d's setting does nothing in any trial the other searched settings make
    (momentum searched with an adam base: every trial would run the default), or ""."""
    rule = next(((used, says) for name, used, says in UNUSED if name == d.name), None)
    others = [o for o in spec.search if o is not d]
    if rule is None:
        return ""
    for combo in itertools.product(*((o.choices or (o.low, o.high)) for o in others)):
        c = configlib.TrainConfig(**{**spec.base, **{o.name: v for o, v in zip(others, combo)},
                                     d.name: (d.choices or (d.high,))[0]})
        if rule[0](c):
            return ""
    return rule[1].format(c=c)


def _fits(spec: SweepSpec, d: Dimension, path: Path) -> None:
    """Every extreme and choice of d must be a value its setting takes, and one at least must
    combine with the base: a trial of one that does not (adam with a fixed nesterov) fails,
    recorded as such, and the sweep goes on; a search none of whose values can run is refused."""
    refused = []
    for v in d.choices or (d.low, d.high):
        values = configlib.TrainConfig(**{**spec.base, d.name: v})
        try:
            check(values)
        except UsageError as e:
            raise UsageError(f"{path}: [search] {d.name}: {e}") from None
        try:
            configlib.validate(unused_reset(values))
        except UsageError as e:
            refused.append(e)
    if len(refused) == len(d.choices or (d.low, d.high)):
        raise UsageError(f"{path}: [search] {d.name}: no value of it works with the base "
                         f"config: {refused[0]}")


def suggest(trial, spec: SweepSpec) -> dict[str, Any]:
    """The trial's settings, asked of Optuna's trial in the spec's order."""
    out = {}
    for d in spec.search:
        if d.choices:
            out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.integer:
            out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high),
                                            step=int(d.step or 1), log=d.log)
        else:
            out[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)
    return out


def grid_space(spec: SweepSpec) -> dict[str, list]:
    return {d.name: d.grid() for d in spec.search}


def as_toml(values: dict[str, Any], header: str) -> str:
    """Settings as a `--config` file (best.toml), keys in TrainConfig's order."""
    order = [f.name for f in dataclasses.fields(configlib.TrainConfig)]
    body = rundir.config_toml({k: values[k] for k in order if k in values})
    return f"# {header}\n" + body
