"""What an export says about itself, for whoever deploys it without ptrain: the sidecar
(EXPORT.json beside the file: the model, its classes, input, preprocessing, normalisation, the
checkpoint it came from, its verification), the same fields embedded in the file, and the
sidecar read back (a safetensors export is loaded by it). Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from pytorch_cli.data import catalog
from pytorch_cli.platform.errors import DamagedFile, PtrainError


def read(export_file: Path) -> dict:
    """The JSON sidecar `export` wrote beside a file (EXPORT.json); {} if none, or not ptrain's."""
    try:
        side = json.loads(Path(f"{export_file}.json").read_text())
    except (OSError, ValueError):
        return {}
    return side if isinstance(side, dict) else {}


def described(side: dict, path: Path) -> tuple[dict, dict]:
    """(meta, config) of a safetensors export, from its sidecar: the run's size, normalisation
    and classes. Given only --model and --dataset, a 40 px MNIST run's export was evaluated at
    28 px, 69% for its 95%, and exported again at 28 px (a hostile trial)."""
    from pytorch_cli.models import zoo
    where = Path(f"{path}.json")
    try:
        shape = side["input_shape"]
        meta = {"model": side["model"], "dataset": side["dataset"], "in_channels": shape[1],
                "num_classes": len(side["classes"]), "image_size": shape[2:],
                "mean": side["mean"], "std": side["std"], "classes": side["classes"]}
    except (KeyError, TypeError, IndexError) as e:
        raise DamagedFile(where, f"it does not say the export's {e}", "export the run again"
                          ) from None
    zoo.check_meta(meta, where)
    return meta, {"resize": side.get("resize", catalog.SQUASH)}


AUTOCAST = {"auto": "bfloat16 on a CUDA GPU that has it (float32 elsewhere)", "bf16": "bfloat16",
            "16": "float16"}  # --precision's autocast (runtime.autocast_dtype)


def describe(meta: dict, fmt: str, output: Path, source: str) -> dict:
    """What the export is, for whoever deploys it without ptrain: the sidecar's fields (but the
    verification's), also embedded in the file itself."""
    size = catalog.parse_size(meta["image_size"])
    precision = meta.get("precision", "32")
    return {
        "format": fmt,
        "file": output.name,
        "source_checkpoint": str(Path(source).resolve()),  # (a relative one: from where?)
        "model": meta["model"],
        "dataset": meta["dataset"],
        "classes": meta["classes"],
        "input_shape": ["batch", meta["in_channels"], *size],
        "resize": meta.get("resize", catalog.SQUASH),  # how images of another shape met that size
        "input": "float32 images in [0, 1], NCHW"
        if fmt != "safetensors"
        else "weights only: normalise inputs with mean/std yourself",
        "normalization_in_graph": fmt != "safetensors",
        "channel_order": {1: "gray", 3: "RGB"}.get(meta["in_channels"], "as trained"),
        "preprocess": preprocess(meta, size) + (
            [] if fmt != "safetensors" else ["subtract mean, divide by std, per channel"]),
        "output": "logits, one a class in the order of classes (softmax: probabilities)",
        "mean": meta["mean"],
        "std": meta["std"],
        **({"run_precision": f"--precision {precision}: `ptrain predict` and eval compute in "
            f"{AUTOCAST[precision]}, this export in float32: outputs differ by that rounding"}
           if precision in AUTOCAST else {}),
    }


def preprocess(meta: dict, size: tuple[int, int]) -> list[str]:
    """How `ptrain predict` turns an image file into the export's input, step by step."""
    mode = "RGB" if meta["in_channels"] == 3 else "grayscale (L)"
    resize = meta.get("resize", catalog.SQUASH)
    fit = {"crop": "its shorter side to the size, centre kept (PIL's ImageOps.fit)",
           "pad": "its longer side to the size, centred on black"}.get(resize, "squashed")
    spec = catalog.SPECS.get(meta["dataset"])
    built_in = spec is not None and tuple(spec.size) != tuple(size)  # a set at --image-size
    h, w = spec.size if built_in else size  # what it is decoded at
    # a large JPEG's reduced-scale decode gives other pixels than a full one (up to 0.04 in a
    # probability, and 2 of 200 top-1 classes, for a deployer who left it out: a hostile trial)
    steps = [f"open it with PIL and call image.draft(None, ({w}, {h})), PIL's (width, "
             f"height) (a JPEG then decodes at 1/2, 1/4 or 1/8 scale where that keeps it at "
             f"least {h}x{w}; other formats ignore it), then convert it to {mode}"]
    if built_in:
        steps += [f"resize it to the dataset's own {h}x{w} ({fit}; PIL, bilinear)",
                  f"resize that to {size[0]}x{size[1]} (torch.nn.functional.interpolate, "
                  "bilinear, align_corners=False, antialias when shrinking), rounded to uint8"]
    else:
        steps.append(f"resize it to {size[0]}x{size[1]} ({fit}; PIL, bilinear), if not that "
                     "size already")
    return steps + ["divide by 255: float32 in [0, 1], (batch, channels, height, width)"]


def as_json(fields: dict, source: str) -> str:
    try:  # strict JSON: a NaN would make it unreadable to most parsers
        return json.dumps(fields, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise PtrainError(f"{source}: its metadata cannot be written as JSON ({e}); "
                          "nothing was written") from None
