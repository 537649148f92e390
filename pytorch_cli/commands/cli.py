"""The command line: the Typer app and its commands, and main(), where every error becomes one
line and an exit code. train and resume live in train.py (their options come from the settings'
declarations); the work happens in the layers below."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Literal, Optional

import typer
from typer.exceptions import TyperException

# torch takes ~4 s to import here: the modules that need it are imported inside the commands
# that run, so --help, --version and shell completion answer at once.
from pytorch_cli import __version__
from pytorch_cli.commands import looking, sweep, train
from pytorch_cli.commands.arguments import (
    BareDataset,
    BareModel,
    Device,
    Precision,
    Target,
    image_file,
    usage_error,
)
from pytorch_cli.output.tables import print_eval
from pytorch_cli.platform import events, signals, streams
from pytorch_cli.platform.errors import PtrainError, UsageError, one_line, plural
from pytorch_cli.store import export

ENV_HELP = """Environment: PTRAIN_DATA_DIR (where datasets are looked for before ./data),
PTRAIN_DEVICE (--device), PTRAIN_WORKERS (--workers), PTRAIN_RUNS_DIR (instead of runs/),
PTRAIN_DEBUG=1 (tracebacks), PTRAIN_DIST_TIMEOUT (seconds a DDP collective waits, 300),
PTRAIN_CACHE_DIR (decoded image folders; ~/.cache/ptrain), PTRAIN_DECODE_WORKERS (processes
decoding a folder, 0 to 64; default: one per core, at most 8)."""

# Plain click help (no rich panels): readable at 80 columns, choices listed in full.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train, evaluate, resume and export PyTorch image classifiers.",
                  epilog=ENV_HELP)

# Choices as types, from the registries: --help lists them, typos are refused, the shell
# completes them.
ExportFormat = Literal[tuple(export.FORMATS)]
Split = Literal["test", "val", "train", "all"]


def _version(value: bool) -> None:
    if value:
        print(f"ptrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


app.command(epilog=ENV_HELP, short_help="Train a classifier into a run directory.")(train.train)
app.command(short_help="Continue a run from its last.pt.", epilog=ENV_HELP)(train.resume)
app.command(name="lr-find", short_help="Find a learning rate: the LR range test.",
            epilog=ENV_HELP)(train.lr_find)


@app.command(name="eval", short_help="Evaluate a saved model.", epilog=ENV_HELP)
def eval_(
    checkpoint_file: Target,
    model: BareModel = "",
    dataset: BareDataset = None,
    data_dir: str = typer.Option(
        "", help="Where the dataset is (default: the run's). A folder run: another folder of "
        "its classes, or of some of them."),
    labels: Optional[str] = typer.Option(
        None, metavar="FILE.csv", show_default=False, help="A folder run: a CSV of image,class "
        "rows (under --data-dir) instead of the run's; '' reads the folder's class folders."),
    download: bool = typer.Option(True, help="Download the dataset if it is not found."),
    split: Split = typer.Option("test", help="all: every image, train, val and test."),
    batch_size: int = typer.Option(0, help="Batch size (default: the run's --test-batch-size)."),
    device: Device = "auto",
    tta: bool = typer.Option(False, help="Test-time augmentation: weighted logits over 1-px "
                             "shifted (and, for a run trained with flips, mirrored) views."),
    precision: Precision = None,
    errors: Optional[Path] = typer.Option(
        None, metavar="FILE.csv", help="Also write the misclassified images, worst (highest "
        "loss) first: image, true, predicted, prob, true_prob, loss."),
    plot_confusion: Optional[Path] = typer.Option(
        None, metavar="FILE.png", callback=image_file, help="Also draw the confusion matrix "
        "into this image (pip install 'pytorch-cli[plot]')."),
    plot_errors: Optional[Path] = typer.Option(
        None, metavar="FILE.png", callback=image_file, help="Also draw the 16 worst mistakes, "
        "each with its true and predicted class, probability and loss (the plot extra)."),
    heatmap: bool = typer.Option(False, help="With --plot-errors: each image overlaid with "
                                 "Grad-CAM of its predicted class (where the model looked)."),
    ema: bool = typer.Option(True, help="last.pt/best.pt of an --ema run: the average (as "
                             "model.pth), or with --no-ema the live weights."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
) -> None:
    """Evaluate a saved model: loss, accuracy (top-5 with >10 classes), per-class accuracy,
    confusion matrix."""
    from pytorch_cli.commands import misclassified, saved
    from pytorch_cli.output import plot
    if batch_size < 0:
        raise UsageError("--batch-size must be at least 1")
    if heatmap and not plot_errors:
        raise UsageError("--heatmap overlays --plot-errors' images: name that picture too")
    wanted = misclassified.Wanted(errors, plot_errors, plot_confusion, heatmap)
    for flag, image in (("--plot-confusion", plot_confusion), ("--plot-errors", plot_errors)):
        if image:
            plot.require_matplotlib(flag)
            plot.check_output(image)  # a bad path is said before the evaluation, not after
    wanted.check_names(checkpoint_file)
    result = saved.run_eval(checkpoint_file, model or "", dataset or "", data_dir, split,
                            batch_size, device, tta, download, ema, precision or "", labels,
                            wanted)
    if plot_confusion:  # drawn before the result is printed, which then says so
        plot.confusion(result, plot_confusion)
        result["plot_confusion"] = {"file": str(plot_confusion)}
    if json_out:
        print(json.dumps(events.json_safe(result), allow_nan=False))
    else:
        print_eval(result, sys.stdout)
    for line in misclassified.written(result):
        print(line, file=sys.stderr if json_out else sys.stdout)


@app.command(name="export", short_help="Export a model (ONNX...), verified.")
def export_(
    checkpoint_file: Target,
    format: ExportFormat = typer.Option(..., "--format", "-f"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o",
        help="Output file, named for its format: *.onnx, *.pt2, *.pt or *.torchscript, "
        "*.safetensors (default: beside the checkpoint, e.g. model.onnx)."),
    model: BareModel = "",
    dataset: BareDataset = None,
    data_dir: str = typer.Option("", help="Where the dataset is, for the verification batch."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Export a model (input normalisation included; dynamic batch) and verify it by running it."""
    from pytorch_cli.commands import saved
    result = saved.run_export(checkpoint_file, format, output, model, dataset or "", data_dir)
    if json_out:
        print(json.dumps(events.json_safe(result), allow_nan=False))
    else:
        print(f"exported {result['output']} ({format}), verified on {result['verified_on']}: "
              f"max abs difference from the eager model {result['max_abs_diff']:.2e}; "
              f"metadata in {result['sidecar']}")


@app.command(short_help="Classify image files.", epilog=ENV_HELP)
def predict(
    checkpoint_file: Target,
    images: list[Path] = typer.Argument(
        ..., metavar="IMAGE...",
        help="Image files (PNG, JPEG, ... any size or mode), folders (every image under them), "
        "or - (the paths on standard input, one a line)."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per image."),
    batch_size: int = typer.Option(64, min=1, help="Images classified at once."),
    tta: bool = typer.Option(False, help="Test-time augmentation, as eval --tta."),
    precision: Precision = None,
    device: Device = "auto",
    model: BareModel = "",
    dataset: BareDataset = None,
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
    csv_out: bool = typer.Option(False, "--csv", help="Print CSV: image, class, prob, then the "
                                 "next classes and probs, and error."),
    features: Optional[Path] = typer.Option(None, metavar="FILE.npy", help="Also write each "
                                            "image's penultimate features (N x D float32)."),
) -> None:
    """Classify images, converted the way the model was trained (its channels and size)."""
    from pytorch_cli.commands import predicting
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if json_out and csv_out:
        raise UsageError("--json and --csv: choose one")
    images = predicting.given_images(images)
    if features:  # before any work: never onto the checkpoint or an image read
        predicting.check_features_output(features, checkpoint_file, images)
    kept: list | None = [] if features else None
    results = predicting.run_predict(checkpoint_file, images, top_k, device, model, dataset or "",
                                     kept, batch_size, tta, precision or "")
    if features:
        print(predicting.write_features(features, kept), file=sys.stderr)
    if csv_out:
        predicting.print_csv(results, top_k)
    if json_out:
        print(json.dumps(events.json_safe({"checkpoint": str(checkpoint_file), "results": results}),
                         allow_nan=False))
    for r in results:
        if "error" in r:
            print(f"ptrain: error: {one_line(r['error'])}", file=sys.stderr)  # names the image
        elif not (json_out or csv_out):
            top = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
            print(f"{r['image']}: {top}")
    if any("error" in r for r in results):
        raise typer.Exit(1)


@app.command(name="cache", short_help="The decode cache of image folders: its size, or --clear.")
def cache_(clear: bool = typer.Option(False, "--clear", help="Remove every entry.")) -> None:
    """Where --dataset folder's decoded images are kept ($PTRAIN_CACHE_DIR, else
    ~/.cache/ptrain) and what they take; --clear removes them (the next run decodes again)."""
    from pytorch_cli.data import cache
    cache.check_root()
    if clear:
        n, size, live = cache.clear()
        print(f"removed {plural(n, 'entry', 'entries')} ({size / 2**20:.1f} MiB) from "
              f"{cache.root()}" + (f"; the decodes under way (pid {', '.join(map(str, live))}) "
                                   "are left" if live else ""))
        return
    print(cache.usage())


app.command(short_help="Search settings with Optuna: many runs.")(sweep.sweep)
app.command(name="runs", short_help="List runs and their status.")(looking.runs)
app.command(name="plot", short_help="Draw loss and accuracy curves.")(looking.plot)
app.command(name="activations", short_help="Draw feature maps of one image.")(looking.activations)
app.command(name="summary", short_help="A model's layers, parameters, FLOPs and activation "
            "memory.")(looking.summary)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error ends as one line on stderr and a non-zero exit; `--debug`
    (anywhere on the line) or PTRAIN_DEBUG=1 adds the traceback. Called with no arguments, it
    is the process (`ptrain`, `python -m pytorch_cli`); tests pass argv and stay in-process."""
    streams.no_missing()
    code = _run(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        signals.exit_quietly(code)  # a Ctrl-C while the interpreter shuts down: no traceback
        # a torchrun worker (gloo's threads abort its teardown); the module is looked up, not
        # imported: it imports torch, which --help and `ptrain runs` never load
        distributed = sys.modules.get("pytorch_cli.platform.distributed")
        if distributed is not None and distributed.joined():
            signals.exit_now(code)
    sys.exit(code)


TRAINING = {"train", "resume", "sweep", "lr-find"}  # commands whose output ends a run's story


def _run(argv: list[str]) -> int:
    """The command's exit code."""
    debug = "--debug" in argv or os.environ.get("PTRAIN_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        try:
            rc = app(args=argv, prog_name="ptrain", standalone_mode=False, obj={"argv": argv})
        except SystemExit:
            # click turns EPIPE into a silent exit 1, its streams wrapped (PacifyFlushWrapper)
            if type(sys.stdout).__name__ == "PacifyFlushWrapper":
                sys.stdout, sys.stderr = sys.stdout.wrapped, sys.stderr.wrapped
                raise BrokenPipeError from None
            raise
        streams.flush_stdout()
        return rc or 0
    except TyperException as e:  # typer's (vendored click) usage errors: bad flag, wrong type
        return usage_error(e)
    except PtrainError as e:
        if debug:
            traceback.print_exc()
        # a usage error comes of the settings, the same on every rank of a job: rank 0 says it
        # (each worker had said it: a hostile trial read it twice, on one line)
        other_rank = isinstance(e, UsageError) and os.environ.get("RANK", "0") != "0"
        if not getattr(e, "echo", False) and not other_rank:
            print(f"ptrain: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `ptrain ... | head`, or a --json reader that exited
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's flush goes nowhere, quietly
        command = next((a for a in argv if not a.startswith("-")), "")
        if command in TRAINING and "--show" not in argv:  # a run's summary is lost: say so; a
            # listing's end (sweep --show's too), as `ls`
            print("ptrain: error: the reader of standard output went away (broken pipe); what "
                  "was left to print is lost", file=sys.stderr)
        return 141  # 128 + SIGPIPE: what a shell reports for a writer its pipe killed
    except Exception as e:  # disk full, permissions (OSError names the file), or a bug
        if debug:
            traceback.print_exc()
        if isinstance(e, OSError) and e.filename is None and streams.stdout_full(e):
            print(streams.stdout_lost(e), file=sys.stderr)  # a print failed, not a file of ptrain's
            return 1
        what = (str(e).strip().splitlines() or [""])[0][:300]
        again = "the traceback is above" if debug else "rerun with --debug for the traceback"
        print(f"ptrain: error: {one_line(str(e))}" if isinstance(e, OSError) else
              f"ptrain: error: {type(e).__name__}: {what} (unexpected: {again})", file=sys.stderr)
        return 1
