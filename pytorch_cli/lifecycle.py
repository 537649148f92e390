"""After training: load a saved model and evaluate, export or run it; prepare a resume.

Each command takes a checkpoint file or a run directory (eval, export and predict then use its
model.pth, resume its last.pt)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from pytorch_cli import checkpoint, config as configlib, datasets, distributed, export, models, rundir, runtime
from pytorch_cli.errors import PtrainError, UsageError, plural
from pytorch_cli.evaluate import evaluate
from pytorch_cli.rundir import LAST, MODEL, RunDir, checkpoint_in
from pytorch_cli.state import position_of


@dataclass
class Loaded:
    model: torch.nn.Module  # on the CPU, eval mode
    meta: dict  # what models.describe saves
    config: dict  # the run's config; {} for a bare state_dict


def load_model(path: Path, model_name: str = "", dataset: str = "") -> Loaded:
    """Rebuild the model of a model.pth / last.pt / best.pt (or a run directory), or of a bare
    state_dict given --model and --dataset."""
    path = checkpoint_in(path, MODEL)
    saved = checkpoint.load(path)
    state_dict = checkpoint.weights(saved)
    if state_dict is None:
        raise PtrainError(f"{path}: not a ptrain checkpoint or a state_dict of tensors")
    if "meta" in saved:
        meta, config = saved["meta"], saved.get("config", {})
        for flag, given, saved_value in (("--model", model_name, meta["model"]),
                                         ("--dataset", dataset, meta["dataset"])):
            if given and given != saved_value:
                raise UsageError(f"{path} holds a {meta['model']} trained on {meta['dataset']}; "
                                 f"{flag} {given} does not match (leave it out)")
    else:
        if not (model_name and dataset):
            raise UsageError(f"{path} is a bare state_dict: say what it is with --model and --dataset")
        configlib.check_choice("model", model_name, configlib.MODELS)
        configlib.check_choice("dataset", dataset, configlib.DATASETS)
        meta, config = models.describe(model_name, datasets.SPECS[dataset], []), {}
    model = models.build(meta["model"], meta["in_channels"], meta["num_classes"], meta["image_size"])
    try:
        model.load_state_dict(checkpoint.clean_state_dict(state_dict))
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise PtrainError(f"{path}: the weights do not fit a {meta['model']} for {meta['dataset']} "
                          f"({detail})") from None
    return Loaded(model.eval(), meta, config)


def _data(loaded: Loaded, data_dir: str = "", download: bool = True) -> datasets.Data:
    """The model's dataset, read with the run's own settings (folder, val split, seed)."""
    c = loaded.config
    return datasets.load(loaded.meta["dataset"], data_dir or c.get("data_dir", ""), download,
                         c.get("val_split", 0.0), c.get("seed", 1))


def run_eval(path: Path, model_name: str = "", dataset: str = "", data_dir: str = "",
             split: str = "test", batch_size: int = 0, device: str = "auto", tta: bool = False,
             download: bool = True) -> dict:
    """Evaluate a saved model on a split of its dataset; the run's own data settings are reused."""
    loaded = load_model(path, model_name, dataset)
    dev = runtime.resolve_device(device)
    data = _data(loaded, data_dir, download)
    chosen = {"test": data.test, "train": data.train, "val": data.val}[split]
    if chosen is None:
        raise UsageError("--split val: this run held out no validation set (it trained without --val-split)")
    size = batch_size or loaded.config.get("test_batch_size", 1000)
    result = evaluate(loaded.model.to(dev), chosen, data.spec, size, dev, tta=tta)
    classes = loaded.meta["classes"] or data.classes
    per_class = result["confusion"].diag() / result["confusion"].sum(1).clamp(min=1)
    return {"checkpoint": str(path), "model": loaded.meta["model"],
            "dataset": loaded.meta["dataset"], "split": split, "tta": tta, "device": str(dev),
            **{k: v for k, v in result.items() if k != "confusion"},
            "per_class_acc": {c: float(a) for c, a in zip(classes, per_class)},
            "classes": list(classes), "confusion": result["confusion"].tolist()}


def run_export(path: Path, fmt: str, output: Path | None = None, model_name: str = "",
               dataset: str = "", data_dir: str = "") -> dict:
    """Export a saved model, verified on a real batch of its test set (random images in [0, 1]
    when the dataset is not at hand, which the result says)."""
    source = checkpoint_in(path, MODEL)
    loaded = load_model(source, model_name, dataset)
    meta = loaded.meta
    try:
        sample = _data(loaded, data_dir, download=False).test.images[:64].float() / 255
        verified_on = "test images"
    except PtrainError:
        g = torch.Generator().manual_seed(0)
        size = (64, meta["in_channels"], meta["image_size"], meta["image_size"])
        sample, verified_on = torch.rand(size, generator=g), "random images (dataset not found)"
    output = output or source.with_name(source.name.split(".")[0] + export.SUFFIXES[fmt])
    result = export.export(loaded.model, models.Normalize(meta["mean"], meta["std"]), meta,
                           sample, fmt, output, str(source))
    return {**result, "verified_on": f"{len(sample)} {verified_on}"}


@torch.inference_mode()
def run_predict(path: Path, images: list[Path], top_k: int = 3, device: str = "auto",
                model_name: str = "", dataset: str = "") -> list[dict]:
    """Top-k classes for each image; an unreadable image gets an "error" entry, the rest answers."""
    loaded = load_model(path, model_name, dataset)
    meta = loaded.meta
    dev = runtime.resolve_device(device)
    net = torch.nn.Sequential(models.Normalize(meta["mean"], meta["std"]), loaded.model).to(dev)
    classes = meta["classes"] or [str(i) for i in range(meta["num_classes"])]
    results = []
    for image in images:
        try:
            x = datasets.read_image(image, meta["in_channels"], meta["image_size"])
        except Exception as e:  # missing, not an image, truncated: say which and go on
            results.append({"image": str(image), "error": f"{type(e).__name__}: {e}"})
            continue
        probs = net(x[None].to(dev).float() / 255).softmax(1)[0]
        top = probs.topk(min(top_k, len(classes)))
        results.append({"image": str(image), "top": [
            {"class": classes[i], "index": int(i), "prob": float(p)}
            for p, i in zip(top.values.cpu(), top.indices.cpu())]})
    return results


def prepare_resume(target: Path, epochs: float | None = None, device: str | None = None,
                   model_name: str = "", dataset: str = "") -> tuple[configlib.TrainConfig, RunDir, dict]:
    """Check that a run can continue as asked; returns (its config, its run directory, the saved
    training state), with metrics logged after the checkpoint dropped from metrics.jsonl."""
    path = checkpoint_in(target, LAST)
    saved = checkpoint.load(path)
    if saved.get("format") != checkpoint.STATE_FORMAT:
        raise UsageError(f"{path} is not a training-state checkpoint; resume takes a run directory, "
                         "last.pt or best.pt (model.pth holds weights only)")
    cfg = configlib.from_dict(saved["config"])
    for flag, given, value in (("--model", model_name, cfg.model), ("--dataset", dataset, cfg.dataset)):
        if given and given != value:
            raise UsageError(f"resume continues the same run ({value}); {flag} cannot change it — "
                             "start a new run with `ptrain train` instead")
    cfg = _continued(cfg, saved, path, epochs, device)
    run = RunDir(path.parent)
    run.lock()  # refused while another process trains in it; before touching its metrics
    run.trim_metrics(position_of(saved).step)
    return cfg, run, saved


def _continued(cfg: configlib.TrainConfig, saved: dict, path: Path, epochs: float | None,
               device: str | None) -> configlib.TrainConfig:
    """The saved config with what a resume may change: more epochs, another device, another
    number of processes (the global batch, batch x processes, stays: the same batches)."""
    overrides: dict = {"device": device} if device else {}
    if epochs is not None:
        if epochs < cfg.epochs:
            raise UsageError(f"--epochs {epochs:g}: the run was set for {cfg.epochs:g}; it can only be extended")
        if epochs != cfg.epochs and cfg.scheduler == "onecycle":
            raise UsageError("a onecycle schedule ends with its last epoch; it cannot be extended")
        overrides["epochs"] = epochs
    was, now = saved.get("world", 1), distributed.world().size
    if was != now:
        total = cfg.batch_size * was
        if total % now:
            raise UsageError(f"{path} trained with {was} process(es) x batch {cfg.batch_size} = {total} "
                             f"images per step, which {now} processes cannot share evenly; "
                             "resume with a number of processes that divides it")
        overrides["batch_size"] = total // now
    cfg = configlib.validate(dataclasses.replace(cfg, **overrides))
    if position_of(saved).epoch >= cfg.epochs:
        raise AlreadyFinished(f"{path}: the run already finished its {plural(cfg.epochs, 'epoch')}; "
                              f"pass --epochs N (more than {cfg.epochs:g}) to extend it")
    return cfg


class AlreadyFinished(UsageError):
    """Resuming a finished run: an error for `ptrain resume`, nothing to do for --resume auto."""


# What may differ between a run and the command that continues it with --resume auto.
FREE_TO_CHANGE = ("device", "data_dir", "download", "workers", "log_interval", "save_interval",
                  "tensorboard")


def prepare_train(cfg: configlib.TrainConfig, name: str, run_dir: str, default: str,
                  overwrite: bool, auto: bool) -> tuple[configlib.TrainConfig, RunDir, dict | None]:
    """The run directory of a new run; with `auto` (--resume auto, torchrun restarts), the named
    run continues when its last.pt was made with these settings. Returns (config, run
    directory, saved state or None). Runs on rank 0 alone (it may remove files)."""
    if auto and not (name or run_dir):
        raise UsageError("--resume auto (and torchrun --max-restarts) need the run named with "
                         "--name or --run-dir, so that a restart finds it")
    path = rundir.choose(name, run_dir, default, overwrite=False, check_only=True) if auto else None
    if path is None or not (path / LAST).is_file():  # nothing to continue: start afresh
        return cfg, RunDir(rundir.choose(name, run_dir, default, overwrite or auto)), None
    saved = checkpoint.load(path / LAST)
    theirs = configlib.from_dict(saved.get("config", {}))
    theirs = dataclasses.replace(theirs, batch_size=theirs.batch_size * saved.get("world", 1))
    mine = dataclasses.replace(cfg, batch_size=cfg.batch_size * distributed.world().size,
                               augment=datasets.SPECS[cfg.dataset].augment
                               if cfg.augment == "auto" else cfg.augment)  # as the run saved it
    differ = [k for k, v in mine.to_dict().items()
              if k not in FREE_TO_CHANGE and getattr(theirs, k) != v and k != "epochs"]
    if differ:
        raise UsageError(f"--resume auto: {path / LAST} was made with other settings "
                         f"({', '.join(k.replace('_', '-') for k in differ)}); use another "
                         "--name/--run-dir, or --overwrite without --resume auto to start over")
    cfg = _continued(configlib.from_dict(saved["config"]), saved, path / LAST,
                     max(cfg.epochs, theirs.epochs), cfg.device)
    run = RunDir(path)
    run.lock()
    run.trim_metrics(position_of(saved).step)
    return cfg, run, saved
