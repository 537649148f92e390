"""The datasets ptrain knows: name -> Spec (shape, classes, normalisation, what --augment auto
means). Torch-free: its names are the --dataset choices --help and completion list."""

from __future__ import annotations

from dataclasses import dataclass

Size = tuple[int, int]  # (height, width) of the images, in pixels


@dataclass(frozen=True)
class Spec:
    name: str
    channels: int
    size: Size
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # what --augment auto means for this dataset
    tv_class: str = ""  # torchvision.datasets class that downloads it


SPECS = {
    "mnist": Spec("mnist", 1, (28, 28), 10, (0.1307,), (0.3081,), "none", "MNIST"),
    "fashion-mnist": Spec("fashion-mnist", 1, (28, 28), 10, (0.2860,), (0.3530,), "none",
                          "FashionMNIST"),
    "cifar10": Spec("cifar10", 3, (32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    "crop-flip", "CIFAR10"),
    "cifar100": Spec("cifar100", 3, (32, 32), 100, (0.5071, 0.4865, 0.4409),
                     (0.2673, 0.2564, 0.2762), "crop-flip", "CIFAR100"),
    "fake": Spec("fake", 1, (28, 28), 10, (0.5,), (0.25,), "none"),
}

# The user's own images (--dataset folder, folders.py): its Spec is made from them at setup.
FOLDER = "folder"
MAX_IMAGE_SIZE = 1024  # a folder's images are decoded at the run's size into memory: 3 MiB each
DATASETS = (*SPECS, FOLDER)  # the --dataset choices
# --resize: how a folder's image of another shape meets the run's size (fastai's ResizeMethod)
SQUASH = "squash"  # the default: stretched to the size, what ptrain always did
RESIZE_MODES = (SQUASH, "crop", "pad")


def parse_size(value: int | str | list | tuple) -> Size | None:
    """--image-size N, "N", "HxW" (or a saved [H, W]) as (height, width); None for 0 or "" (the
    images' own size) and for anything else, which the setting's rule then refuses."""
    if isinstance(value, (list, tuple)):
        value = "x".join(map(str, value)) if len(value) == 2 else "?"
    text = str(value).strip().lower()
    parts = text.split("x") if "x" in text else [text, text]
    if text in ("", "0") or len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def size_ok(value) -> bool:
    """The rule of --image-size: 0 (auto), or each side from 4 to MAX_IMAGE_SIZE."""
    size = parse_size(value)
    return str(value).strip() in ("", "0") if size is None else all(
        4 <= side <= MAX_IMAGE_SIZE for side in size)


def size_text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"  # height x width, as --image-size takes it


def saved_size(size: Size) -> int | list[int]:
    """How a model's meta records its size: an int for a square (what ptrain always wrote, so
    older versions read it), [height, width] otherwise."""
    return size[0] if size[0] == size[1] else [size[0], size[1]]


def folder_spec(channels: int, size: Size, num_classes: int, mean, std) -> Spec:
    """A folder's Spec; --augment auto is crop-flip for colour images, none for gray ones (as
    for CIFAR and the MNIST family: a flipped digit is another digit)."""
    return Spec(FOLDER, channels, size, num_classes, tuple(mean), tuple(std),
                "crop-flip" if channels == 3 else "none")


def tta_views_of(augment: str, spec: Spec) -> str:
    """The test-time views of a run trained with --augment `augment` ("auto": `spec`'s own):
    "flip" (mirrored and shifted) only when it trained with flips, else "shift"."""
    kind = spec.augment if augment == "auto" else augment
    return "flip" if "flip" in augment_uses(kind) else "shift"


def augment_uses(kind: str) -> tuple[str, ...]:
    """The crop and flip settings an --augment kind (not auto) uses: none crops nothing, crop
    does not flip, crop-flip and the policies after it do both, resized-crop has its own
    (augment.Augment)."""
    if kind == "resized-crop":
        return ("crop_scale", "flip")
    return () if kind == "none" else ("crop_pad", "pad_mode") if kind == "crop" else (
        "crop_pad", "pad_mode", "flip")
