"""The datasets ptrain knows: name -> Spec (shape, classes, normalisation, what --augment auto
means). Torch-free: its names are the --dataset choices --help and completion list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # what --augment auto means for this dataset
    tv_class: str = ""  # torchvision.datasets class that downloads it


SPECS = {
    "mnist": Spec("mnist", 1, 28, 10, (0.1307,), (0.3081,), "none", "MNIST"),
    "fashion-mnist": Spec("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), "none", "FashionMNIST"),
    "cifar10": Spec("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    "crop-flip", "CIFAR10"),
    "cifar100": Spec("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                     "crop-flip", "CIFAR100"),
    "fake": Spec("fake", 1, 28, 10, (0.5,), (0.25,), "none"),
}

# The user's own images (--dataset folder, folders.py): its Spec is made from them at setup.
FOLDER = "folder"
MAX_IMAGE_SIZE = 1024  # a folder's images are decoded at the run's size into memory: 3 MiB each
DATASETS = (*SPECS, FOLDER)  # the --dataset choices


def folder_spec(channels: int, size: int, num_classes: int, mean, std) -> Spec:
    """A folder's Spec; --augment auto is crop-flip for colour images, none for gray ones (as
    for CIFAR and the MNIST family: a flipped digit is another digit)."""
    return Spec(FOLDER, channels, size, num_classes, tuple(mean), tuple(std),
                "crop-flip" if channels == 3 else "none")
