"""`ptrain predict`: image files to the run's classes (and `ptrain activations`: what each
stage makes of one). The files are decoded in worker
processes, in order, as a folder run's are (decode.py), and classified a batch at a time: on
this 2-core CPU, `--csv` for 10,000 CIFAR-10 PNGs (cifar-net) took 6.1-7.3 s for the whole
command, against 15.1-16.5 s one image at a time, most of it batch-1 forwards (2026-12-07)."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch

from pytorch_cli.commands.saved import load_model, spec_of
from pytorch_cli.data import batches, catalog, decode, folders
from pytorch_cli.data.images import read_image
from pytorch_cli.models import hub
from pytorch_cli.models import zoo as models
from pytorch_cli.platform import runtime
from pytorch_cli.platform.errors import PtrainError, UsageError, plural
from pytorch_cli.store import outputs
from pytorch_cli.training.step import autocast

BATCH = 64  # images a forward: the batch-1 loop's cost is per call, not per image


def given_images(images: list[Path]) -> list[Path]:
    """The IMAGE arguments, `-` replaced by the paths on standard input, one a line (`find ...
    | ptrain predict RUN -`; blank lines skipped), or NUL-separated (`find -print0`: a path
    holds no NUL, so any NUL means that)."""
    if Path("-") not in images:
        return images
    if sys.stdin is None:  # started with it closed (`<&-`)
        raise UsageError("- stands for the image paths on standard input, which is closed")
    text = sys.stdin.read()
    entries = text.split("\0") if "\0" in text else [e.rstrip("\r") for e in text.split("\n")]
    listed = [Path(e) for e in entries if e.strip()]
    return [p for given in images for p in (listed if given == Path("-") else [given])]


def _files(given: Path) -> list[tuple[Path, str]]:
    """(path, "") for an image file as given; a folder: for every image under it (a test folder
    of classes...) and (subfolder, why) for each it may not list, or (the folder, why) if it
    holds none or cannot be read."""
    if not given.is_dir():
        return [(given, "")]
    try:
        found, unread = folders.images_in(given)
    except PtrainError as e:  # "cannot read DIR: Permission denied"
        return [(given, str(e))]
    return [(p, "") for p in found] + unread or [
        (given, f"{given} holds no image files ({', '.join(folders.IMAGE_EXTENSIONS)})")]


@torch.inference_mode()
def run_predict(path: Path, images: list[Path], top_k: int = 3, device: str = "auto",
                model_name: str = "", dataset: str = "",
                features: list[torch.Tensor] | None = None, batch_size: int = BATCH,
                tta: bool = False, precision: str = "") -> list[dict]:
    """Top-k classes for each image, in order; an unreadable image gets an "error" entry, the
    rest answers. `features`: a list that gets each answered image's penultimate features (what
    the head takes: the model with its last layer deleted), in order. `tta`: the weighted
    logits of eval --tta's views (the features stay the image's own). Under the run's autocast
    and backends, as eval (`precision`: another)."""
    loaded = load_model(path, model_name, dataset)
    meta = loaded.meta
    dev = runtime.resolve_device(device)
    runtime.keep_freed_memory()
    runtime.fast_backends(loaded.config.get("deterministic", False))  # TF32, as it trained
    amp = runtime.autocast_dtype(precision or loaded.config.get("precision", "32"), dev)
    net = torch.nn.Sequential(batches.Normalize(meta["mean"], meta["std"]), loaded.model).to(dev)
    plain = {"view": True}  # the features of the image itself, not of its TTA views
    if features is not None:
        head = loaded.model.get_submodule(  # (a distilled model's: its class token's)
            hub.head_names(loaded.model, meta["num_classes"])[0])
        head.register_forward_hook(lambda m, args, out: features.extend(
            args[0].flatten(1).float().cpu()) if plain["view"] else None)
    size = models.meta_size(meta)
    spec = spec_of(loaded)  # (its size: the images'; eval --tta's views)
    views = catalog.tta_views_of(loaded.config.get("augment", "auto"), spec) if tta else ""
    classes = meta["classes"] or [str(i) for i in range(meta["num_classes"])]
    listed = [f for given in images for f in _files(given)]
    paths = [p for p, _ in listed]
    results: list[dict] = [{"image": str(p), **({"error": why} if why else {})}
                           for p, why in listed]
    files = [row for row, (_, why) in enumerate(listed) if not why]  # (a folder: its error)
    batch: list[tuple[int, np.ndarray]] = []
    # a built-in set's images (MNIST's 28x28) are decoded at their own size and brought to an
    # --image-size on the device, as eval does (batches.resize; saved.spec_of)
    decoded = decode.read_all([paths[row] for row in files], meta["in_channels"], spec.size,
                              loaded.resize)
    for row, (image, error) in zip(files, decoded):
        if error:  # missing, not an image, truncated: it says which, and the rest go on
            results[row]["error"] = error
            continue
        batch.append((row, image))
        if len(batch) == batch_size:
            _classify(net, batch, results, classes, top_k, dev, (views, size), plain, amp)
            batch = []
    if batch:
        _classify(net, batch, results, classes, top_k, dev, (views, size), plain, amp)
    return results


def _classify(net: torch.nn.Module, batch: list[tuple[int, np.ndarray]], results: list[dict],
              classes: list[str], top_k: int, dev: torch.device, how: tuple[str, tuple],
              plain: dict, amp: torch.dtype | None) -> None:
    """`how`: the TTA views' kind ("": none) and the run's image size."""
    tta, size = how
    x = batches.resize(torch.from_numpy(np.stack([image for _, image in batch])).to(dev), size)
    views = batches.tta_views(x, tta) if tta else [(1.0, x)]
    try:
        logits = 0
        for i, (weight, view) in enumerate(views):  # the first view: the image itself
            plain["view"] = i == 0
            with autocast(dev, amp):
                logits = logits + weight * net(view.float() / 255).float()
        top = logits.softmax(1).topk(min(top_k, len(classes)), 1)
    except RuntimeError as e:
        if not runtime.out_of_memory(e):
            raise
        raise PtrainError(f"out of memory classifying {len(batch)} images at once; use a "
                          f"smaller --batch-size ({max(1, len(batch) // 4)}, say)") from None
    for (row, _), probs, indices in zip(batch, top.values.tolist(), top.indices.tolist()):
        results[row]["top"] = [{"class": classes[i], "index": i, "prob": p}
                               for p, i in zip(probs, indices)]


def print_csv(results: list[dict], top_k: int) -> None:
    """One row per image: its best class and probability, the next ones, or its error."""
    writer = csv.writer(sys.stdout)
    top_k = max((len(r["top"]) for r in results if "top" in r), default=top_k)  # <= classes
    ranks = [f"{name}_{i}" for i in range(2, top_k + 1) for name in ("class", "prob")]
    writer.writerow(["image", "class", "prob", *ranks, "error"])
    for r in results:
        cells = [value for t in r.get("top", []) for value in (t["class"], f"{t['prob']:.6f}")]
        cells += [""] * (2 * top_k - len(cells))
        writer.writerow([r["image"], *cells, r.get("error", "")])


def check_features_output(out: Path, source: Path, images: list[Path]) -> None:
    """Before predicting: --features names a new .npy file, not the checkpoint or an image."""
    outputs.check_new_file(out, "--features", ".npy",
                           "a .npy file (NumPy's format), e.g. features.npy", source,
                           {image: "an image being read" for image in images})


def write_features(out: Path, features: list[torch.Tensor]) -> str:
    """`predict --features FILE.npy`: an (images, features) float32 array, written atomically
    (its folder made where missing); the line that says so."""
    if not features:
        return f"no features written to {out}: no image was read"
    array = torch.stack(features).numpy()
    buf = io.BytesIO()
    np.save(buf, array)
    outputs.write_new_file(out, buf.getvalue())
    return (f"penultimate features of {plural(array.shape[0], 'image')} ({array.shape[1]} "
            f"each), in the order above, written to {out}")


def run_activations(path: Path, image: Path, output: Path, per_stage: int = 8,
                    model_name: str = "", dataset: str = "") -> list:
    """`ptrain activations`: each stage's feature maps for one image, prepared as in training,
    drawn into `output`; the stages."""
    from pytorch_cli.models import activations
    from pytorch_cli.output import plot
    outputs.refuse_overwrite([output], {image: "the image being read",
                                        **outputs.checkpoint_read(path)}, "-o")
    loaded = load_model(path, model_name, dataset)
    outputs.refuse_in_image_folders([("-o", output)], outputs.image_folders(loaded.config))
    meta = loaded.meta
    x = read_image(image, meta["in_channels"], spec_of(loaded).size, loaded.resize)
    x = batches.resize(x[None], models.meta_size(meta))[0]  # as training and predict
    normalise = batches.Normalize(meta["mean"], meta["std"])(x[None].float() / 255)
    found = activations.stages(loaded.model, normalise, meta["model"])
    with torch.no_grad():
        probs = loaded.model(normalise).float().softmax(1)[0]
    top = int(probs.argmax())
    cam = activations.grad_cam(loaded.model, normalise, [top], meta["model"], found[-1].node)[0]
    name = meta["classes"][top] if meta["classes"] else str(top)
    plot.feature_maps(x, found, output, per_stage, (cam, f"Grad-CAM: {name} {probs[top]:.2f}"))
    return found
