"""Typer options made from the declarations: a command is written as `def cmd(ctx, **values)`
and `@options(TrainConfig, RunOptions)` gives it one typed keyword parameter per setting, so
--help, completion, envvars and choices all come from the fields (litgpt's way: one typed
signature is the CLI, the config and the help)."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Literal, Optional

import typer

from pytorch_cli.settings.declare import Setting, declared, flag

TYPER_SOURCES = ("COMMANDLINE", "ENVIRONMENT")  # what a user typed, or their machine's variable


def _option(name: str, hint: Any, default: Any, s: Setting, help: str) -> inspect.Parameter:
    if s.choices:  # a Literal: --help spells the choices out, completion offers them
        hint = Literal[s.choices]
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        hint = Optional[[a for a in typing.get_args(hint) if a is not type(None)][0]]
    flags = s.flags or ((flag(name), *map(flag, s.aliases)) if s.aliases else ())
    suggest = (lambda incomplete: [c for c in s.suggest if c.startswith(incomplete)]
               ) if s.suggest else None
    option = typer.Option(default, *flags, help=help or None, envvar=s.env or None,
                          metavar=s.metavar or None, min=s.min, autocompletion=suggest)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint)


def parameters(cls, resume: bool = False, inherit: bool = True, only: tuple[str, ...] = ()
               ) -> list[inspect.Parameter]:
    """One option per field of `cls` (or per field named in `only`); resume=True: only those
    `ptrain resume` takes, and with `inherit` they default to None (= as the run had it)."""
    hints, settings = typing.get_type_hints(cls), declared(cls)
    out = []
    for f in dataclasses.fields(cls):
        s = settings[f.name]
        if (resume and not s.resume_help) or (only and f.name not in only):
            continue
        none = resume and inherit
        hint = Optional[hints[f.name]] if none else hints[f.name]
        default = None if none else f.default
        if none and hints[f.name] is bool:  # an on/off pair with no default: as the run did
            s = dataclasses.replace(s, flags=(f"{flag(f.name)}/--no-{flag(f.name)[2:]}",))
        out.append(_option(f.name, hint, default, s, s.resume_help if resume else s.help))
    return out


def options(*groups: list[inspect.Parameter]) -> Callable:
    """Give `fn(ctx, *arguments, **values)` these keyword options after its own parameters."""
    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        fn.__signature__ = inspect.Signature([*own, *(p for g in groups for p in g)])
        return fn
    return wrap


def typed(ctx: typer.Context, names) -> dict[str, Any]:
    """The values the user typed (or set in PTRAIN_* variables) among `names`: they override
    the config file; the rest keep the file's values or the defaults."""
    return {k: v for k, v in ctx.params.items() if k in names
            and getattr(ctx.get_parameter_source(k), "name", "") in TYPER_SOURCES}


def from_environment(ctx: typer.Context, cls) -> dict[str, str]:
    """name -> the variable that set it (PTRAIN_WORKERS...), for the error that names a value."""
    return {name: s.env for name, s in declared(cls).items() if s.env and name in ctx.params
            and getattr(ctx.get_parameter_source(name), "name", "") == "ENVIRONMENT"}
