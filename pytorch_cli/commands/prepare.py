"""Before a session: where a run starts from. A new run gets its directory chosen; a resumed one
(`ptrain resume`, `--resume auto`, a torchrun restart) is checked against its last.pt. Nothing
here writes: the session takes the run directory's lock first (session.claim)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from pytorch_cli.commands import saved as saved_models
from pytorch_cli.data import catalog
from pytorch_cli.platform import distributed
from pytorch_cli.platform.errors import DamagedFile, UsageError, first_line, plural, warn
from pytorch_cli.settings import config as configlib
from pytorch_cli.store import checkpoint, choosing, listing, rundir
from pytorch_cli.store.checkpoint import checkpoint_in
from pytorch_cli.store.rundir import LAST, RunDir
from pytorch_cli.training.job import anchored
from pytorch_cli.training.state import check_saved, position_of


@dataclass
class Start:
    """What a session starts from."""
    cfg: configlib.TrainConfig
    run_dir: RunDir | None  # None: a dry run, which writes nothing
    saved: dict | None = None  # the training state it continues; None: a new run
    saved_from: Path | None = None  # the file that state came from
    clear: bool = False  # --overwrite: the old run's files go once the new run is set up


class AlreadyFinished(UsageError):
    """Resuming a finished run: an error for `ptrain resume`, nothing to do for --resume auto."""


# What may differ between a run and the command that continues it with --resume auto.
FREE_TO_CHANGE = ("device", "data_dir", "labels", "download", "workers", "log_interval",
                  "save_interval", "tensorboard", "test_batch_size")
CARRIED = ("device", "data_dir", "labels", "test_batch_size", "workers")  # of those, what a
# resume takes (--workers too: `train --resume auto` could change it, `ptrain resume` refused it)


def resume(target: Path, epochs: float | None = None, model_name: str = "", dataset: str = "",
           processes: int = 0, **changes) -> Start:
    """Check that a run can continue as asked, from its last.pt (or the checkpoint named);
    `changes` (device, data_dir, labels, test_batch_size, workers), where given, replace the
    run's. `processes`: the workers the launcher is about to start (0: this process's world),
    so that a run they cannot share is refused before any starts."""
    if target.is_dir() and not (target / LAST).exists():
        rundir.check_free(target)  # a live run before its first save: in use, not "no last.pt"
    path = checkpoint_in(target, LAST)
    saved, cfg = training_state(path)
    for flag, given, value in (("--model", model_name, cfg.model),
                               ("--dataset", dataset, cfg.dataset)):
        if given and given != value:
            raise UsageError(f"resume continues the same run ({value}); {flag} cannot change "
                             "it — start a new run with `ptrain train` instead")
    _edited(path.parent, cfg, path)
    return Start(_continued(cfg, saved, path, epochs, changes, processes), RunDir(path.parent),
                 saved, path)


def _edited(run: Path, cfg: configlib.TrainConfig, path: Path) -> None:
    """A run's config.toml edited by hand is not what its resume runs (the checkpoint's settings
    are, and the file is written again): said, not dropped in silence (a hostile trial's lr)."""
    if not (run / rundir.CONFIG).exists():
        return
    try:
        theirs = configlib.from_dict(configlib.load_file(run / rundir.CONFIG))
    except UsageError as e:
        return warn(f"{run / rundir.CONFIG} is not read by a resume ({first_line(e)}); it "
                    f"continues {path.name}'s settings")
    differ = [k.replace("_", "-") for k, v in cfg.to_dict().items() if getattr(theirs, k) != v]
    if differ:
        warn(f"{run / rundir.CONFIG} differs from {path.name} ({', '.join(differ)}): a resume "
             f"continues {path.name}'s settings and writes the file again; to train with the "
             f"file's, start a new run: ptrain train --config {run / rundir.CONFIG} --name NEW")


def training_state(path: Path) -> tuple[dict, configlib.TrainConfig]:
    """A last.pt/best.pt and its config, checked whole before anything is built: a damaged or
    crafted one is one error naming the file and the field."""
    saved = checkpoint.load(path)
    if saved.get("format") != checkpoint.STATE_FORMAT:
        raise UsageError(f"{path} is not a training-state checkpoint; resume takes a run "
                         "directory, last.pt or best.pt (model.pth holds weights only)")
    check_saved(saved, path)
    cfg = saved_models.saved_config(saved["config"], path)
    if (cfg.model, cfg.dataset) != (saved["meta"]["model"], saved["meta"]["dataset"]):
        raise DamagedFile(path, f"its config ({cfg.model} on {cfg.dataset}) and meta "
                                     "disagree")
    saved_models.rebuild(saved["model"], saved["meta"], path)  # the weights fit the model
    return saved, cfg


def _continued(cfg: configlib.TrainConfig, saved: dict, path: Path, epochs: float | None,
               changes: dict, processes: int = 0) -> configlib.TrainConfig:
    """The saved config with what a resume may change: more epochs, another device, data
    folder or evaluation batch (`changes`, where given), another number of processes (the
    global batch, batch x processes, stays: the same batches)."""
    overrides: dict = {k: v for k, v in changes.items() if v is not None and v != ""}
    pos, planned = position_of(saved), cfg.epochs
    if planned != int(planned) and pos.epoch >= math.ceil(planned):  # as --max-steps, below
        raise AlreadyFinished(f"{path}: the run already finished: --epochs {planned:g} ended it "
                              f"part-way through epoch {math.ceil(planned)}, recorded whole; to "
                              f"train on from its weights, start a new run with --init-from "
                              f"{path.parent}")
    if epochs is not None:
        if epochs < cfg.epochs:
            raise UsageError(f"--epochs {epochs:g}: the run was set for {cfg.epochs:g}; "
                             "it can only be extended")
        if epochs != cfg.epochs and cfg.scheduler == "onecycle":
            raise UsageError("a onecycle schedule ends with its last epoch; it cannot be extended")
        overrides["epochs"] = epochs
    was, now = saved.get("world", 1), processes or distributed.world().size
    if was != now:
        total = cfg.batch_size * was
        if total % now:
            raise UsageError(f"{path} trained with {was} process(es) x batch {cfg.batch_size} = "
                             f"{total} images per step, which {now} processes cannot share "
                             "evenly; resume with a number of processes that divides it")
        overrides["batch_size"] = total // now
    cfg = configlib.validate(dataclasses.replace(cfg, **overrides))
    # --max-steps ended it mid-schedule (cosine, linear and onecycle end at that step) and
    # maybe mid-epoch, with that epoch recorded: no position to go on from exactly. Stopped in
    # that last evaluation (the epoch trained, its batch count kept), the resume evaluates it
    if cfg.max_steps and pos.step >= cfg.max_steps and not pos.batch:
        raise AlreadyFinished(f"{path}: the run already finished: --max-steps {cfg.max_steps} "
                              f"ended it; to train on from its weights, start a new run with "
                              f"--init-from {path.parent}")
    if pos.early_stop:
        raise AlreadyFinished(f"{path}: the run already finished: --patience {cfg.patience} "
                              f"ended it at epoch {pos.early_stop}")
    if pos.epoch >= cfg.epochs:
        raise AlreadyFinished(f"{path}: the run already finished its "
                              f"{plural(cfg.epochs, 'epoch')}; pass --epochs N (more than "
                              f"{cfg.epochs:g}) to extend it")
    return cfg


def check_name(name: str, run_dir: str, default: str, auto: bool) -> Path:
    """The run's folder as named, checked (a dry run's too: it had passed `--name a/b`, which
    the real run refuses, a hostile trial); --resume auto needs it named."""
    if auto and not (name or run_dir):
        raise UsageError("--resume auto (and torchrun --max-restarts) need the run named with "
                         "--name or --run-dir, so that a restart finds it")
    return choosing.choose(name, run_dir, default, check_only=True)


def train(cfg: configlib.TrainConfig, name: str, run_dir: str, default: str, overwrite: bool,
          auto: bool) -> Start:
    """The run directory of a new run; with `auto` (--resume auto, torchrun restarts), the named
    run continues when its last.pt was made with these settings. Runs on rank 0 alone."""
    path = check_name(name, run_dir, default, auto) if auto else None
    # a finished run with no last.pt: starting afresh would replace its records
    if path is not None and not (path / LAST).is_file() and \
            listing.status(RunDir(path), RunDir(path).read_metrics())[0] == "finished":
        raise AlreadyFinished(f"{path}: the run already finished, with no {LAST} to extend (it "
                              "ran with --no-save-model, or the file was removed)")
    if path is None or not (path / LAST).is_file():  # nothing to continue: start afresh
        chosen = choosing.choose(name, run_dir, default, overwrite or auto)
        if clear := rundir.holds_run(chosen):
            _keep_start(cfg, RunDir(chosen))
        return Start(cfg, RunDir(chosen), clear=clear)
    saved, original = training_state(path / LAST)
    theirs = dataclasses.replace(original, batch_size=original.batch_size * saved.get("world", 1))
    # --augment auto as the run saved it: a folder's came from its images (as the run found them)
    auto = catalog.SPECS[cfg.dataset].augment if cfg.dataset in catalog.SPECS else theirs.augment
    # its paths absolute, as the run saved them (a relative --init-from was "other settings")
    mine = anchored(dataclasses.replace(cfg, batch_size=cfg.batch_size * distributed.world().size,
                                        augment=auto if cfg.augment == "auto" else cfg.augment))
    differ = [k for k, v in mine.to_dict().items()
              if k not in FREE_TO_CHANGE and getattr(theirs, k) != v and k != "epochs"
              and not (k == "precision" and _same_precision(v, theirs.precision, cfg.device))
              and not (k == "image_size"  # 16, "16" and "16x16" are one size
                       and catalog.parse_size(v) == catalog.parse_size(theirs.image_size))]
    if differ:  # (a batch is per process: said as the images a step, which must match)
        batch = (f": {saved.get('world', 1)} process(es) x {original.batch_size} images a step "
                 f"there, {distributed.world().size} x {cfg.batch_size} here"
                 if "batch_size" in differ else "")
        raise UsageError(f"--resume auto: {path / LAST} was made with other settings "
                         f"({', '.join(k.replace('_', '-') for k in differ)}{batch}); use another "
                         "--name/--run-dir, or --overwrite without --resume auto to start over")
    command = cfg  # the requeued command is the truth for what may change: off, 0 included
    cfg = _continued(original, saved, path / LAST, max(cfg.epochs, theirs.epochs),
                     {k: getattr(cfg, k) for k in CARRIED})
    cfg = dataclasses.replace(cfg, **{k: getattr(command, k) for k in FREE_TO_CHANGE})
    return Start(cfg, RunDir(path), saved, path / LAST)


def _keep_start(cfg: configlib.TrainConfig, old: RunDir) -> None:
    """--overwrite removes the old run's files, the new run's starting weights among them if
    --init-from/--weights names one: the new model.pth would replace it, and its config.toml
    name a file that no longer holds what the run started from."""
    flag, given = ("--init-from", cfg.init_from) if cfg.init_from else ("--weights", cfg.weights)
    path = Path(given).expanduser() if given else None
    if path is None or not path.exists():  # nothing, or a weight name (DEFAULT)
        return
    start = path / rundir.MODEL if path.is_dir() else path
    if start.parent.resolve() == old.path.resolve() and start.name in old.own_files():
        raise UsageError(f"{flag} {given}: {start} is a file of the run --overwrite replaces; "
                         f"copy it out of {old.path} first, or choose another --name/--run-dir")


def _same_precision(a: str, b: str, device: str) -> bool:
    """--precision auto and what it resolves to here (32 on a CPU, bf16 on most GPUs) are one."""
    from pytorch_cli.platform import runtime
    where = runtime.resolve_device(device)
    return runtime.autocast_dtype(a, where) == runtime.autocast_dtype(b, where)
