"""A saved model at work: load it and evaluate, export or run it (`ptrain eval`, `export`,
`predict`). Each takes a checkpoint file or a run directory (then its model.pth)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pytorch_cli.commands import misclassified
from pytorch_cli.data import batches, catalog, datasets, folder_arrays, folders, matching
from pytorch_cli.models import zoo as models
from pytorch_cli.platform import runtime
from pytorch_cli.platform.errors import DamagedFile, PtrainError, UsageError
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings.declare import check_choice
from pytorch_cli.store import checkpoint, export, outputs, sidecar
from pytorch_cli.store.checkpoint import checkpoint_in
from pytorch_cli.store.rundir import LAST, MODEL
from pytorch_cli.training import freezing
from pytorch_cli.training.evaluate import OutOfMemory, class_scores, evaluate, merged
from pytorch_cli.training.state import check_saved


@dataclass
class Loaded:
    model: torch.nn.Module  # on the CPU, eval mode
    meta: dict  # what models.describe saves
    config: dict  # the run's config; {} for a bare state_dict

    @property
    def resize(self) -> str:
        """How the run fitted images of another shape to its size (--resize; older runs and
        bare state_dicts: squash, what ptrain always did)."""
        return self.config.get("resize", catalog.SQUASH)


def spec_of(loaded: Loaded) -> catalog.Spec:
    """The run's data spec: a built-in dataset's own (its images' size: --image-size resizes
    them on the device, batches.resize), a folder's at the run's size. A single image is
    decoded at spec.size and resized as training did, so predict and activations see what eval
    sees (PIL's resize to --image-size differs slightly)."""
    meta = loaded.meta
    return catalog.SPECS.get(meta["dataset"]) or catalog.folder_spec(
        meta["in_channels"], models.meta_size(meta), meta["num_classes"], meta["mean"],
        meta["std"])


def load_model(path: Path, model_name: str = "", dataset: str = "", ema: bool = True) -> Loaded:
    """Rebuild the model of a model.pth / last.pt / best.pt (or a run directory), or of a bare
    state_dict given --model and --dataset; `ema`: an --ema run's last.pt/best.pt give their
    average (as model.pth does), else their live weights (a run directory: its last.pt's)."""
    path = checkpoint_in(path, MODEL if ema else LAST)  # model.pth holds only the average
    saved = checkpoint.load(path)
    if not ema and "model_ema" not in saved:
        raise UsageError(f"--no-ema: {path} holds no average beside its weights (an --ema run's "
                         "last.pt and best.pt hold both); leave --no-ema out")
    state_dict = checkpoint.weights(saved, ema)
    if state_dict is None:
        raise PtrainError(f"{path}: not a ptrain checkpoint or a state_dict of tensors")
    side = sidecar.read(path) if "meta" not in saved else {}
    if "meta" in saved or side.get("file") == path.name:
        if "meta" in saved:
            meta, config = saved["meta"], saved.get("config", {})
            saved_config(config, path)
            if saved.get("format") == checkpoint.STATE_FORMAT:  # the whole file: its schema
                check_saved(saved, path)
        else:  # ptrain's safetensors export: its sidecar says what a model.pth's meta says
            meta, config = sidecar.described(side, path)
        for flag, given, saved_value in (("--model", model_name, meta["model"]),
                                         ("--dataset", dataset, meta["dataset"])):
            if given and given != saved_value:
                raise UsageError(f"{path} holds a {meta['model']} trained on {meta['dataset']}; "
                                 f"{flag} {given} does not match (leave it out)")
    else:
        if not (model_name and dataset):
            raise UsageError(
                f"{path} is a bare state_dict: say what it is with --model and --dataset"
            )
        if not models.known(model_name):
            raise UsageError(f"--model must be one of {models.MODEL_NAMES}, got {model_name!r}")
        if dataset == catalog.FOLDER:  # its shapes and classes came from the images
            raise UsageError(f"{path} is a bare state_dict, which does not say the image size, "
                             "channels and classes of a folder run: use the run's model.pth")
        check_choice("dataset", dataset, tuple(catalog.SPECS))
        meta, config = models.describe(model_name, catalog.SPECS[dataset], []), {}
    return Loaded(rebuild(state_dict, meta, path).eval(), meta, config)


def saved_config(values: dict, path: Path) -> configlib.TrainConfig:
    """A checkpoint's config, held to the declarations a TOML config is held to."""
    try:
        return configlib.from_dict(values)
    except UsageError as e:
        raise DamagedFile(path, f"its saved config is not valid ({e})") from None


def rebuild(state_dict: dict, meta: dict, path: Path) -> torch.nn.Module:
    """The model meta describes, with the file's weights: names and shapes must fit exactly."""
    model = models.build(
        meta["model"], meta["in_channels"], meta["num_classes"], models.meta_size(meta)
    )
    try:
        model.load_state_dict(checkpoint.clean_state_dict(state_dict))
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise PtrainError(f"{path}: the weights do not fit a {meta['model']} for {meta['dataset']} "
                          f"({detail})") from None
    return model


def _data(loaded: Loaded, data_dir: str = "", download: bool = True,
          evaluating: bool = True, labels: str | None = None, split: str = "test"
          ) -> datasets.Data:
    """The model's dataset, read with the run's own settings (folder, val split, seed). To
    evaluate, `data_dir` and `labels` may name another labelled set of its classes (or of some
    of them: labels "", its class folders, whatever CSV the run had); an export's
    verification batch takes any images of the run's shape."""
    c, meta = loaded.config, loaded.meta
    if meta["dataset"] == catalog.FOLDER and "data_dir" not in c and (
            split != "all" or not data_dir):  # a safetensors export's: no run settings
        raise UsageError("the weights of a folder run (a safetensors export), whose held-out "
                         "images and folder only its model.pth knows: give the run's model.pth, "
                         "or score every image of a folder with --data-dir DIR --split all")
    if labels and meta["dataset"] != catalog.FOLDER:
        raise UsageError(f"--labels: the run trained on {meta['dataset']}, not a folder")
    if data_dir and meta["dataset"] == "fake":
        raise UsageError("--data-dir: the run trained on the fake set, which is generated; it "
                         "reads no folder")
    folder = folders.Options(meta["in_channels"], models.meta_size(meta), c.get("test_split", 0.2),
                             stats=(meta["mean"], meta["std"]),  # decoded and drawn as it
                             split=meta.get("split", ""),  # trained (older runs: a shuffle)
                             labels=c.get("labels", "") if labels is None else labels,
                             least_classes=1 if evaluating else 2, hold_out=split != "all",
                             resize=loaded.resize)
    data = datasets.load(meta["dataset"], data_dir or c.get("data_dir", ""), download,
                         c.get("val_split", 0.0) if folder.hold_out else 0.0, c.get("seed", 1),
                         folder)
    if evaluating:
        data = matching.onto_run_classes(meta, data, folder.labels)
        if split != "all":  # (all: which rows are held out does not matter)
            other = labels is not None or bool(data_dir) and not outputs.same_file(
                Path(data_dir).expanduser(), Path(c.get("data_dir", "")).expanduser())
            matching.moved_warning(meta, data, split, other)
    return datasets.normalised(data, meta["mean"], meta["std"])  # --weights brought its own


def run_eval(path: Path, model_name: str = "", dataset: str = "", data_dir: str = "",
             split: str = "test", batch_size: int = 0, device: str = "auto", tta: bool = False,
             download: bool = True, ema: bool = True, precision: str = "",
             labels: str | None = None,
             errors: misclassified.Wanted | None = None) -> dict:
    """Evaluate a saved model on a split of its dataset (all: every image of it); the run's own
    data settings are reused, and its --precision and backends (""), so that the figures are the
    ones training printed. `data_dir`, `labels`: another labelled set of the run's classes;
    `errors`: a CSV file and/or an image that get the misclassified images, worst first."""
    loaded = load_model(path, model_name, dataset, ema)
    if errors is not None:
        errors.check(loaded.config, data_dir, labels)
    if errors is not None and errors.heatmap:  # a model FX cannot trace: said before the work
        from pytorch_cli.models import activations
        activations.node_names(loaded.model, loaded.meta["model"])
    dev = runtime.resolve_device(device)
    runtime.fast_backends(loaded.config.get("deterministic", False))  # TF32, as it trained
    precision = precision or loaded.config.get("precision", "32")
    amp = runtime.autocast_dtype(precision, dev)
    runtime.keep_freed_memory()  # mnist-cnn on MNIST's test set: 2.0 s instead of 3.95
    data = _data(loaded, data_dir, download, labels=labels, split=split)
    parts = [(name, part) for name, part in (("train", data.train), ("val", data.val),
                                             ("test", data.test))
             if name == split or (split == "all" and part is not None and len(part))]
    if parts == [("val", None)] and (data_dir or labels is not None):
        raise UsageError(f"--split val: {data.source} has no validation set (a val/ folder "
                         "beside train/ and test/, or one the run's --val-split holds out)")
    if parts == [("val", None)]:
        raise UsageError(
            "--split val: this run held out no validation set (it trained without --val-split)"
        )
    size = batch_size or loaded.config.get("test_batch_size", 1000)
    per_image: list[list | None] = [[] if errors else None for _ in parts]
    model = loaded.model.to(dev)
    views = catalog.tta_views_of(loaded.config.get("augment", "auto"), data.spec) if tta else ""
    try:  # each part in turn, then their sums: no copy of the whole dataset
        result = merged([evaluate(model, part, data.spec, size, dev, tta=views, amp=amp,
                                  per_image=kept)
                         for (_, part), kept in zip(parts, per_image)])
    except OutOfMemory as e:
        raise PtrainError(f"{e}; use a smaller --batch-size ({max(1, size // 4)}, say)") from None
    classes = loaded.meta["classes"] or data.classes
    if errors:
        named = data.source if loaded.meta["dataset"] == catalog.FOLDER else loaded.meta["dataset"]
        result.update(misclassified.save(errors, [
            row for (name, part), kept in zip(parts, per_image)
            for row in misclassified.rows(kept, part, name, data, classes)],
            f"{path} on {named} {split}", lambda worst: _heatmaps(
                model, data.spec, dev, [classes.index(w.predicted) for w in worst],
                [w.pixels for w in worst], loaded.meta["model"])))
    scores = class_scores(result["confusion"], classes)
    return {"checkpoint": str(path), "model": loaded.meta["model"],
            "dataset": loaded.meta["dataset"], "source": data.source, "split": split,
            "tta": tta, "device": str(dev),
            "precision": runtime.precision_name(amp),  # what ran
            **{k: v for k, v in result.items() if k != "confusion"},
            "per_class_acc": {c: s["recall"] for c, s in scores["per_class"].items()},
            **scores, "classes": list(classes), "confusion": result["confusion"].tolist()}


def _heatmaps(model, spec, dev, targets: list[int], pixels: list[torch.Tensor],
              name: str) -> torch.Tensor:
    """Grad-CAM of each image (uint8, as its dataset holds it) for its target class, the image
    prepared as evaluation prepares it (the run's size, its normalisation), in float32."""
    from pytorch_cli.models import activations
    x = batches.resize(torch.stack(pixels).to(dev), spec.size).float() / 255
    return activations.grad_cam(model, batches.Normalize(spec.mean, spec.std).to(dev)(x),
                                targets, name)


def run_export(path: Path, fmt: str, output: Path | None = None, model_name: str = "",
               dataset: str = "", data_dir: str = "") -> dict:
    """Export a saved model, verified on a real batch of its test set (random images in [0, 1]
    when the dataset is not at hand, which the result says)."""
    source = checkpoint_in(path, MODEL)
    loaded = load_model(source, model_name, dataset)
    meta = loaded.meta
    output = output or source.with_name(source.name.split(".")[0] + export.FORMATS[fmt][0])
    export.check_output(output, source, fmt)  # before the slow part: data, export, verification
    try:
        data = _data(loaded, data_dir, False, evaluating=False)
        sample = batches.resize(data.test.images[:64], data.spec.size).float() / 255
        verified_on = "test images"
    except PtrainError:
        if data_dir:  # named on purpose: not found is an error, not random images
            raise
        g = torch.Generator().manual_seed(0)
        size = (64, meta["in_channels"], *models.meta_size(meta))
        sample, verified_on = torch.rand(size, generator=g), "random images (dataset not found)"
    verified_on = f"{len(sample)} {verified_on}"
    result = export.export(loaded.model, batches.Normalize(meta["mean"], meta["std"]),
                           {**meta, "resize": loaded.resize,
                            "precision": loaded.config.get("precision", "32")},
                           sample, fmt, output, str(source), verified_on)
    return {**result, "verified_on": verified_on}


def summary(target: Path | None, config_file: list[Path] | None, overrides: dict,
            batch_size: int = 0) -> dict:
    """`ptrain summary`: the model of a saved run (target), or the one a training command with
    these settings (a --config file and flags) would build; batch_size 0: the run's."""
    from dataclasses import asdict

    from pytorch_cli.models import adapt
    from pytorch_cli.models import summary as summarylib
    if target is not None:  # (overrides: a bare state_dict's --model and --dataset)
        loaded = load_model(target, overrides.get("model", ""), overrides.get("dataset", ""))
        model, name, meta = loaded.model, loaded.meta["model"], loaded.meta
        image = (meta["in_channels"], *models.meta_size(meta))
        cfg = saved_config(loaded.config, target)  # (a bare state_dict's: the defaults)
        batch = batch_size or cfg.batch_size
        epoch, classes = max(0, math.ceil(cfg.epochs) - 1), meta["num_classes"]  # its last
    else:
        cfg = configlib.resolve(config_file, overrides)
        if cfg.dataset == catalog.FOLDER:  # the folder's headers say its shape: nothing decoded
            if not cfg.data_dir:
                raise UsageError("--dataset folder needs --data-dir DIR (its images' shape and "
                                 "classes make the model)")
            found = folder_arrays.listed(Path(cfg.data_dir).expanduser(), cfg.labels)
            channels, size = folders.shape(found, cfg.channels, catalog.parse_size(cfg.image_size))
            classes = len(found.classes)
        else:
            spec = catalog.SPECS[cfg.dataset]
            channels, classes = spec.channels, spec.num_classes
            size = catalog.parse_size(cfg.image_size) or spec.size
        model, name, image = models.build(cfg.model, channels, classes, size), cfg.model, (
            channels, *size)
        models.check_input(model, name, channels, size)  # a ViT at 32 px: one line
        batch, epoch = batch_size or cfg.batch_size, 0  # what the first epoch trains
    if freezing.frozen(cfg, epoch):  # the head alone
        backbone = adapt.backbone(model, classes)
        for n, p in model.named_parameters():
            p.requires_grad_(n not in backbone)
    return {"model": name, **asdict(summarylib.summarize(model, image, batch))}
