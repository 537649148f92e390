"""The commands that look at runs: `ptrain runs` (the table), `ptrain plot` (the curves),
`ptrain activations` (inside a model) and `ptrain summary` (its layers). Registered on the app
in cli.py; like --help they start without torch (imported once their arguments are checked)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from pytorch_cli.commands.arguments import (
    TARGET_HELP,
    BareDataset,
    BareModel,
    Configs,
    Target,
    image_file,
)
from pytorch_cli.platform.errors import PtrainError, UsageError, warn
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings.options import options, parameters, typed

Sort = Literal["time", "acc", "name"]


def runs(
    folder: Optional[Path] = typer.Argument(
        None, metavar="[DIR]",
        help="Where the runs are (default: runs/ or $PTRAIN_RUNS_DIR); searched at any depth."),
    sort: Sort = typer.Option(
        "time", help="time: newest first; acc: best first; name. Running runs come first."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the runs as a JSON list."),
) -> None:
    """List runs: dataset, model, epochs, best and last accuracy, time, status (running,
    finished, interrupted, failed)."""
    from pytorch_cli.output import runs_table
    from pytorch_cli.store import listing, rundir
    root = folder or rundir.root()
    named = folder is not None or os.environ.get("PTRAIN_RUNS_DIR")  # runs/: none yet is fine
    if named and not root.is_dir():
        where = root if folder is not None else f"PTRAIN_RUNS_DIR={root}"
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"{where} {what}; name the folder the runs are in")
    found = listing.list_runs(root, sort)
    if json_out:
        from pytorch_cli.platform.events import json_safe
        print(json.dumps(json_safe(found), allow_nan=False))
    elif not found:
        print(f"no runs under {root}/ (start one with `ptrain train`)")
    else:
        runs_table.print_runs(found, sys.stdout)


def plot(
    run_dirs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...",
        help="Run directories; several are drawn on one figure, labelled by name."),
    output: Path = typer.Option(
        Path("curves.png"), "--output", "-o", callback=image_file,
        help="Image file (.png, .svg, .pdf; no suffix: .png)."),
) -> None:
    """Draw loss and accuracy curves from metrics.jsonl (pip install 'pytorch-cli[plot]')."""
    from pytorch_cli.output import plot as plotlib
    from pytorch_cli.store import outputs
    from pytorch_cli.store.rundir import METRICS, RunDir
    plotlib.require_matplotlib("ptrain plot")
    for path in run_dirs:  # before reading any run's records
        outputs.refuse_in_image_folders([("-o", output)], outputs.run_image_folders(path))
    curves = {}
    seen = set()
    for path in run_dirs:
        if (real := path.resolve()) in seen:  # runs/a, runs/a/ and ./runs/a: one run, once
            continue
        seen.add(real)
        records = RunDir(path).read_metrics()
        if not records:
            raise UsageError(f"{path} has no {METRICS} with records; name run directories")
        if not any(r.get("kind") in ("train", "epoch") for r in records):  # a run that failed
            warn(f"{path}: nothing to draw (no training or epoch record: it ended before "
                 "its first log line; `ptrain runs` says how)")  # (an empty figure said "drawn")
            continue
        label = path.resolve().name
        curves[label if label not in curves else str(path)] = records
    if not curves:
        raise PtrainError("no curves to draw: " + ("the run has no" if len(seen) == 1 else
                          "none of the runs has a") + " training or epoch record")
    plotlib.curves(curves, output)
    print(f"curves of {len(curves)} run(s) drawn in {output}")


def activations(
    checkpoint_file: Target,
    image: Path = typer.Argument(..., metavar="IMAGE", help="One image file, any size or mode."),
    output: Path = typer.Option(Path("activations.png"), "--output", "-o", callback=image_file,
                                help="Image file (.png, .svg, .pdf; no suffix: .png)."),
    channels: int = typer.Option(8, min=1, max=64, help="Channels drawn per stage: the most "
                                 "active ones."),
    model: BareModel = "",
    dataset: BareDataset = None,
) -> None:
    """Draw each conv stage's feature maps for one image: the last layer at each resolution,
    through torchvision's FX feature extraction (pip install 'pytorch-cli[plot]')."""
    from pytorch_cli.output import plot as plotlib
    plotlib.require_matplotlib("ptrain activations")
    plotlib.check_output(output)
    from pytorch_cli.commands import predicting
    found = predicting.run_activations(checkpoint_file, image, output, channels, model,
                                       dataset or "")
    for stage in found:
        print(f"{stage.node}: {'x'.join(map(str, stage.maps.shape))}")
    print(f"feature maps of {len(found)} stages drawn in {output}")


# What `ptrain summary` takes of train's settings, declared there (the rest cannot change the
# model's shape or what trains)
SUMMARY = ("model", "dataset", "data_dir", "labels", "channels", "image_size", "freeze")


@options(parameters(configlib.TrainConfig, only=SUMMARY))
def summary(
    ctx: typer.Context,
    target: Optional[Path] = typer.Argument(
        None, metavar="[RUN_DIR|CHECKPOINT]", help=TARGET_HELP),
    config: Configs = None,
    batch_size: int = typer.Option(0, min=0, help="For the activations' memory (default: the "
                                   "run's or config's batch size)."),
    json_out: bool = typer.Option(False, "--json", help="Print it as one JSON object."),
    **values,
) -> None:
    """A table of the model's layers (output shape, parameters, trainable), then totals,
    forward FLOPs per image and the layer outputs' memory at the batch size."""
    from pytorch_cli.commands import saved
    from pytorch_cli.output.tables import print_summary
    from pytorch_cli.platform import events
    given = typed(ctx, SUMMARY)  # what was typed: it overrides --config's, as in train
    if target is not None and (config or set(given) - {"model", "dataset"}):
        raise UsageError("give a run (or checkpoint: a bare state_dict with --model and "
                         "--dataset), or settings (--config, --model, --dataset...): not both")
    result = saved.summary(target, config, given, batch_size)
    if json_out:
        print(json.dumps(events.json_safe(result), allow_nan=False))
    else:
        print_summary(result, sys.stdout)
