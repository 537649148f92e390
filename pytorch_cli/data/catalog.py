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
