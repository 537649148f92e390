"""`ptrain train` and `ptrain resume`: their options come from the declarations (TrainConfig and
RunOptions); each hands one session to session.py. Torch-free to import, like all of commands/
but the modules it imports inside the commands."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from pytorch_cli.commands.arguments import Configs, image_file
from pytorch_cli.platform import launch
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings.declare import check
from pytorch_cli.settings.options import from_environment, options, parameters, typed
from pytorch_cli.settings.run import RunOptions

RUN_OPTIONS = [f.name for f in dataclasses.fields(RunOptions)]
TRACKERS = ("tensorboard", "mlflow", "wandb")  # sinks a resume can start or stop


def require_trackers(settings: dict) -> None:
    """A tracker asked for whose package is missing: one line naming its extra, before work
    (a run's settings, or a sweep spec's base, which its trials share)."""
    from pytorch_cli.output import mlflow_sink, tensorboard_sink, wandb_sink
    for name, module in zip(TRACKERS, (tensorboard_sink, mlflow_sink, wandb_sink)):
        if settings.get(name):
            module.require()


def _device_aliases(overrides: dict, opts: RunOptions, env: dict[str, str]) -> dict:
    """The MNIST example's device flags, as --device values: typed, they beat PTRAIN_DEVICE
    (`env`: the settings a variable set), as a typed --device does (a hostile trial's
    PTRAIN_DEVICE=cuda made --no-accel "contradict --device cuda")."""
    if opts.no_accel:
        if overrides.get("device", "cpu") != "cpu" and "device" not in env:
            raise UsageError("--no-accel/--no-cuda contradict --device " + overrides["device"])
        overrides["device"] = "cpu"
    if opts.no_mps and overrides.get("device", "auto") == "auto":
        from pytorch_cli.platform import runtime
        if runtime.resolve_device("auto").type == "mps":
            overrides["device"] = "cpu"
    return overrides


@options(parameters(configlib.TrainConfig), parameters(RunOptions))
def train(
    ctx: typer.Context,
    config: Configs = None,
    **values,
) -> None:
    """Train a classifier; writes config, metrics, checkpoints and model.pth to a run directory."""
    from pytorch_cli.commands import prepare, session
    from pytorch_cli.platform import distributed
    from pytorch_cli.store import choosing
    opts = RunOptions(**{k: values[k] for k in RUN_OPTIONS})
    check(opts)
    distributed.timeout_s()  # a bad PTRAIN_DIST_TIMEOUT: refused now, even for one process
    env = from_environment(ctx, configlib.TrainConfig)
    cfg = configlib.resolve(config, _device_aliases(typed(ctx, configlib.FIELD_TYPES), opts, env),
                            env)
    require_trackers(cfg.to_dict())
    default = config[-1].stem if config else cfg.dataset  # the last file: the most particular
    if config and config[-1].name == "config.toml":  # a run's own: runs/mnist-2, not config
        default = config[-1].resolve().parent.name or default
    if opts.nproc or opts.max_restarts:
        named = opts.name or opts.run_dir or opts.dry_run
        if named and not opts.dry_run:  # a name taken: one line before any worker starts
            choosing.choose(opts.name or "", opts.run_dir or "", default, opts.overwrite,
                            check_only=bool(opts.max_restarts) or opts.resume == "auto")
        launch.handoff((ctx.obj or {}).get("argv", sys.argv[1:]), opts.nproc, opts.max_restarts,
                       "" if named else str(choosing.choose("", "", default)))
        return
    auto = opts.resume == "auto" or distributed.elastic()
    if opts.dry_run:  # nothing is written, but the name is checked as the run would check it
        prepare.check_name(opts.name or "", opts.run_dir or "", default, auto)
    try:
        session.run(lambda: prepare.Start(cfg, None) if opts.dry_run else prepare.train(
            cfg, opts.name or "", opts.run_dir or "", default, opts.overwrite, auto), opts)
    except prepare.AlreadyFinished as e:
        if not auto:
            raise
        _nothing_to_do(e, opts)  # (a larger --epochs extends it here too)


def _nothing_to_do(finished: Exception, opts: RunOptions) -> None:
    """A requeued command whose run already finished: exit 0, saying so; with --json, stdout
    stays one JSON object (a script parses it in the case that happens most)."""
    if opts.json:
        print(f"ptrain: nothing to do: {finished}", file=sys.stderr)
        print(json.dumps({"nothing_to_do": True, "reason": str(finished)}))
    else:
        print(f"ptrain: nothing to do: {finished}")


@options(parameters(configlib.TrainConfig, resume=True),
         parameters(RunOptions, resume=True, inherit=False))
def resume(
    ctx: typer.Context,
    target: Path = typer.Argument(..., metavar="RUN_DIR|CHECKPOINT",
                                  help="A run directory (continues its last.pt) or a "
                                  "last.pt/best.pt file."),
    model: str = typer.Option("", hidden=True),
    dataset: str = typer.Option("", hidden=True),
    **values,
) -> None:
    """Continue a run exactly where its checkpoint left it (mid-epoch included), in the same run
    directory."""
    from pytorch_cli.commands import prepare, session
    from pytorch_cli.platform import distributed
    opts = RunOptions(**{k: v for k, v in values.items() if k in RUN_OPTIONS})
    check(opts)
    distributed.timeout_s()
    # a worker group torchrun restarted continues from the run's newest state, its last.pt,
    # not from the best.pt the first start was named
    restarted = distributed.restarted()
    if restarted and target.is_file():
        target = target.parent

    def start(processes: int = 0) -> prepare.Start:
        begin = prepare.resume(target, values["epochs"], model, dataset, processes,
                               **{k: values[k] for k in prepare.CARRIED})
        begin.cfg = dataclasses.replace(begin.cfg, **{k: values[k] for k in TRACKERS
                                                      if values[k] is not None})
        require_trackers(begin.cfg.to_dict())
        return begin

    if opts.nproc or opts.max_restarts:
        start(opts.nproc)  # a run that cannot continue is one line here, before any worker
        launch.handoff((ctx.obj or {}).get("argv", sys.argv[1:]), opts.nproc, opts.max_restarts,
                       "")
        return
    try:
        session.run(start, opts)
    except prepare.AlreadyFinished as e:
        if not restarted:
            raise
        _nothing_to_do(e, opts)  # it finished before the failure that restarted it


@options(parameters(configlib.TrainConfig))
def lr_find(
    ctx: typer.Context,
    config: Configs = None,
    # (ranges checked below, in one line naming both: typer's min= called NaN "less than 0")
    start_lr: float = typer.Option(1e-7, help="The LR of the first step."),
    end_lr: float = typer.Option(10.0, help="The LR the test grows to."),
    steps: int = typer.Option(100, min=3, max=100_000, help="Steps (one LR each), at most."),
    plot: Optional[Path] = typer.Option(None, metavar="FILE.png", callback=image_file,
                                        help="Draw loss against LR (pip install "
                                        "'pytorch-cli[plot]')."),
    json_out: bool = typer.Option(False, "--json", help="Print the curve as one JSON object."),
    **values,
) -> None:
    """Smith's LR range test with this run's model, data and optimizer: one step per LR, the LR
    growing exponentially, until the loss diverges; prints a suggested --lr. Writes no run."""
    import json

    from pytorch_cli.output import plot as plotting
    from pytorch_cli.output.tables import print_lr_find
    from pytorch_cli.settings.limits import MAX_LR
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each torchrun worker would run it whole
        e = UsageError("lr-find runs in one process: run it without torchrun (its LR holds for "
                       "--nproc N at the same total batch: pass --batch-size N x B)")
        e.echo = os.environ.get("RANK", "0") != "0"  # said once, by rank 0
        raise e
    from pytorch_cli.training import lrfind
    # --lr's own limit; the steps' growth, (end/start)^(1/steps), must be a finite number
    if not (0 < start_lr < end_lr <= MAX_LR and end_lr / start_lr < 1e300):
        raise UsageError(f"--start-lr must be above 0 and below --end-lr, --end-lr at most "
                         f"{MAX_LR:g} (--lr's limit), and their ratio under 1e300, got "
                         f"{start_lr:g} and {end_lr:g}")
    if plot:
        plotting.require_matplotlib("--plot")
        plotting.check_output(plot)
    cfg = configlib.resolve(config, typed(ctx, configlib.FIELD_TYPES),
                            from_environment(ctx, configlib.TrainConfig))
    if plot:
        from dataclasses import asdict

        from pytorch_cli.store import outputs
        outputs.refuse_in_image_folders([("--plot", plot)], outputs.image_folders(asdict(cfg)))
    result = lrfind.run(cfg, start_lr, end_lr, steps)
    if json_out:
        from pytorch_cli.platform.events import json_safe
        print(json.dumps(json_safe(result), allow_nan=False))
    else:
        print_lr_find(result, sys.stdout)
    if plot:
        plotting.lr_curve(result, plot)
        print(f"loss against LR drawn in {plot}", file=sys.stderr if json_out else sys.stdout)
