"""The command line: parse, validate, print. All work happens in the modules below."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from typer.exceptions import TyperException

from pytorch_cli import __version__, config as configlib, events, launch, signals
# torch takes ~4 s to import here: the modules that need it are imported inside the commands
# that run, so --help, --version and shell completion answer at once.
if TYPE_CHECKING:
    from pytorch_cli import rundir
from pytorch_cli.errors import PtrainError, UsageError
from pytorch_cli.report import print_eval, reporter

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, evaluate, resume and export PyTorch image classifiers.")
D = configlib.TrainConfig()  # defaults shown in --help come from the config itself


def _version(value: bool) -> None:
    if value:
        print(f"ptrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


def _typed_flags(ctx: typer.Context) -> dict:
    """Only the flags the user actually typed override the config file."""
    return {k: v for k, v in ctx.params.items() if k in configlib.FIELD_TYPES
            and getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}


@app.command()
def train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (see configs/); flags override it."),
    dataset: str = typer.Option(D.dataset, help="|".join(configlib.DATASETS)),
    data_dir: str = typer.Option(D.data_dir, help="Folder with the dataset (torchvision layout or the original files). Default: $PTRAIN_DATA_DIR or ./data."),
    download: bool = typer.Option(D.download, help="Download the dataset with torchvision if it is not found."),
    model: str = typer.Option(D.model, help="|".join(configlib.MODELS)),
    init: str = typer.Option(D.init, help="Weight init: " + "|".join(configlib.INITS)),
    batch_size: int = typer.Option(D.batch_size, help="Training batch size."),
    test_batch_size: int = typer.Option(D.test_batch_size, help="Evaluation batch size."),
    epochs: float = typer.Option(D.epochs, help="Number of epochs (may be fractional: 9.9)."),
    lr: float = typer.Option(D.lr, help="Learning rate (peak rate for onecycle)."),
    momentum: float = typer.Option(D.momentum, help="SGD/RMSprop momentum."),
    nesterov: bool = typer.Option(D.nesterov, help="Nesterov momentum (SGD)."),
    optimizer: str = typer.Option(D.optimizer, help="|".join(configlib.OPTIMIZERS)),
    weight_decay: float = typer.Option(D.weight_decay, help="Weight decay (never on biases or norm weights)."),
    scheduler: str = typer.Option(D.scheduler, help="LR schedule: " + "|".join(configlib.SCHEDULERS)),
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
    augment: str = typer.Option(D.augment, help="|".join(configlib.AUGMENTS) + " (auto: crop-flip for CIFAR, none for MNIST)."),
    crop_pad: int = typer.Option(D.crop_pad, help="Crop padding in pixels (0: 4 for 32 px images, 2 for 28 px)."),
    pad_mode: str = typer.Option(D.pad_mode, help="zero|reflect: how crops are padded."),
    flip: str = typer.Option(D.flip, help="random|alternate: with crop-flip, flip at random or mirror each image every other epoch."),
    workers: int = typer.Option(D.workers, help="0: batches are sliced on the device; N: N loader processes feed them from host memory."),
    seed: int = typer.Option(D.seed, help="Seed for every random generator."),
    deterministic: bool = typer.Option(D.deterministic, help="Use deterministic algorithms only."),
    detect_anomaly: bool = typer.Option(D.detect_anomaly, help="Autograd anomaly mode: name the operation that made a NaN (slow)."),
    device: str = typer.Option(D.device, help="auto|cpu|cuda|cuda:N|mps"),
    precision: str = typer.Option(D.precision, help="auto|32|bf16|16: autocast for forward and loss (16 with a GradScaler); auto = bf16 on CUDA that supports it, else 32."),
    compile: bool = typer.Option(D.compile, help="torch.compile the model (in place; saved keys unchanged)."),
    compile_mode: str = typer.Option(D.compile_mode, help="|".join(configlib.COMPILE_MODES) + " (reduce-overhead = CUDA graphs)."),
    channels_last: bool = typer.Option(D.channels_last, help="Channels-last (NHWC) memory format for model and batches; --no-channels-last for NCHW."),
    no_cuda: bool = typer.Option(False, "--no-cuda", help="Alias of --device cpu."),
    log_interval: int = typer.Option(D.log_interval, help="Batches between log records."),
    save_interval: int = typer.Option(D.save_interval, help="Batches between checkpoints (0 = once per epoch)."),
    save_model: bool = typer.Option(D.save_model, help="Write checkpoints and model.pth."),
    dry_run: bool = typer.Option(False, help="Run one training and one test batch, write nothing."),
    name: str = typer.Option("", help="Run name: the run directory is runs/NAME."),
    run_dir: str = typer.Option("", help="Run directory (overrides --name)."),
    overwrite: bool = typer.Option(False, help="Replace the files of an existing run directory."),
    resume: str = typer.Option("never", "--resume", help="auto: continue the named run if its last.pt has these settings, else start it (torchrun restarts do this)."),
    requeue: bool = typer.Option(True, help="Under SLURM: after SIGUSR1 (sbatch --signal=USR1@N), save, then `scontrol requeue` the job."),
    nproc: int = typer.Option(0, help="Train with N processes on this machine (DDP): hands the job to torchrun. --batch-size is per process."),
    max_restarts: int = typer.Option(0, help="With --nproc: restart failed workers up to K times; they continue from last.pt."),
    json_out: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on stdout (logs go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only epoch results and the summary."),
) -> None:
    """Train a classifier; writes config, metrics, checkpoints and model.pth to a run directory."""
    from pytorch_cli import distributed, lifecycle, rundir
    overrides = _typed_flags(ctx)
    if no_cuda:
        if overrides.get("device", "cpu") != "cpu":
            raise UsageError("--no-cuda contradicts --device " + overrides["device"])
        overrides["device"] = "cpu"
    cfg = configlib.resolve(config, overrides)
    if resume not in ("never", "auto"):
        raise UsageError(f"--resume must be auto or never, got {resume!r}")
    default = config.stem if config else cfg.dataset
    if nproc or max_restarts:
        _hand_to_torchrun(ctx, nproc, max_restarts, "" if name or run_dir or dry_run
                          else str(rundir.choose("", "", default)))
        return
    distributed.init()
    auto = resume == "auto" or distributed.elastic()
    run, saved = None, None
    if not dry_run:
        try:
            cfg, run, saved = distributed.from_main(
                lambda: lifecycle.prepare_train(cfg, name, run_dir, default, overwrite, auto))
        except lifecycle.AlreadyFinished as e:
            if not auto:
                raise
            print(f"ptrain: nothing to do: {e}".split("; pass --epochs")[0])
            return
    _run_training(cfg, run, json_out, quiet, requeue, dry_run=dry_run, resume=saved)


def _hand_to_torchrun(ctx: typer.Context, nproc: int, max_restarts: int, run_dir: str) -> None:
    from pytorch_cli import distributed
    if nproc < 1 or max_restarts < 0:
        raise UsageError("--nproc must be at least 1 (and --max-restarts 0 or more)")
    if distributed.launched():
        raise UsageError("--nproc: this is already a torchrun worker; leave --nproc to torchrun's "
                         "--nproc-per-node")
    launch.handoff((ctx.obj or {}).get("argv", sys.argv[1:]), nproc, max_restarts, run_dir)


def _run_training(cfg: configlib.TrainConfig, run: rundir.RunDir | None, json_out: bool,
                  quiet: bool, requeue: bool = True, **kwargs) -> None:
    """Shared by train and resume: progress to stdout (stderr with --json), metrics.jsonl,
    the summary; signals stop the run at a saved position (exit 130 or 143)."""
    from pytorch_cli import distributed, loop, rundir, stopping
    main = distributed.world().main  # the other ranks print and write nothing
    emit = events.fanout(reporter(sys.stderr if json_out else sys.stdout, quiet) if main else None,
                         run.metrics_sink() if run and main else None)
    stop = stopping.StopFlag()
    try:
        with signals.stop_on_signals(stop.request):
            summary = loop.train(cfg, run, emit, stop=stop, **kwargs)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once
        emit({"kind": "abort"})
        resumable = run is not None and run.file(rundir.LAST).exists()
        raise PtrainError("interrupted twice: stopped at once; the checkpoints already written are "
                          "intact" + (f" (continue with `ptrain resume {run.path}`)" if resumable
                                      else ""), exit_code=130) from None
    except RuntimeError as e:
        emit({"kind": "abort"})
        if "returned nan values" in str(e):  # --detect-anomaly caught it (its warning shows where)
            raise stopping.NonFiniteLoss(f"autograd anomaly mode: {str(e).splitlines()[0]} "
                                         "Nothing was saved from that state") from None
        if distributed.world().size > 1:  # DDP's all-reduce in backward lost a peer
            raise distributed.peer_lost(e) from None
        raise
    except BaseException:
        emit({"kind": "abort"})
        raise
    distributed.close()
    if json_out and main:
        print(json.dumps(events.finite(summary)))
    if summary["stopped"]:
        if stop.reason == "SIGUSR1" and requeue and main and os.environ.get("SLURM_JOB_ID"):
            print(f"ptrain: {signals.slurm_requeue()}", file=sys.stderr)
        raise typer.Exit(signals.EXIT_CODES.get(stop.reason, 143))


@app.command(name="eval")
def eval_(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt, best.pt, or a bare state_dict (with --model and --dataset)."),
    model: str = typer.Option("", help="Model of a bare state_dict: " + "|".join(configlib.MODELS)),
    dataset: str = typer.Option("", help="Dataset of a bare state_dict: " + "|".join(configlib.DATASETS)),
    data_dir: str = typer.Option("", help="Where the dataset is (default: as in the run's config)."),
    download: bool = typer.Option(True, help="Download the dataset if it is not found."),
    split: str = typer.Option("test", help="test|val|train"),
    batch_size: int = typer.Option(0, help="Batch size (default: the run's --test-batch-size)."),
    device: str = typer.Option("auto", help="auto|cpu|cuda|cuda:N|mps"),
    tta: bool = typer.Option(False, help="Test-time augmentation: weighted logits over 1-px shifted (and, for CIFAR, mirrored) views."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
) -> None:
    """Evaluate a saved model: loss, accuracy (top-5 with >10 classes), per-class accuracy, confusion matrix."""
    from pytorch_cli import lifecycle
    if split not in ("test", "val", "train"):
        raise UsageError(f"--split must be test, val or train, got {split!r}")
    if batch_size < 0:
        raise UsageError("--batch-size must be at least 1")
    result = lifecycle.run_eval(checkpoint_file, model, dataset, data_dir, split, batch_size, device,
                             tta, download)
    if json_out:
        print(json.dumps(events.finite(result)))
    else:
        print_eval(result, sys.stdout)


@app.command()
def resume(
    target: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (continues its last.pt) or a last.pt/best.pt file."),
    epochs: Optional[float] = typer.Option(None, help="Train to this many epochs in all (extends the run)."),
    device: Optional[str] = typer.Option(None, help="Continue on another device: auto|cpu|cuda|cuda:N|mps."),
    model: str = typer.Option("", hidden=True),
    dataset: str = typer.Option("", hidden=True),
    requeue: bool = typer.Option(True, help="Under SLURM: after SIGUSR1, save, then `scontrol requeue` the job."),
    json_out: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only epoch results and the summary."),
) -> None:
    """Continue a run exactly where its checkpoint left it (mid-epoch included), in the same run directory."""
    from pytorch_cli import distributed, lifecycle
    distributed.init()
    cfg, run, state = distributed.from_main(
        lambda: lifecycle.prepare_resume(target, epochs, device, model, dataset))
    _run_training(cfg, run, json_out, quiet, requeue, resume=state)


@app.command(name="export")
def export_(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt, best.pt, or a bare state_dict (with --model and --dataset)."),
    format: str = typer.Option(..., "--format", "-f", help="|".join(configlib.EXPORT_FORMATS)),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: beside the checkpoint, e.g. model.onnx)."),
    model: str = typer.Option("", help="Model of a bare state_dict."),
    dataset: str = typer.Option("", help="Dataset of a bare state_dict."),
    data_dir: str = typer.Option("", help="Where the dataset is, for the verification batch."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Export a model (input normalisation included; dynamic batch) and verify it by running it."""
    from pytorch_cli import lifecycle
    if format not in configlib.EXPORT_FORMATS:
        raise UsageError(f"--format must be one of {'|'.join(configlib.EXPORT_FORMATS)}, got {format!r}")
    result = lifecycle.run_export(checkpoint_file, format, output, model, dataset, data_dir)
    if json_out:
        print(json.dumps(result))
    else:
        print(f"exported {result['output']} ({format}), verified on {result['verified_on']}: "
              f"max abs difference from the eager model {result['max_abs_diff']:.2e}; "
              f"metadata in {result['sidecar']}")


@app.command()
def predict(
    checkpoint_file: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT", help="A run directory (its model.pth), model.pth, last.pt or best.pt."),
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="PNG/JPEG files, any size or mode."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many classes to show per image."),
    device: str = typer.Option("auto", help="auto|cpu|cuda|cuda:N|mps"),
    model: str = typer.Option("", help="Model of a bare state_dict."),
    dataset: str = typer.Option("", help="Dataset of a bare state_dict."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
) -> None:
    """Classify images, converted the way the model was trained (grayscale 28x28 or RGB 32x32)."""
    from pytorch_cli import lifecycle
    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    results = lifecycle.run_predict(checkpoint_file, images, top_k, device, model, dataset)
    if json_out:
        print(json.dumps({"checkpoint": str(checkpoint_file), "results": results}))
    for r in results:
        if "error" in r:
            print(f"ptrain: error: cannot read image {r['image']} ({r['error']})", file=sys.stderr)
        elif not json_out:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    if any("error" in r for r in results):
        raise typer.Exit(1)


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
