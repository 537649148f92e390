"""eval and resume on real files, and checkpoint safety with real SIGKILLs."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import MNIST_DIR, read_metrics, write_cifar100_python, write_mnist
from test_train import without_timing

FAST = ["--dataset", "fake", "--epochs", "2", "--log-interval", "10"]
PY = [sys.executable, "-m", "pytorch_cli"]


def test_eval_prints_the_accuracy_train_printed(ptrain, tmp_path):
    r = ptrain("train", *FAST)
    trained = re.search(r"epoch 2/2 .*test acc (\S+ \(\d+/\d+\))", r.out).group(1)
    for name in ("model.pth", "last.pt", "best.pt"):
        e = ptrain("eval", f"runs/fake/{name}")
        assert e.code == 0, e.err
        assert f"acc {trained}" in e.out
    e = ptrain("eval", "runs/fake/model.pth", "--json").json()
    assert sum(map(sum, e["confusion"])) == e["total"] == 500
    assert e["acc"] == read_metrics(tmp_path / "runs/fake")[-1]["test_acc"]
    assert set(e["per_class_acc"]) == {str(i) for i in range(10)} and "top5_acc" not in e


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, verbatim in structure."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def test_eval_bare_state_dict_from_the_examples_script(ptrain, tmp_path, mnist_dir):
    torch.manual_seed(0)
    net = ExamplesNet().eval()
    torch.save(net.state_dict(), tmp_path / "mnist_cnn.pt")
    r = ptrain("eval", "mnist_cnn.pt", "--model", "mnist-cnn", "--dataset", "mnist",
               "--data-dir", mnist_dir, "--json")
    assert r.code == 0, r.err
    # same predictions as the original module on the same normalised images
    from pytorch_cli import data
    from pytorch_cli.config import TrainConfig
    d = data.load(TrainConfig(dataset="mnist", data_dir=str(mnist_dir)))
    with torch.no_grad():
        pred = net(data.normalize(d.test.images, d.spec)).argmax(1)
    assert r.json()["correct"] == int((pred == d.test.labels).sum())
    r = ptrain("eval", "mnist_cnn.pt", "--data-dir", mnist_dir)
    assert r.code == 2 and "bare state_dict" in r.err and "--model" in r.err
    r = ptrain("eval", "mnist_cnn.pt", "--model", "lenet", "--dataset", "mnist", "--data-dir", mnist_dir)
    assert r.code == 1 and "do not fit a lenet" in r.err and r.err.count("\n") == 1


def test_eval_top5_splits_and_tta(ptrain, tmp_path):
    write_cifar100_python(tmp_path / "c100")
    assert ptrain("train", "--dataset", "cifar100", "--data-dir", tmp_path / "c100", "--model",
                  "cifar-net", "--epochs", "1", "--val-split", "0.2", "--quiet").code == 0
    r = ptrain("eval", "runs/cifar100/model.pth", "--json").json()
    assert 0 <= r["acc"] <= r["top5_acc"] <= 1 and len(r["per_class_acc"]) == 100
    assert r["classes"][99] == "class99"
    assert ptrain("eval", "runs/cifar100/model.pth", "--split", "val", "--json").json()["total"] == 60
    assert ptrain("eval", "runs/cifar100/model.pth", "--split", "train", "--json").json()["total"] == 240
    tta = ptrain("eval", "runs/cifar100/model.pth", "--tta", "--json").json()
    assert tta["tta"] and tta["total"] == 100 and tta["loss"] != r["loss"]
    assert ptrain("train", *FAST, "--epochs", "1", "--name", "noval", "--quiet").code == 0
    bad = ptrain("eval", "runs/noval/model.pth", "--split", "val")
    assert bad.code == 2 and "no validation set" in bad.err


def test_corrupt_and_missing_checkpoints_are_one_line(ptrain, tmp_path):
    assert ptrain("train", *FAST, "--epochs", "1", "--quiet").code == 0
    good = (tmp_path / "runs/fake/model.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pth").write_text("hello")
    for name in ("trunc.pth", "junk.pth", "absent.pth"):
        r = ptrain("eval", name)
        assert r.code == 1 and name in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_and_its_code_never_runs(ptrain, tmp_path):
    torch.save({"format": "ptrain-model", "state_dict": {}, "meta": Exploit()}, tmp_path / "evil.pth")
    for cmd in (("eval", "evil.pth"), ("resume", "evil.pth")):
        r = ptrain(*cmd)
        assert r.code == 1 and "refused to load" in r.err and "posix.system" in r.err
    assert not (tmp_path / "pwned").exists()


def test_resume_refusals(ptrain, tmp_path):
    assert ptrain("train", *FAST, "--epochs", "1", "--quiet").code == 0
    r = ptrain("resume", "runs/fake")
    assert r.code == 2 and "already finished its 1 epochs" in r.err
    r = ptrain("resume", "runs/fake", "--epochs", "3", "--model", "resnet18")
    assert r.code == 2 and "--model cannot change it" in r.err
    r = ptrain("resume", "runs/fake/model.pth")
    assert r.code == 2 and "not a training-state checkpoint" in r.err
    assert ptrain("resume", "runs/fake", "--epochs", "2", "--quiet").code == 0
    epochs = [m["epoch"] for m in read_metrics(tmp_path / "runs/fake") if m["kind"] == "epoch"]
    assert epochs == [1, 2]


def _wait_for_mid_epoch_checkpoint(proc, path: Path, min_epoch: int, min_batch: int) -> dict:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            pos = torch.load(path, weights_only=True)["position"]
            if pos["epoch"] >= min_epoch and pos["batch"] >= min_batch:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return pos
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    raise AssertionError("the run ended before a mid-epoch checkpoint could be interrupted")


def test_resume_after_sigkill_mid_epoch_is_exact(tmp_path):
    args = [*PY, "train", "--dataset", "fake", "--model", "mnist-cnn", "--epochs", "2",
            "--batch-size", "16", "--save-interval", "5", "--log-interval", "5", "--deterministic",
            "--quiet"]
    subprocess.run([*args, "--run-dir", "full"], cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.Popen([*args, "--run-dir", "cut"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pos = _wait_for_mid_epoch_checkpoint(proc, tmp_path / "cut/last.pt", 1, 5)
    assert 0 < pos["batch"] < 125 and not (tmp_path / "cut/model.pth").exists()
    out = subprocess.run([*PY, "resume", "cut", "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"resuming at epoch 2 after batch {pos['batch']}" not in out.stdout  # quiet: no start line
    full, cut = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    for key, tensor in full["model"].items():
        assert torch.equal(tensor, cut["model"][key]), key
    for pid, state in full["optimizer"]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, cut["optimizer"]["state"][pid][key]), (pid, key)
    assert full["position"]["step"] == cut["position"]["step"] == 250
    epochs = lambda d: [m for m in without_timing(read_metrics(tmp_path / d)) if m["kind"] == "epoch"]
    assert epochs("full") == epochs("cut") and len(epochs("cut")) == 2


WRITER = """
import sys, torch
from pathlib import Path
from pytorch_cli.checkpoint import atomic_save
i = 0
while True:
    i += 1
    atomic_save({"i": i, "w": torch.full((1_000_000,), float(i))}, Path(sys.argv[1]))
"""


def test_sigkill_during_checkpoint_writes_never_loses_the_previous_one(tmp_path):
    from pytorch_cli import checkpoint
    target = tmp_path / "last.pt"
    rng = random.Random(0)
    seen = set()
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        start = target.stat().st_mtime if target.exists() else 0
        while not target.exists() or target.stat().st_mtime == start:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = checkpoint.load(target)  # always a whole, loadable file
        assert torch.equal(saved["w"], torch.full((1_000_000,), float(saved["i"])))
        seen.add(saved["i"])
    assert len(seen) > 1


def test_saved_state_dicts_drop_ddp_and_compile_prefixes():
    from pytorch_cli import checkpoint, models
    net = models.build("lenet", 1, 10, 28)
    wrapped = torch.compile(nn.DataParallel(net))  # lazy: nothing compiles until called
    assert next(iter(wrapped.state_dict())).startswith("_orig_mod.module.")
    clean = checkpoint.clean_state_dict(wrapped.state_dict())
    assert list(clean) == list(net.state_dict())
    models.build("lenet", 1, 10, 28).load_state_dict(clean)


@pytest.mark.skipif(not MNIST_DIR, reason="PTRAIN_TEST_MNIST_DIR is unset (.ci/run sets it to ../shared/data/mnist)")
def test_real_mnist_train_eval_export_agree(ptrain, tmp_path):
    """Train 1 epoch on real MNIST; eval and the onnx/pt2 exports score what train printed."""
    r = ptrain("train", "--data-dir", MNIST_DIR, "--epochs", "1", "--log-interval", "200")
    assert r.code == 0, r.err
    trained = re.search(r"epoch 1/1 .*test acc (\S+ \(\d+/10000\))", r.out).group(1)
    e = ptrain("eval", "runs/mnist/model.pth")
    assert f"acc {trained}" in e.out
    from pytorch_cli import data
    from pytorch_cli.config import TrainConfig
    d = data.load(TrainConfig(dataset="mnist", data_dir=MNIST_DIR))
    images = d.test.images.float() / 255
    correct = int(trained.split("(")[1].split("/")[0])
    import onnxruntime as ort
    for fmt in ("onnx", "pt2"):
        x = ptrain("export", "runs/mnist/model.pth", "--format", fmt, "--json")
        assert x.code == 0, x.err
        path = x.json()["output"]
        if fmt == "onnx":
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            logits = torch.from_numpy(s.run(None, {"images": images.numpy()})[0])
        else:
            with torch.inference_mode():
                logits = torch.export.load(path).module()(images)
        assert int((logits.argmax(1) == d.test.labels).sum()) == correct, fmt
