"""The nets of the zoo (zoo.py names them): each takes (in_channels, num_classes, image_size) and
returns logits; image_size is (height, width), or N for a square. Imported only when a model is
built: torch is heavy to import."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _sides(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width); an int is a square."""
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


class LeNet(nn.Module):
    """The net of the classic argparse MNIST example these flags come from (as in the
    Grokking-PyTorch notes): conv10 -> pool -> relu, conv20 -> Dropout2d -> pool -> relu,
    fc50 -> relu, fc. No dropout after fc1. Its parameter names, so that script's weights load."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        h, w = (((side - 4) // 2 - 4) // 2 for side in _sides(image_size))
        self.fc1 = nn.Linear(20 * h * w, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class MnistCNN(nn.Module):
    """pytorch/examples mnist/main.py `Net` (same parameter names, so its state_dict loads)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        h, w = ((side - 4) // 2 for side in _sides(image_size))
        self.fc1 = nn.Linear(64 * h * w, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout1(x).flatten(1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)  # the example's log_softmax lives in our cross-entropy loss


class CifarNet(nn.Module):
    """The net of PyTorch's "Training a classifier" CIFAR-10 tutorial."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = (((side - 4) // 2 - 4) // 2 for side in _sides(image_size))
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class FastCNN(nn.Module):
    """A small BatchNorm net for the speed presets (configs/*-fast.toml): three conv3x3-BN-ReLU-
    maxpool blocks (32, 64, 128 channels), a global max-pool and one linear layer. BatchNorm is
    what lets a large batch and a high learning rate reach 99% on MNIST within an epoch or two;
    8M multiply-adds per image, a third fewer than mnist-cnn."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int]):
        super().__init__()
        layers, width = [], in_channels
        for out in (32, 64, 128):
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.amax(self.features(x), dim=(2, 3)))


def _airbench_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[:cin])  # the first cin filters start as the identity
    return conv


def _airbench_bn(width: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(width, eps=1e-12, momentum=0.4)  # running stats follow fast
    bn.weight.requires_grad_(False)  # scale frozen at 1: only the shift learns
    return bn


class Airbench(nn.Module):
    """The CIFAR-10 speedrun net described in the airbench paper (arXiv 2404.00498), our own
    code: a frozen 2x2 patch-whitening conv (+ trainable bias) set from the training images by
    `whiten_from`, GELU, three groups conv-pool-BN-GELU-conv-BN-GELU (64/256/256, no conv
    biases, BN scales frozen), a global max-pool and a bias-free linear head scaled by 1/9."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int | tuple[int, int],
                 widths: tuple[int, int, int] = (64, 256, 256)):
        super().__init__()
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * 4, 2)
        self.whiten.weight.requires_grad_(False)
        groups, width = [], self.whiten.out_channels
        for out in widths:
            groups.append(
                nn.Sequential(
                    _airbench_conv(width, out),
                    nn.MaxPool2d(2),
                    _airbench_bn(out),
                    nn.GELU(),
                    _airbench_conv(out, out),
                    _airbench_bn(out),
                    nn.GELU(),
                )
            )
            width = out
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(width, num_classes, bias=False)

    def forward(self, x):
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(torch.amax(x, dim=(2, 3))) / 9


@torch.no_grad()
def whiten_from(model: Airbench, images: torch.Tensor, eps: float = 5e-4, chunk: int = 500) -> None:
    """Set the whitening filters from normalised training images: the eigenvectors of the 2x2
    patch covariance scaled by 1/sqrt(eigenvalue + eps), each with its negative (so GELU keeps
    both signs). Float64 on the CPU, so every device gets the same filters."""
    weight = model.whiten.weight
    c, k = weight.shape[1], weight.shape[2]
    cov, count = torch.zeros(c * k * k, c * k * k, dtype=torch.float64), 0
    for part in images.split(chunk):  # in chunks: all patches at once would take GBs
        patches = part.double().cpu().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov += flat.T @ flat
        count += len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov / count)  # ascending
    filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).flip(0).reshape(-1, c, k, k)
    weight.copy_(torch.cat([filters, -filters]).to(weight))


def resnet18(in_channels: int, num_classes: int, image_size: int | tuple[int, int]) -> nn.Module:
    """torchvision's ResNet-18 with the usual small-image stem: 3x3 stride-1 conv, no max-pool."""
    import torchvision  # here: it imports torch._dynamo (seconds), which the other nets never need
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
