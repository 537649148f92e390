"""How a setting is declared: once, as a dataclass field whose metadata says everything else
about it (help, choices, environment variable, flag spellings, its rule). The CLI options of
`train` and `resume` (options.py), the TOML keys, --help, completion and validation all read
these fields; nothing else lists settings.

    lr: float = setting(0.01, "Learning rate (peak for onecycle).", rule=(positive, "above 0"))
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from pytorch_cli.platform.errors import UsageError


@dataclass(frozen=True)
class Setting:
    help: str = ""
    choices: tuple[str, ...] = ()  # the registry's names, or the values allowed
    suggest: tuple[str, ...] = ()  # what the shell completes, where the rule allows more
    rule: tuple[Callable[[Any], bool], str] | None = None  # (test, what it says: "at least 1")
    env: str = ""  # an environment variable that sets it (a machine's setting)
    flags: tuple[str, ...] = ()  # its spellings on the command line; () = Typer's own
    metavar: str = ""
    min: int | None = None  # the command line refuses less (click's own message)
    limit: tuple[int, str] | None = None  # (the most it takes, why): flags, variables, files
    aliases: tuple[str, ...] = ()  # its old names: still accepted as flags and TOML keys
    resume_help: str = ""  # also an option of `ptrain resume` (default: as the run had it)


def setting(default: Any, help: str = "", **kw: Any) -> Any:
    return dataclasses.field(default=default, metadata={"setting": Setting(help, **kw)})


def declared(cls) -> dict[str, Setting]:
    return {f.name: f.metadata.get("setting", Setting()) for f in dataclasses.fields(cls)}


def renamed(cls) -> dict[str, str]:
    """old name -> the setting's name now, for every alias declared."""
    return {old: name for name, s in declared(cls).items() for old in s.aliases}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _accepted(hint) -> tuple[type, ...]:
    """The value types a field takes: `int` -> (int,); `int | None` -> (int, NoneType)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def field_types(cls) -> dict[str, tuple[type, ...]]:
    # get_type_hints: real types, not the strings `from __future__ import annotations` leaves.
    hints = typing.get_type_hints(cls)
    return {f.name: _accepted(hints[f.name]) for f in dataclasses.fields(cls)}


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag(name)} must be one of {'|'.join(choices)}, got {value!r}")


INT64_MAX = 2**63 - 1  # TOML's integers are 64-bit (config.toml must read back), as torch's are


def check(obj, origin: dict[str, str] | None = None) -> None:
    """Each setting against its own declaration: choices, finite numbers, its rule, its limit,
    64-bit integers. Raises UsageError naming the first bad value; `origin`: where a value came
    from when not typed as its flag (a PTRAIN_* variable, a config file), said in the message."""
    values, settings, origin = dataclasses.asdict(obj), declared(type(obj)), origin or {}

    def bad(name: str, what: str) -> UsageError:
        value = values[name]
        got = repr(value) if isinstance(value, str) else value
        where = f" (from {origin[name]})" if name in origin else ""
        return UsageError(f"{flag(name)} must be {what}, got {got}{where}")

    for name, s in settings.items():
        if s.choices and values[name] not in s.choices:
            raise bad(name, "one of " + "|".join(s.choices))
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(name, "a finite number")
    for name, s in settings.items():
        value = values[name]
        if value is None:
            continue
        if s.rule is not None and not s.rule[0](value):
            raise bad(name, s.rule[1])
        if s.limit is not None and value > s.limit[0]:
            raise bad(name, f"at most {s.limit[0]} ({s.limit[1]})")
        if type(value) is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise bad(name, f"a 64-bit integer (at most {INT64_MAX})")


def coerce(accepted: tuple[type, ...], key: str, value: Any, source: str) -> Any:
    """Check a TOML value against a field's types; an int is accepted where a float is wanted."""
    if float in accepted and type(value) is int:
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise UsageError(f"{source}: {key} must be a finite number, got an integer too "
                             "large for a float") from None
    # bool is an int subclass: true is not a valid epochs count
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        names = " or ".join(t.__name__ for t in accepted if t is not type(None))
        raise UsageError(f"{source}: {key} must be {names}, got {value!r}")
    return value
