"""The arguments that the commands reading a saved model share (eval, export, predict,
activations, summary), each declared once here. The ones that are also train's settings
(--device, --precision's choices, those of --model and --dataset) take their help and choices
from train's declarations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.settings.declare import declared

_TRAIN = declared(TrainConfig)

TARGET_HELP = ("A run directory (its model.pth), model.pth, last.pt, best.pt, or a bare "
               "state_dict (with --model and --dataset).")
Target = Annotated[Path, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help=TARGET_HELP)]


# --config of the commands that build a run's settings (train, lr-find, summary): a second
# file had silently replaced the first (a hostile trial); now files layer, a base then its tweaks
Configs = Annotated[Optional[list[Path]], typer.Option(
    "--config", metavar="FILE.toml", help="TOML file of settings (see configs/); flags override "
    "it. Several: each overrides the ones before it.")]


def _models(incomplete: str) -> list[str]:
    return [name for name in _TRAIN["model"].suggest if name.startswith(incomplete)]


# A bare state_dict (weights saved by another script) says nothing of what it is
BareModel = Annotated[str, typer.Option(
    "--model", metavar=_TRAIN["model"].metavar, autocompletion=_models,
    help="Model of a bare state_dict: a name `ptrain train --model` takes.")]
BareDataset = Annotated[Optional[Literal[_TRAIN["dataset"].choices]], typer.Option(
    "--dataset", help="Dataset of a bare state_dict.")]

def _device(ctx: typer.Context, value: str) -> str:
    """train's rule for --device: eval and predict had handed "gpu" to torch, whose error was
    an "unexpected" one (a hostile trial)."""
    from pytorch_cli.platform.errors import UsageError
    test, wanted = _TRAIN["device"].rule
    if not test(value):
        env = getattr(ctx.get_parameter_source("device"), "name", "") == "ENVIRONMENT"
        raise UsageError(f"--device must be {wanted}, got {value!r}" +
                         (f" (from {_TRAIN['device'].env})" if env else ""))
    return value


Device = Annotated[str, typer.Option(
    "--device", envvar=_TRAIN["device"].env, help=_TRAIN["device"].help, callback=_device)]

# eval and predict run as the run's training evaluated, so that their figures are its own
Precision = Annotated[Optional[Literal[_TRAIN["precision"].choices]], typer.Option(
    "--precision", help="Autocast (default: the run's --precision, as its training evaluated).")]


def image_file(path: Path | None) -> Path | None:
    """The callback of every option naming a picture: a name without a suffix is a PNG named
    so, as matplotlib's savefig does (plot.py imports matplotlib only when it draws)."""
    from pytorch_cli.output.plot import named
    return named(path)


def usage_error(e) -> int:
    """typer's (its vendored click's) usage error, said in one line: a bad flag, a wrong type; its
    exit code. `ptrain` alone: the help, as it is."""
    import sys

    from pytorch_cli.platform.errors import one_line
    if not e.format_message() or type(e).__name__ == "NoArgsIsHelpError":  # (newer click: the
        print(e.format_message(), file=sys.stderr, end="")  # help is the message, one line)
        return e.exit_code
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
    flag = getattr(e, "option_name", "") or ""
    if ctx and ctx.command.name == "resume" and flag.lstrip("-").replace("-", "_") in \
            _TRAIN:  # a training setting: say why resume has none
        hint = (f": a resumed run keeps its settings ({flag} too); a new run with "
                "--init-from RUN_DIR starts from its weights with others")
        print(f"ptrain: error: ptrain resume takes no {flag}{hint}", file=sys.stderr)
        return e.exit_code
    # one line: click's choice lists come as lines of their own, and typer's pydantic checks
    # say "Value error, " first
    said = " ".join(e.format_message().replace("Value error, ", "").split())
    print(f"ptrain: error: {one_line(said)}{hint}", file=sys.stderr)
    return e.exit_code
