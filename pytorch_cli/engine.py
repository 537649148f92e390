"""The training and evaluation loops. The engine owns the step; it reports through `emit`.

Host syncs happen only at log intervals, epoch ends and checkpoints: losses and correct counts
accumulate on the device in between.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from pytorch_cli import checkpoint, data as datalib, export, models, optim, runtime
from pytorch_cli.config import TrainConfig, from_dict, to_toml, validate
from pytorch_cli.errors import PtrainError, UsageError

Emit = Callable[[dict], None]


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so a resume continues at the next batch."""
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done
    best_acc: float = -1.0
    elapsed_s: float = 0.0
    epoch_loss_sum: float = 0.0  # summed train loss of this epoch's batches so far
    epoch_samples: int = 0


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: datalib.Split, spec: datalib.Spec, batch_size: int,
             device: torch.device, max_batches: int | None = None, tta: bool = False) -> dict:
    """Mean cross-entropy, top-1 (and top-5) accuracy and the confusion matrix over a split,
    in eval mode, without label smoothing. With tta, logits are averaged over the views."""
    model.eval()
    n = spec.num_classes
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    confusion = torch.zeros(n * n, device=device, dtype=torch.int64)
    top5 = torch.zeros((), device=device, dtype=torch.int64)
    total = 0
    for i, (views, y) in enumerate(datalib.eval_batches(split, spec, batch_size, device, tta)):
        if max_batches is not None and i >= max_batches:
            break
        logits = model(views[0])
        for v in views[1:]:
            logits = logits + model(v)
        logits = logits / len(views)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * n + logits.argmax(1), minlength=n * n)
        if n > 10:
            top5 += (logits.topk(5, 1).indices == y[:, None]).any(1).sum()
        total += len(y)
    confusion = confusion.view(n, n).cpu()  # rows: true class, columns: predicted
    correct = int(confusion.trace())
    out = {"loss": loss_sum.item() / total, "acc": correct / total, "correct": correct,
           "total": total, "confusion": confusion}
    if n > 10:
        out["top5_acc"] = int(top5.item()) / total
    return out


def load_model(path: Path, model_name: str = "", dataset: str = "") -> tuple[torch.nn.Module, dict, TrainConfig]:
    """Rebuild the model of a model.pth / last.pt / best.pt, or of a bare state_dict given
    --model and --dataset. Returns (model on CPU, meta, the run's config)."""
    saved = checkpoint.load(path)
    fmt = saved.get("format")
    if fmt in (checkpoint.MODEL_FORMAT, checkpoint.STATE_FORMAT):
        state_dict = saved["state_dict" if fmt == checkpoint.MODEL_FORMAT else "model"]
        meta, cfg = saved["meta"], from_dict(saved["config"])
        for flag, given, saved_value in (("--model", model_name, meta["model"]),
                                         ("--dataset", dataset, meta["dataset"])):
            if given and given != saved_value:
                raise UsageError(f"{path} holds a {meta['model']} trained on {meta['dataset']}; "
                                 f"{flag} {given} does not match (leave it out)")
    elif saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        if not (model_name and dataset):
            raise UsageError(f"{path} is a bare state_dict: say what it is with --model and --dataset")
        cfg = validate(TrainConfig(model=model_name, dataset=dataset))
        meta = model_meta(model_name, datalib.SPECS[dataset], [])  # class names come with the data
        state_dict = saved
    else:
        raise PtrainError(f"{path}: not a ptrain checkpoint or a state_dict of tensors")
    model = models.build(meta["model"], meta["in_channels"], meta["num_classes"], meta["image_size"])
    try:
        model.load_state_dict(checkpoint.clean_state_dict(state_dict))
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise PtrainError(f"{path}: the weights do not fit a {meta['model']} for {meta['dataset']} "
                          f"({detail})") from None
    return model, meta, cfg


def model_meta(model_name: str, spec: datalib.Spec, classes: list[str]) -> dict:
    """What rebuilds the model and its preprocessing without any flag."""
    return {"model": model_name, "dataset": spec.name, "in_channels": spec.channels,
            "num_classes": spec.num_classes, "image_size": spec.size, "mean": list(spec.mean),
            "std": list(spec.std), "classes": list(classes)}


def _append_jsonl(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _trim_metrics(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint we resume from: they will be logged again."""
    if path.exists():
        lines = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines if line.strip()
                                and json.loads(line).get("step", 0) <= step))


def train(cfg: TrainConfig, run_dir: Path | None, emit: Emit, dry_run: bool = False,
          resume: dict | None = None) -> dict:
    """Train per `cfg`, writing into `run_dir` (None: write nothing). Returns the final summary.
    `resume`: a training-state checkpoint to continue from, at the batch after the one it saved."""
    runtime.set_deterministic(cfg.deterministic)
    runtime.seed_everything(cfg.seed)
    device = runtime.resolve_device(cfg.device)
    data = datalib.load(cfg)
    spec = data.spec
    if cfg.augment == "auto":
        cfg = dataclasses.replace(cfg, augment=spec.augment)
    storage = torch.device("cpu") if cfg.workers else device  # where the uint8 dataset lives
    train_split, test_split = data.train.to(storage), data.test.to(storage)
    val_split = data.val.to(storage) if data.val is not None else None

    model = models.build(cfg.model, spec.channels, spec.num_classes, spec.size, cfg.init).to(device)
    batches_per_epoch = datalib.num_batches(len(train_split), cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    optimizer = optim.build_optimizer(model, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, steps_per_epoch)
    pos = Position()
    meta = model_meta(cfg.model, spec, data.classes)

    metrics_path = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
        metrics_path = run_dir / "metrics.jsonl"
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        pos = Position(**resume["position"])
        runtime.set_rng_state(resume["rng"])  # last: building the model drew from the RNG
        if metrics_path is not None:
            _trim_metrics(metrics_path, pos.step)

    def save_state(path: Path) -> None:
        checkpoint.atomic_save({
            "format": checkpoint.STATE_FORMAT, "version": checkpoint.VERSION,
            "model": checkpoint.clean_state_dict(model.state_dict()),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "position": dataclasses.asdict(pos), "rng": runtime.rng_state(),
            "config": cfg.to_dict(), "meta": meta}, path)

    emit({"kind": "start", "device": str(device), "dataset": spec.name, "source": data.source,
          "train_size": len(train_split), "val_size": len(val_split) if val_split else 0,
          "test_size": len(test_split), "model": cfg.model,
          "params": models.count_parameters(model), "epochs": cfg.epochs,
          "batches": batches_per_epoch, "run_dir": str(run_dir) if run_dir else None,
          "dry_run": dry_run, "resume_at": [pos.epoch + 1, pos.batch] if resume else None})

    started = time.perf_counter() - pos.elapsed_s
    result: dict = {}
    for epoch in range(pos.epoch, cfg.epochs):
        model.train()
        epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
        interval_loss = torch.zeros((), device=device, dtype=torch.float64)
        interval_batches = interval_samples = 0
        epoch_t0 = interval_t0 = time.perf_counter()
        epoch_samples_run = 0
        since_save = 0
        batches = datalib.train_batches(train_split, spec, cfg.batch_size, cfg.seed, epoch,
                                        cfg.augment, device, start=pos.batch, workers=cfg.workers)
        for b, (x, y) in enumerate(batches, start=pos.batch):
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            (loss / cfg.grad_accum).backward()
            epoch_loss += loss.detach().double() * len(y)
            interval_loss += loss.detach().double()
            interval_batches += 1
            interval_samples += len(y)
            epoch_samples_run += len(y)
            pos.epoch_samples += len(y)
            pos.batch = b + 1
            since_save += 1
            at_step = pos.batch % cfg.grad_accum == 0 or pos.batch == batches_per_epoch
            if at_step:
                if cfg.clip_grad:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                pos.step += 1
            if dry_run:
                break
            if pos.batch % cfg.log_interval == 0:
                now = time.perf_counter()
                record = {"kind": "train", "epoch": epoch + 1, "batch": pos.batch,
                          "batches": batches_per_epoch, "step": pos.step,
                          "lr": optimizer.param_groups[0]["lr"],
                          "train_loss": interval_loss.item() / interval_batches,
                          "images_per_s": interval_samples / max(now - interval_t0, 1e-9),
                          "elapsed_s": now - started}
                emit(record)
                _append_jsonl(metrics_path, record)
                interval_loss.zero_()
                interval_batches = interval_samples = 0
                interval_t0 = now
            if (run_dir is not None and cfg.save_model and cfg.save_interval and at_step
                    and since_save >= cfg.save_interval and pos.batch < batches_per_epoch):
                pos.epoch_loss_sum += epoch_loss.item()
                epoch_loss.zero_()
                pos.elapsed_s = time.perf_counter() - started
                save_state(run_dir / "last.pt")
                since_save = 0
        train_time = time.perf_counter() - epoch_t0
        train_loss = (pos.epoch_loss_sum + epoch_loss.item()) / pos.epoch_samples

        max_eval = 1 if dry_run else None
        test = evaluate(model, test_split, spec, cfg.test_batch_size, device, max_eval)
        val = (evaluate(model, val_split, spec, cfg.test_batch_size, device, max_eval)
               if val_split is not None else None)
        pos.epoch, pos.batch = epoch + 1, 0
        pos.epoch_loss_sum, pos.epoch_samples = 0.0, 0
        pos.elapsed_s = time.perf_counter() - started
        acc = val["acc"] if val else test["acc"]
        improved = acc > pos.best_acc
        pos.best_acc = max(pos.best_acc, acc)
        result = {"kind": "epoch", "epoch": epoch + 1, "epochs": cfg.epochs, "step": pos.step,
                  "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                  "test_loss": test["loss"], "test_acc": test["acc"],
                  "test_correct": test["correct"], "test_total": test["total"],
                  **({"val_loss": val["loss"], "val_acc": val["acc"]} if val else {}),
                  "images_per_s": epoch_samples_run / max(train_time, 1e-9),
                  "elapsed_s": pos.elapsed_s}
        emit(result)
        if dry_run:
            break
        _append_jsonl(metrics_path, result)
        if run_dir is not None and cfg.save_model:
            save_state(run_dir / "last.pt")
            if improved:
                save_state(run_dir / "best.pt")

    if run_dir is not None and cfg.save_model and not dry_run:
        checkpoint.atomic_save({
            "format": checkpoint.MODEL_FORMAT, "version": checkpoint.VERSION,
            "state_dict": checkpoint.clean_state_dict(model.state_dict()), "meta": meta,
            "config": cfg.to_dict(),
            "metrics": {k: result[k] for k in ("epoch", "test_loss", "test_acc") if k in result}},
            run_dir / "model.pth")
    summary = {k: v for k, v in result.items() if k != "kind"}
    summary.update({"best_acc": pos.best_acc, "device": str(device),
                    "run_dir": str(run_dir) if run_dir else None, "dry_run": dry_run})
    emit({"kind": "end", **summary})
    return summary


def run_eval(path: Path, model_name: str = "", dataset: str = "", data_dir: str = "",
             split: str = "test", batch_size: int = 0, device: str = "auto", tta: bool = False,
             download: bool = True) -> dict:
    """Evaluate a saved model on a split of its dataset; the run's own data settings are reused."""
    model, meta, cfg = load_model(path, model_name, dataset)
    cfg = dataclasses.replace(cfg, device=device, download=download,
                              data_dir=data_dir or cfg.data_dir)
    validate(cfg)
    dev = runtime.resolve_device(device)
    data = datalib.load(cfg)
    splits = {"test": data.test, "train": data.train, "val": data.val}
    if splits[split] is None:
        raise UsageError("--split val: this run held out no validation set (it trained without --val-split)")
    result = evaluate(model.to(dev), splits[split], data.spec, batch_size or cfg.test_batch_size,
                      dev, tta=tta)
    classes = meta["classes"] or data.classes
    per_class = result["confusion"].diag() / result["confusion"].sum(1).clamp(min=1)
    return {"checkpoint": str(path), "model": meta["model"], "dataset": meta["dataset"],
            "split": split, "tta": tta, "device": str(dev),
            **{k: v for k, v in result.items() if k != "confusion"},
            "per_class_acc": {c: float(a) for c, a in zip(classes, per_class)},
            "classes": list(classes), "confusion": result["confusion"].tolist()}


def run_export(path: Path, fmt: str, output: Path | None = None, model_name: str = "",
               dataset: str = "", data_dir: str = "") -> dict:
    """Export a saved model, verified on a real batch of its test set (random images in [0, 1]
    when the dataset is not at hand, which the result says)."""
    model, meta, cfg = load_model(path, model_name, dataset)
    cfg = dataclasses.replace(cfg, data_dir=data_dir or cfg.data_dir, download=False)
    try:
        images = datalib.load(cfg).test.images[:64]
        sample, source = images.float() / 255, "test images"
    except PtrainError:
        g = torch.Generator().manual_seed(0)
        size = (64, meta["in_channels"], meta["image_size"], meta["image_size"])
        sample, source = torch.rand(size, generator=g), "random images (dataset not found)"
    output = output or path.with_name(path.name.split(".")[0] + export.SUFFIXES[fmt])
    result = export.export(model, meta, sample, fmt, output, str(path))
    return {**result, "verified_on": f"{len(sample)} {source}"}


@torch.inference_mode()
def run_predict(path: Path, images: list[Path], top_k: int = 3, device: str = "auto",
                model_name: str = "", dataset: str = "") -> list[dict]:
    """Top-k classes for each image; an unreadable image gets an "error" entry, the rest answers."""
    model, meta, _ = load_model(path, model_name, dataset)
    dev = runtime.resolve_device(device)
    model = model.to(dev).eval()
    classes = meta["classes"] or [str(i) for i in range(meta["num_classes"])]
    results = []
    for image in images:
        try:
            x = datalib.read_image(image, meta["in_channels"], meta["image_size"])
        except Exception as e:  # missing, not an image, truncated: say which and go on
            results.append({"image": str(image), "error": f"{type(e).__name__}: {e}"})
            continue
        probs = model(datalib.normalize_with(x[None].to(dev), meta["mean"], meta["std"])).softmax(1)[0]
        top = probs.topk(min(top_k, len(classes)))
        results.append({"image": str(image), "top": [
            {"class": classes[i], "index": int(i), "prob": float(p)}
            for p, i in zip(top.values.cpu(), top.indices.cpu())]})
    return results
