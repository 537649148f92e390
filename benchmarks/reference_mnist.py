"""The classic argparse MNIST loop (DataLoader + transforms, the Grokking-PyTorch
conv10-conv20-fc50 net), kept as the yardstick for `ptrain train`'s accuracy and speed.

    python benchmarks/reference_mnist.py --data-dir ../shared/data/mnist --epochs 1
    python benchmarks/reference_mnist.py --dataset fashion-mnist \
        --data-dir /usr/share/datasets/fashion-mnist
"""

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True, help="folder with the four MNIST .gz files")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as root:
        cls, mean, std = {"mnist": (datasets.MNIST, 0.1307, 0.3081),
                          "fashion-mnist": (datasets.FashionMNIST, 0.2860, 0.3530)}[args.dataset]
        raw = Path(root, cls.__name__, "raw")
        raw.mkdir(parents=True)
        for gz in Path(args.data_dir).glob("*.gz"):
            with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
        train = torch.utils.data.DataLoader(cls(root, train=True, transform=tf),
                                            batch_size=64, shuffle=True)
        test = torch.utils.data.DataLoader(cls(root, train=False, transform=tf),
                                           batch_size=1000)
        model = Net()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            for data, target in train:
                opt.zero_grad()
                F.nll_loss(model(data), target).backward()
                opt.step()
            train_s = time.perf_counter() - t0
            model.eval()
            correct = 0
            with torch.no_grad():
                for data, target in test:
                    correct += (model(data).argmax(1) == target).sum().item()
            print(f"epoch {epoch} test acc {correct / 100:.2f}% "
                  f"train {len(train.dataset) / train_s:.0f} img/s")


if __name__ == "__main__":
    main()
