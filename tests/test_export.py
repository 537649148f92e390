"""export (verified by each format's own runtime) and predict, on a trained fake-data run."""

import json
import os
import shutil

import pytest
import torch

from pytorch_cli.data import datasets
from pytorch_cli.models import zoo as models


@pytest.fixture
def run(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--quiet").code == 0
    return tmp_path / "runs" / "fake"


def _test_set():
    d = datasets.load("fake")
    return d.test.images.float() / 255, d.test.labels


def _runtime(fmt, path):
    """Load an artifact the way a user of that format would, without ptrain."""
    if fmt == "onnx":
        import onnxruntime as ort
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])
    if fmt == "pt2":
        return torch.export.load(str(path)).module()
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    from safetensors.torch import load_file
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    net = models.build(meta["model"], 1, 10, 28)
    net.load_state_dict(load_file(str(path)))
    net.eval()
    mean, std = (
        torch.tensor(meta["mean"]).view(1, -1, 1, 1),
        torch.tensor(meta["std"]).view(1, -1, 1, 1),
    )
    return lambda x: net((x - mean) / std)


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("pt2", ".pt2"),
                                        ("torchscript", ".torchscript.pt"),
                                        ("safetensors", ".safetensors")])
def test_export_is_verified_and_scores_like_the_model(ptrain, run, fmt, suffix):
    r = ptrain("export", run / "model.pth", "--format", fmt, "--json")
    assert r.code == 0, r.err
    result = r.json()
    artifact = run / f"model{suffix}"
    assert result["output"] == str(artifact) and result["max_abs_diff"] <= 1e-4
    assert result["verified_on"] == "64 test images"
    sidecar = json.loads((run / f"model{suffix}.json").read_text())
    assert sidecar["classes"] == [str(i) for i in range(10)] and sidecar["mean"] == [0.5]
    assert sidecar["input_shape"] == ["batch", 1, 28, 28] and sidecar["source_checkpoint"] == str(
        run / "model.pth"
    )
    images, labels = _test_set()
    with torch.inference_mode():
        logits = _runtime(fmt, artifact)(
            images
        )  # 500 images: not the batch size it was traced with
    acc = int((logits.argmax(1) == labels).sum()) / len(labels)
    trained = torch.load(run / "model.pth", weights_only=True)["metrics"]["test_acc"]
    assert acc == pytest.approx(trained, abs=1e-9)


def test_export_output_flag_and_bad_format(ptrain, run, tmp_path):
    r = ptrain("export", run / "last.pt", "--format", "pt2", "--output", tmp_path / "out/net.pt2")
    assert r.code == 0 and (tmp_path / "out/net.pt2").exists() and "max abs difference" in r.out
    r = ptrain("export", run / "model.pth", "--format", "tflite")
    assert (
        r.code == 2
        and "'tflite' is not one of 'onnx', 'pt2', 'torchscript', 'safetensors'" in r.err
    )


def test_failed_verification_fails_the_export_and_writes_nothing(ptrain, run, monkeypatch):
    from pytorch_cli.store import export
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference, even 0, now fails
    r = ptrain("export", run / "model.pth", "--format", "torchscript")
    assert r.code == 1 and "failed verification" in r.err
    assert not list(run.glob("*torchscript*")) and not list(run.glob(".*.ptrain-tmp"))


def test_onnx_without_optional_packages_names_the_extra(ptrain, run, without):
    without("onnxruntime")
    out = ptrain("export", run / "model.pth", "--format", "onnx")
    assert out.code == 1
    assert "pip install 'pytorch-cli[onnx]'" in out.err and out.err.count("\n") == 1


def test_onnx_is_one_self_contained_file_that_runs_anywhere(ptrain, run, tmp_path):
    before = set(os.listdir(run))
    r = ptrain("export", run, "--format", "onnx")  # a run directory: its model.pth
    assert r.code == 0, r.err
    # no weights file, no orphan
    assert set(os.listdir(run)) - before == {"model.onnx", "model.onnx.json"}
    elsewhere = tmp_path / "shipped"
    elsewhere.mkdir()
    shutil.copy(run / "model.onnx", elsewhere / "digits.onnx")
    images, labels = _test_set()
    logits = _runtime("onnx", elsewhere / "digits.onnx")(images)
    trained = torch.load(run / "model.pth", weights_only=True)["metrics"]["test_acc"]
    assert int((logits.argmax(1) == labels).sum()) / len(labels) == pytest.approx(trained, abs=1e-9)
