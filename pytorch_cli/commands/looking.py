"""The commands that look at runs: `ptrain runs` (the table) and `ptrain plot` (the curves).
Registered on the app in cli.py; like --help they start without torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from pytorch_cli.platform.errors import UsageError

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
    if folder is not None and not root.is_dir():
        raise UsageError(f"{root} is not a folder; name the folder the runs are in")
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
        Path("curves.png"), "--output", "-o", help="Image file (.png, .svg, .pdf)."
    ),
) -> None:
    """Draw loss and accuracy curves from metrics.jsonl (pip install 'pytorch-cli[plot]')."""
    from pytorch_cli.output import plot as plotlib
    from pytorch_cli.store.rundir import METRICS, RunDir
    plotlib.require_matplotlib("ptrain plot")
    curves = {}
    for path in run_dirs:
        records = RunDir(path).read_metrics()
        if not records:
            raise UsageError(f"{path} has no {METRICS} with records; name run directories")
        label = path.resolve().name
        curves[label if label not in curves else str(path)] = records
    plotlib.curves(curves, output)
    print(f"curves of {len(curves)} run(s) drawn in {output}")
