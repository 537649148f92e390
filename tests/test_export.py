"""export (verified by each format's own runtime) and predict, on a trained fake-data run."""

import json
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from pytorch_cli.data import batches, catalog, datasets
from pytorch_cli.models import zoo as models
from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.store import checkpoint, export
from pytorch_cli.store.export import FORMATS


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
    if fmt in ("onnx", "pt2", "torchscript"):  # an input of another shape: refused by each
        with pytest.raises(Exception, match=r"ptrain export: the input must be \(N, 1, 28, 28\)"
                           if fmt == "torchscript" else ""):
            _runtime(fmt, artifact)(images[:2, :, :24, :24].contiguous())
    if fmt in ("onnx", "torchscript"):  # uint8 pixels (0-255 where 0-1 belongs), refused: a
        with pytest.raises(Exception, match=r"must be float32 images in \[0, 1\]"  # hostile
                           if fmt == "torchscript" else ""):  # trial's got confident answers
            _runtime(fmt, artifact)((images[:2] * 255).to(torch.uint8))


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1-epoch fake run for the tests below; each works on its own copy (copied())."""
    root = tmp_path_factory.mktemp("trained")
    r = run_cli(["train", "--dataset", "fake", "--epochs", "1", "--quiet"], root)
    assert r.code == 0, r.err
    return root / "runs/fake"


@pytest.fixture
def copied(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "runs/fake")
    return Path("runs/fake")  # relative, as a user types it (the tests run in tmp_path)


def _files(folder):
    """Every file under folder, with its bytes: what a failed export must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("fmt,output", [
    ("safetensors", "runs/fake/model.pth"), ("torchscript", "runs/fake/last.pt"),
    ("torchscript", "runs/fake/best.pt"), ("torchscript", "runs/fake/../fake/last.pt"),
    ("torchscript", "elsewhere/x.pt"),  # its sidecar, a link onto the run's config
    ("torchscript", "runs/other/last.pt"),  # another run's training state
])
def test_export_onto_the_checkpoint_or_a_file_of_a_run_is_refused(ptrain, copied, tmp_path,
                                                                  fmt, output):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/x.pt.json").symlink_to(tmp_path / copied / "config.toml")
    shutil.copytree(tmp_path / copied, tmp_path / "runs/other")
    before = _files(tmp_path)
    r = ptrain("export", copied / "model.pth", "-f", fmt, "-o", output)
    assert r.code == 2 and r.err.count("\n") == 1
    assert r.err.startswith(f"ptrain: error: refusing to write {output}")
    assert _files(tmp_path) == before


def test_export_onto_another_runs_own_export_is_refused_its_own_run_may_renew_it(ptrain, copied,
                                                                               tmp_path):
    shutil.copytree(tmp_path / copied, tmp_path / "runs/other")
    assert ptrain("export", copied, "-f", "safetensors").code == 0
    before = _files(tmp_path / copied)
    r = ptrain("export", "runs/other", "-f", "safetensors", "-o", copied / "model.safetensors")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "it is the export of runs/fake's own checkpoint (its sidecar says so)" in r.err
    assert _files(tmp_path / copied) == before
    assert ptrain("export", copied, "-f", "safetensors").code == 0  # renewed by its own run


def test_an_export_given_as_a_checkpoint_is_named_an_export_with_its_source(ptrain, copied,
                                                                          tmp_path):
    assert ptrain("export", copied, "-f", "torchscript").code == 0
    for given in (copied / "model.torchscript.pt", "m.pt2"):
        shutil.copy(tmp_path / copied / "model.torchscript.pt", tmp_path / "m.pt2")  # no sidecar
        r = ptrain("eval", given)
        assert r.code == 1 and r.err.count("\n") == 1
        assert f"{given}: an export, not a checkpoint; give the checkpoint it was made from (" \
            in r.err
    assert f"({tmp_path / copied / 'model.pth'})" in ptrain(  # absolute: true from anywhere
        "predict", copied / "model.torchscript.pt", "x.png").err
    ends = {FORMATS[f][0] for f in FORMATS if f != "safetensors"}  # (safetensors: weights)
    assert set(checkpoint.EXPORT_ENDINGS) == ends


def test_a_data_dir_named_but_missing_is_an_error_not_random_images(ptrain, copied, tmp_path):
    r = ptrain("export", copied, "-f", "onnx", "--data-dir", tmp_path / "nowhere")
    assert r.code == 2 and r.err.startswith("ptrain: error: --data-dir: the run trained on the")
    assert not (tmp_path / copied / "model.onnx").exists()


def test_export_over_its_source_by_default_is_refused(ptrain, copied, tmp_path):
    shutil.copy(tmp_path / copied / "model.pth", tmp_path / "net.torchscript.pt")
    r = ptrain("export", "net.torchscript.pt", "-f", "torchscript")  # default -o: the same name
    assert r.code == 2 and "refusing to write net.torchscript.pt: it is the checkpoint" in r.err


@pytest.mark.parametrize("output,message", [
    ("", ". is a folder; name the file to write, e.g. model.onnx"),
    ("runs", "runs is a folder; name the file to write, e.g. runs/model.onnx"),
    ("model.txt", "model.txt: an export to onnx is named *.onnx"),
    ("model.onnx.json", "model.onnx.json: an export to onnx is named *.onnx"),
    ("runs/fake/config.toml/m.onnx", "cannot write runs/fake/config.toml/m.onnx: "
                                     "runs/fake/config.toml is a file, not a folder"),
    ("taken.onnx", "taken.onnx.json is a folder, and the export's metadata goes there"),
])
def test_an_output_it_cannot_write_is_one_line_naming_the_users_path(ptrain, copied, tmp_path,
                                                                      output, message):
    (tmp_path / "taken.onnx.json").mkdir()
    before = _files(tmp_path)
    r = ptrain("export", copied, "-f", "onnx", "-o", output)
    assert r.code == 2 and r.err.startswith(f"ptrain: error: {message}")
    assert r.err.count("\n") == 1 and "tmp" not in r.err
    assert _files(tmp_path) == before and (tmp_path / "taken.onnx.json").is_dir()


def test_the_suffix_is_the_formats_in_any_case_and_new_folders_are_made(ptrain, copied, tmp_path):
    assert ptrain("export", copied, "-f", "torchscript", "-o", "a/b/NET.PT").code == 0
    assert ptrain("export", copied, "-f", "torchscript", "-o", "a/b/net.torchscript").code == 0
    assert ptrain("export", copied, "-f", "pt2", "-o", "a/b/net.pt2").code == 0
    assert sorted(os.listdir(tmp_path / "a/b")) == [
        "NET.PT", "NET.PT.json", "net.pt2", "net.pt2.json", "net.torchscript",
        "net.torchscript.json"]
    r = ptrain("export", copied, "-f", "torchscript", "-o", "net.onnx")
    assert r.code == 2 and "an export to torchscript is named *.pt or *.torchscript" in r.err


def test_a_write_that_fails_keeps_the_previous_export_and_its_sidecar(ptrain, copied, tmp_path):
    assert ptrain("export", copied, "-f", "torchscript", "-o", "out/net.pt").code == 0
    before = _files(tmp_path / "out")
    sidecar = json.loads((tmp_path / "out/net.pt.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in the sidecar"))
    assert sidecar["max_abs_diff"] <= 1e-4
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG, no kill
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # the export is ~100 kB
    try:
        r = ptrain("export", copied, "-f", "torchscript", "-o", "out/net.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old)
    assert r.code == 1
    assert r.err.startswith("ptrain: error: cannot write out/net.pt: File too large;")
    assert "nothing was written" in r.err and "tmp" not in r.err
    assert _files(tmp_path / "out") == before  # the old pair, whole; no temporary file


def test_a_failed_sidecar_rename_puts_the_previous_export_back(tmp_path):
    (tmp_path / "net.pt").write_bytes(b"previous export")
    (tmp_path / "net.pt.json").mkdir()  # (export() refuses this before any work: check_output)
    with pytest.raises(PtrainError, match=r"cannot write .*net\.pt\.json: Is a directory; nothing"):
        export.write_pair(tmp_path / "net.pt", b"new export", "{}")
    assert (tmp_path / "net.pt").read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["net.pt", "net.pt.json"]
    (tmp_path / "net.pt").unlink()
    with pytest.raises(PtrainError, match="Is a directory"):
        export.write_pair(tmp_path / "net.pt", b"new export", "{}")
    assert sorted(os.listdir(tmp_path)) == ["net.pt.json"]  # none, not one without its sidecar


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named_not_a_temporary_file(ptrain, copied, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    r = ptrain("export", copied, "-f", "torchscript", "-o", "ro/net.pt")
    assert r.code == 1 and r.err.startswith("ptrain: error: cannot write ro/net.pt: Permission")
    assert os.listdir(tmp_path / "ro") == []


def _damaged(source, target, change):
    saved = torch.load(source, weights_only=True)
    change(saved)
    torch.save(saved, target)


def _nan_weight(saved):
    next(iter(saved["state_dict"].values())).fill_(float("nan"))


def test_a_model_with_nan_weights_or_a_zero_std_is_refused(ptrain, copied, tmp_path):
    _damaged(copied / "model.pth", "nan.pth", _nan_weight)
    _damaged(copied / "model.pth", "std0.pth", lambda saved: saved["meta"].update(std=[0.0]))
    for name, why in (("nan.pth", "not finite"), ("std0.pth", "std")):
        for fmt, suffix in (("safetensors", ".safetensors"), ("torchscript", ".pt")):
            r = ptrain("export", name, "-f", fmt, "-o", f"out/{name}{suffix}")
            assert r.code == 1 and r.err.startswith(f"ptrain: error: {name}: "), r.err
            assert why in r.err and r.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_export_itself_refuses_outputs_that_are_not_finite(tmp_path):
    """export() on its own, and the loader's check of the normalisation it is given."""
    meta = models.describe("lenet", catalog.SPECS["fake"], [])
    net = models.build("lenet", 1, 10, 28).eval()
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    sample = torch.rand(8, 1, 28, 28)
    with pytest.raises(PtrainError, match=r"src\.pth: the model's weights are not finite"):
        export.export(net, batches.Normalize([0.5], [0.5]), meta, sample, "torchscript",
                      tmp_path / "x.pt", "src.pth")
    good = models.build("lenet", 1, 10, 28).eval()
    with pytest.raises(PtrainError, match="outputs on the verification batch are not finite"):
        export.export(good, batches.Normalize([0.5], [0.0]), meta, sample, "torchscript",
                      tmp_path / "x.pt", "src.pth")
    for std in ([0.0], [-1.0], [float("nan")], [float("inf")], [], [0.5, 0.5], ["x"], None):
        with pytest.raises(PtrainError, match=r"src\.pth: its meta 'std' is "):
            models.check_meta({**meta, "std": std}, Path("src.pth"))
    assert os.listdir(tmp_path) == []
