"""The command line: parse, validate, print. All work happens in the modules below."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Literal, Optional

import typer
from typer.exceptions import TyperException

from pytorch_cli import __version__
from pytorch_cli.commands import looking
from pytorch_cli.settings import config as configlib
from pytorch_cli.platform import events, launch
# torch takes ~4 s to import here: the modules that need it are imported inside the commands
# that run, so --help, --version and shell completion answer at once.
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.output.report import print_eval

ENV_HELP = """Environment: PTRAIN_DATA_DIR (where datasets are looked for before ./data),
PTRAIN_DEVICE (--device), PTRAIN_WORKERS (--workers), PTRAIN_RUNS_DIR (instead of runs/),
PTRAIN_DEBUG=1 (tracebacks), PTRAIN_DIST_TIMEOUT (seconds a DDP collective waits, 300)."""

# Plain click help (no rich panels): readable at 80 columns, choices listed in full.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train, evaluate, resume and export PyTorch image classifiers.",
                  epilog=ENV_HELP)
D = configlib.TrainConfig()  # defaults shown in --help come from the config itself

# Choices as types: --help lists them, typos are refused, the shell completes them.
Dataset = Literal[configlib.DATASETS]
Model = Literal[configlib.MODELS]
Optimizer = Literal[configlib.OPTIMIZERS]
Scheduler = Literal[configlib.SCHEDULERS]
Init = Literal[configlib.INITS]
Augment = Literal[configlib.AUGMENTS]
PadMode = Literal[configlib.PAD_MODES]
Flip = Literal[configlib.FLIPS]
Precision = Literal[configlib.PRECISIONS]
CompileMode = Literal[configlib.COMPILE_MODES]
ExportFormat = Literal[configlib.EXPORT_FORMATS]
Split = Literal["test", "val", "train"]
DEVICE_HELP = "auto|cpu|cuda|cuda:N|mps."


def _version(value: bool) -> None:
    if value:
        print(f"ptrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


def _typed_flags(ctx: typer.Context) -> dict:
    """Only the flags the user typed (or set in PTRAIN_* variables) override the config file."""
    return {k: v for k, v in ctx.params.items() if k in configlib.FIELD_TYPES
            and getattr(ctx.get_parameter_source(k), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}


def _device_aliases(overrides: dict, no_accel: bool, no_mps: bool) -> dict:
    """The MNIST example's device flags, as --device values."""
    if no_accel:
        if overrides.get("device", "cpu") != "cpu":
            raise UsageError("--no-accel/--no-cuda contradict --device " + overrides["device"])
        overrides["device"] = "cpu"
    if no_mps and overrides.get("device", "auto") == "auto":
        from pytorch_cli.platform import runtime
        if runtime.resolve_device("auto").type == "mps":
            overrides["device"] = "cpu"
    return overrides


@app.command(epilog=ENV_HELP, short_help="Train a classifier into a run directory.")
def train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (see configs/); flags override it."),
    dataset: Dataset = typer.Option(D.dataset),
    data_dir: str = typer.Option(D.data_dir, help="Folder with the dataset (torchvision layout or the original files). Default: $PTRAIN_DATA_DIR, then ./data."),
    download: bool = typer.Option(D.download, help="Download the dataset with torchvision if it is not found."),
    model: Model = typer.Option(D.model),
    init: Init = typer.Option(D.init, help="Weight init."),
    batch_size: int = typer.Option(D.batch_size, help="Training batch size."),
    test_batch_size: int = typer.Option(D.test_batch_size, help="Evaluation batch size."),
    epochs: float = typer.Option(D.epochs, help="Number of epochs (may be fractional: 9.9)."),
    lr: float = typer.Option(D.lr, help="Learning rate (peak rate for onecycle)."),
    momentum: float = typer.Option(D.momentum, help="SGD/RMSprop momentum."),
    nesterov: bool = typer.Option(D.nesterov, help="Nesterov momentum (SGD)."),
    optimizer: Optimizer = typer.Option(D.optimizer),
    weight_decay: float = typer.Option(D.weight_decay, help="Weight decay (never on biases or norm weights)."),
    scheduler: Scheduler = typer.Option(D.scheduler, help="LR schedule."),
    gamma: float = typer.Option(D.gamma, help="LR factor per epoch for --scheduler step."),
    warmup_epochs: float = typer.Option(D.warmup_epochs, help="Linear LR warmup, in epochs."),
    warmup_start: float = typer.Option(D.warmup_start, help="LR factor the warmup starts from."),
    final_lr: float = typer.Option(D.final_lr, help="LR factor cosine and linear schedules end at."),
    bias_lr_scale: float = typer.Option(D.bias_lr_scale, help="LR multiplier for norm layers' scales and shifts (BatchNorm...)."),
    bias_decay: bool = typer.Option(D.bias_decay, help="Weight decay on biases and norm shifts too (same per-step rate)."),
    lookahead_every: int = typer.Option(D.lookahead_every, help="Lookahead every K steps with an averaged copy of the weights (0 = off)."),
    lookahead_decay: float = typer.Option(D.lookahead_decay, help="Per-step decay of the lookahead average at the end of the run."),
    label_smoothing: float = typer.Option(D.label_smoothing, help="Label smoothing of the training loss."),
    grad_accum: int = typer.Option(D.grad_accum, help="Batches per optimizer step."),
    clip_grad: float = typer.Option(D.clip_grad, help="Clip the gradient norm to this (0 = off)."),
    tta: bool = typer.Option(D.tta, help="Evaluate the end of the run with test-time augmentation."),
    max_steps: Optional[int] = typer.Option(D.max_steps, help="Stop after this many optimizer steps (then evaluate and save as at the end)."),
    val_split: float = typer.Option(D.val_split, help="Fraction of the training set held out for validation (seeded)."),
    augment: Augment = typer.Option(D.augment, help="auto: crop-flip for CIFAR, none for MNIST."),
    crop_pad: int = typer.Option(D.crop_pad, help="Crop padding in pixels (0: 4 for 32 px images, 2 for 28 px)."),
    pad_mode: PadMode = typer.Option(D.pad_mode, help="How crops are padded."),
    flip: Flip = typer.Option(D.flip, help="With crop-flip, flip at random or mirror each image every other epoch."),
    workers: int = typer.Option(D.workers, envvar="PTRAIN_WORKERS", help="0: batches are sliced on the device; N: N loader processes feed them from host memory."),
    seed: int = typer.Option(D.seed, help="Seed for every random generator."),
    deterministic: bool = typer.Option(D.deterministic, help="Use deterministic algorithms only."),
    detect_anomaly: bool = typer.Option(D.detect_anomaly, help="Autograd anomaly mode: name the operation that made a NaN (slow)."),
    device: str = typer.Option(D.device, envvar="PTRAIN_DEVICE", help=DEVICE_HELP),
    no_accel: bool = typer.Option(False, "--no-accel", "--no-cuda", help="Train on the CPU (as --device cpu; the MNIST example's flags)."),
    no_mps: bool = typer.Option(False, "--no-mps", help="Never pick Apple's MPS for --device auto."),
    precision: Precision = typer.Option(D.precision, help="Autocast for forward and loss (16 with a GradScaler); auto = bf16 on CUDA that supports it, else 32."),
    compile: bool = typer.Option(D.compile, help="torch.compile the model (in place; saved keys unchanged)."),
    compile_mode: CompileMode = typer.Option(D.compile_mode, help="reduce-overhead = CUDA graphs."),
    channels_last: bool = typer.Option(D.channels_last, help="Channels-last (NHWC) memory format for model and batches."),
    log_interval: int = typer.Option(D.log_interval, help="Batches between metrics.jsonl records (plain output prints one per quarter epoch or 30 s)."),
    save_interval: int = typer.Option(D.save_interval, help="Batches between checkpoints (0 = once per epoch)."),
    save_model: bool = typer.Option(D.save_model, help="Write checkpoints and model.pth."),
    tensorboard: bool = typer.Option(D.tensorboard, help="Also write TensorBoard data to RUN_DIR/tensorboard (pip install 'pytorch-cli[tensorboard]')."),
    profile: int = typer.Option(0, min=0, metavar="N", help="Profile N steps after a 5-step warm-up: Chrome trace in the run directory, top operators printed."),
    dry_run: bool = typer.Option(False, help="Run one training and one test batch, write nothing."),
    name: str = typer.Option("", help="Run name: the run directory is runs/NAME."),
    run_dir: str = typer.Option("", help="Run directory (overrides --name)."),
    overwrite: bool = typer.Option(False, help="Replace the files of an existing run directory."),
    resume: Literal["never", "auto"] = typer.Option("never", "--resume", help="auto: continue the named run if its last.pt has these settings, else start it (torchrun restarts do this)."),
    requeue: bool = typer.Option(True, help="Under SLURM: after SIGUSR1 (sbatch --signal=USR1@N), save, then `scontrol requeue` the job."),
    nproc: int = typer.Option(0, help="Train with N processes on this machine (DDP): hands the job to torchrun. --batch-size is per process."),
    max_restarts: int = typer.Option(0, help="With --nproc: restart failed workers up to K times; they continue from last.pt."),
    json_out: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on stdout (logs go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only epoch results and the summary."),
) -> None:
    """Train a classifier; writes config, metrics, checkpoints and model.pth to a run directory."""
    from pytorch_cli.commands import prepare, session
    from pytorch_cli.platform import distributed
    from pytorch_cli.store import rundir
    cfg = configlib.resolve(config, _device_aliases(_typed_flags(ctx), no_accel, no_mps))
    if cfg.tensorboard:
        from pytorch_cli.output import tensorboard_sink
        tensorboard_sink.require()
    default = config.stem if config else cfg.dataset
    if nproc or max_restarts:
        launch.handoff((ctx.obj or {}).get("argv", sys.argv[1:]), nproc, max_restarts,
                       "" if name or run_dir or dry_run else str(rundir.choose("", "", default)))
        return
    auto = resume == "auto" or distributed.elastic()
    opts = session.RunOptions(json_out, quiet, requeue, dry_run, profile)
    try:
        session.run(lambda: prepare.Start(cfg, None) if dry_run else
                    prepare.train(cfg, name, run_dir, default, overwrite, auto), opts)
    except prepare.AlreadyFinished as e:
        if not auto:
            raise
        print(f"ptrain: nothing to do: {e}")  # (a larger --epochs extends it here too)


@app.command(name="eval", short_help="Evaluate a saved model.", epilog=ENV_HELP)
def eval_(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt, best.pt, or a bare state_dict (with --model and --dataset)."),
    model: Optional[Model] = typer.Option(None, help="Model of a bare state_dict."),
    dataset: Optional[Dataset] = typer.Option(None, help="Dataset of a bare state_dict."),
    data_dir: str = typer.Option("", help="Where the dataset is (default: as in the run's config)."),
    download: bool = typer.Option(True, help="Download the dataset if it is not found."),
    split: Split = typer.Option("test"),
    batch_size: int = typer.Option(0, help="Batch size (default: the run's --test-batch-size)."),
    device: str = typer.Option("auto", envvar="PTRAIN_DEVICE", help=DEVICE_HELP),
    tta: bool = typer.Option(False, help="Test-time augmentation: weighted logits over 1-px shifted (and, for CIFAR, mirrored) views."),
    plot_confusion: Optional[Path] = typer.Option(None, metavar="FILE.png", help="Also draw the confusion matrix into this image (pip install 'pytorch-cli[plot]')."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
) -> None:
    """Evaluate a saved model: loss, accuracy (top-5 with >10 classes), per-class accuracy, confusion matrix."""
    from pytorch_cli.commands import saved
    from pytorch_cli.output import plot
    if batch_size < 0:
        raise UsageError("--batch-size must be at least 1")
    if plot_confusion:
        plot.require_matplotlib("--plot-confusion")
    result = saved.run_eval(checkpoint_file, model or "", dataset or "", data_dir, split,
                                batch_size, device, tta, download)
    if json_out:
        print(json.dumps(events.json_safe(result)))
    else:
        print_eval(result, sys.stdout)
    if plot_confusion:
        plot.confusion(result, plot_confusion)
        print(f"confusion matrix drawn in {plot_confusion}", file=sys.stderr if json_out else sys.stdout)


@app.command(short_help="Continue a run from its last.pt.", epilog=ENV_HELP)
def resume(
    target: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (continues its last.pt) or a last.pt/best.pt file."),
    epochs: Optional[float] = typer.Option(None, help="Train to this many epochs in all (extends the run)."),
    device: Optional[str] = typer.Option(None, envvar="PTRAIN_DEVICE", help="Continue on another device: " + DEVICE_HELP),
    model: str = typer.Option("", hidden=True),
    dataset: str = typer.Option("", hidden=True),
    requeue: bool = typer.Option(True, help="Under SLURM: after SIGUSR1, save, then `scontrol requeue` the job."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Start (or stop) writing TensorBoard data [default: as the run did]."),
    profile: int = typer.Option(0, min=0, metavar="N", help="Profile N steps after a 5-step warm-up (as train --profile)."),
    json_out: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only epoch results and the summary."),
) -> None:
    """Continue a run exactly where its checkpoint left it (mid-epoch included), in the same run directory."""
    import dataclasses
    from pytorch_cli.commands import prepare, session
    from pytorch_cli.output import tensorboard_sink

    def start() -> prepare.Start:
        begin = prepare.resume(target, epochs, device, model, dataset)
        if tensorboard is not None:
            begin.cfg = dataclasses.replace(begin.cfg, tensorboard=tensorboard)
        if begin.cfg.tensorboard:
            tensorboard_sink.require()
        return begin

    session.run(start, session.RunOptions(json_out, quiet, requeue, profile=profile))


@app.command(name="export", short_help="Export a model (ONNX...), verified.")
def export_(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt, best.pt, or a bare state_dict (with --model and --dataset)."),
    format: ExportFormat = typer.Option(..., "--format", "-f"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: beside the checkpoint, e.g. model.onnx)."),
    model: str = typer.Option("", help="Model of a bare state_dict."),
    dataset: str = typer.Option("", help="Dataset of a bare state_dict."),
    data_dir: str = typer.Option("", help="Where the dataset is, for the verification batch."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Export a model (input normalisation included; dynamic batch) and verify it by running it."""
    from pytorch_cli.commands import saved
    result = saved.run_export(checkpoint_file, format, output, model, dataset, data_dir)
    if json_out:
        print(json.dumps(result))
    else:
        print(f"exported {result['output']} ({format}), verified on {result['verified_on']}: "
              f"max abs difference from the eager model {result['max_abs_diff']:.2e}; "
              f"metadata in {result['sidecar']}")


@app.command(short_help="Classify image files.", epilog=ENV_HELP)
def predict(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt or best.pt."),
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="PNG/JPEG files, any size or mode."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per image."),
    device: str = typer.Option("auto", envvar="PTRAIN_DEVICE", help=DEVICE_HELP),
    model: str = typer.Option("", help="Model of a bare state_dict."),
    dataset: str = typer.Option("", help="Dataset of a bare state_dict."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
) -> None:
    """Classify images, converted the way the model was trained (grayscale 28x28 or RGB 32x32)."""
    from pytorch_cli.commands import saved
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    results = saved.run_predict(checkpoint_file, images, top_k, device, model, dataset)
    if json_out:
        print(json.dumps({"checkpoint": str(checkpoint_file), "results": results}))
    for r in results:
        if "error" in r:
            print(f"ptrain: error: cannot read image {r['image']} ({r['error']})", file=sys.stderr)
        elif not json_out:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    if any("error" in r for r in results):
        raise typer.Exit(1)


# Looking at runs: looking.py (torch-free, as these commands are).
app.command(name="runs", short_help="List runs and their status.")(looking.runs)
app.command(name="plot", short_help="Draw loss and accuracy curves.")(looking.plot)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error ends as one line on stderr and a non-zero exit; `--debug`
    (anywhere on the line) or PTRAIN_DEBUG=1 adds the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PTRAIN_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        rc = app(args=argv, prog_name="ptrain", standalone_mode=False, obj={"argv": argv})
    except TyperException as e:  # typer's (vendored click) usage errors: bad flag, wrong type
        if not e.format_message():  # `ptrain` alone: the help was printed, nothing to add
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx else ""
        print(f"ptrain: error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except PtrainError as e:
        if debug:
            traceback.print_exc()
        if not getattr(e, "echo", False):
            print(f"ptrain: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # disk full, permissions (OSError names the file), or a bug
        if debug:
            traceback.print_exc()
        what = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"ptrain: error: {e}" if isinstance(e, OSError) else
              f"ptrain: error: {type(e).__name__}: {what} (unexpected: rerun with --debug for "
              "the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc or 0)
