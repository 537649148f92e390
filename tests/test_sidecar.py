"""What an export says about itself (store/sidecar.py): the sidecar beside the file, the same
description embedded in each format's own metadata, and a safetensors export loaded by it."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo as models
from pytorch_cli.platform.errors import DamagedFile
from pytorch_cli.store import sidecar
from pytorch_cli.store.export import EMBEDDED, FORMATS

VERIFICATION = ("max_abs_diff", "verified_batch", "verified_on")  # known once it is verified


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """A fake-data run at --image-size 32 (the set's own size is 28), exported in each format."""
    root = tmp_path_factory.mktemp("sized")
    r = run_cli(["train", "--dataset", "fake", "--epochs", "1", "--max-steps", "20",
                 "--image-size", "32", "--quiet"], root)
    assert r.code == 0, r.err
    for fmt in FORMATS:
        assert run_cli(["export", "runs/fake", "-f", fmt], root).code == 0
    return root / "runs/fake"


def _embedded(path: Path) -> dict:
    """The description inside the file, read as a deployer's code reads its format."""
    if path.suffix == ".onnx":
        import onnx
        return json.loads({p.key: p.value for p in onnx.load(path).metadata_props}[EMBEDDED])
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            return json.loads(f.metadata()[EMBEDDED])
    extra = {EMBEDDED: ""}
    if path.suffix == ".pt2":
        torch.export.load(path, extra_files=extra)
    else:
        with warnings.catch_warnings():  # torch.jit is deprecated upstream
            warnings.simplefilter("ignore")
            torch.jit.load(path, _extra_files=extra)
    return json.loads(extra[EMBEDDED])


def test_each_format_carries_its_sidecars_description_inside(sized):
    """A copy or rename that leaves the sidecar behind still says what the model is."""
    for fmt, (suffix, _) in FORMATS.items():
        side = sidecar.read(sized / f"model{suffix}")
        assert side["format"] == fmt and side["verified_on"] == "64 test images"
        assert _embedded(sized / f"model{suffix}") == {
            k: v for k, v in side.items() if k not in VERIFICATION}


def test_a_built_in_set_at_another_size_says_how_predict_reaches_it(sized):
    """predict brings an image to the set's own 28x28, then to the run's 32x32: a deployer who
    resized straight to the input shape was up to 0.19 off in probability (a hostile trial)."""
    side = sidecar.read(sized / "model.onnx")
    assert side["input_shape"] == ["batch", 1, 32, 32] and side["channel_order"] == "gray"
    assert side["preprocess"] == [
        "open it with PIL and call image.draft(None, (28, 28)), PIL's (width, height) (a JPEG "
        "then decodes at 1/2, 1/4 or 1/8 scale where that keeps it at least 28x28; other "
        "formats ignore it), then convert it to grayscale (L)",
        "resize it to the dataset's own 28x28 (squashed; PIL, bilinear)",
        "resize that to 32x32 (torch.nn.functional.interpolate, bilinear, align_corners=False, "
        "antialias when shrinking), rounded to uint8",
        "divide by 255: float32 in [0, 1], (batch, channels, height, width)"]
    assert side["source_checkpoint"] == str(sized / "model.pth")  # absolute: from anywhere
    assert side["output"].startswith("logits")
    assert side["run_precision"].startswith("--precision auto: `ptrain predict` and eval compute "
                                            "in bfloat16 on a CUDA GPU that has it")
    safetensors = sidecar.read(sized / "model.safetensors")
    assert safetensors["preprocess"][-1] == "subtract mean, divide by std, per channel"


def test_a_safetensors_export_is_evaluated_at_its_runs_size_and_normalisation(sized):
    """Given --model and --dataset, a 40 px MNIST run's safetensors was evaluated at 28 px:
    69% for its 95% (a hostile trial). Its sidecar says the size; no flag is needed."""
    run = run_cli(["eval", str(sized), "--json"], sized)
    weights = run_cli(["eval", str(sized / "model.safetensors"), "--json"], sized)
    assert weights.code == 0, weights.err
    assert (weights.json()["acc"], weights.json()["loss"]) == (run.json()["acc"],
                                                               run.json()["loss"])
    wrong = run_cli(["eval", str(sized / "model.safetensors"), "--dataset", "mnist"], sized)
    assert wrong.code == 2 and "--dataset mnist does not match" in wrong.err


def test_a_torchscript_export_named_like_a_checkpoint_is_called_an_export(sized, tmp_path):
    shutil.copy(sized / "model.torchscript.pt", tmp_path / "digits.pt")  # no sidecar
    r = run_cli(["eval", "digits.pt"], tmp_path)
    assert (r.code, r.err) == (1, "ptrain: error: digits.pt: an export, not a checkpoint; give "
                               "the checkpoint it was made from (the run directory, or its "
                               "model.pth)\n")  # no torch.load warning before it


def test_a_damaged_sidecar_is_one_line_and_a_folder_runs_describes_it():
    meta = models.describe("lenet", catalog.SPECS["fake"], [str(i) for i in range(10)])
    side = sidecar.describe({**meta, "precision": "bf16"}, "safetensors", Path("m.safetensors"),
                            "m.pth")
    assert side["run_precision"].startswith("--precision bf16: `ptrain predict` and eval")
    assert sidecar.described(side, Path("m.safetensors"))[0] == {**meta, "image_size": [28, 28]}
    with pytest.raises(DamagedFile, match=r"^m\.safetensors\.json: it does not say the export's "
                       r"'mean'"):
        sidecar.described({k: v for k, v in side.items() if k != "mean"}, Path("m.safetensors"))
    with pytest.raises(DamagedFile, match=r"its meta 'std' is \[0\]"):
        sidecar.described({**side, "std": [0]}, Path("m.safetensors"))
    # a folder run's describes it as well (eval's refusal is saved._data's: test_predicting)
    assert sidecar.described({**side, "dataset": "folder"}, Path("m.safetensors"))[0][
        "dataset"] == "folder"


def test_a_deployer_following_the_steps_gets_predicts_pixels_for_a_large_jpeg(tmp_path):
    """predict decodes a large JPEG at reduced scale (PIL's draft): a deployer who followed
    steps without it fed other pixels, 2 of 200 top-1 classes differing (a hostile trial)."""
    from PIL import Image

    from pytorch_cli.data.images import read_image
    g = torch.Generator().manual_seed(0)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), (384, 512),
                                            mode="bicubic").clamp(0, 1)[0]
    Image.fromarray((photo * 255).byte().permute(1, 2, 0).numpy()).save(tmp_path / "p.jpg",
                                                                        quality=90)
    steps = sidecar.preprocess({"in_channels": 3, "dataset": catalog.FOLDER}, (24, 40))
    assert "image.draft(None, (40, 24))" in steps[0] and "at least 24x40" in steps[0]
    assert steps[1] == "resize it to 24x40 (squashed; PIL, bilinear), if not that size already"
    with Image.open(tmp_path / "p.jpg") as img:  # the steps, as a deployer reads them
        img.draft(None, (40, 24))
        followed = img.convert("RGB").resize((40, 24), Image.BILINEAR)
    with Image.open(tmp_path / "p.jpg") as img:
        full = img.convert("RGB").resize((40, 24), Image.BILINEAR)
    predicts = read_image(tmp_path / "p.jpg", 3, (24, 40)).permute(1, 2, 0).numpy()
    assert (predicts == followed).all() and (predicts != full).any()


def test_an_export_of_a_moved_run_points_at_the_model_pth_beside_it(sized, tmp_path):
    """The sidecar's source_checkpoint is absolute: after `mv runs/a runs/b` the line named
    the old path, not there any more (a hostile trial); the model.pth beside it is the one."""
    shutil.copytree(sized, tmp_path / "renamed")
    side = tmp_path / "renamed/model.onnx.json"
    fields = json.loads(side.read_text())
    side.write_text(json.dumps({**fields, "source_checkpoint": str(tmp_path / "gone/model.pth")}))
    r = run_cli(["eval", "renamed/model.onnx"], tmp_path)
    assert (r.code, r.err) == (1, "ptrain: error: renamed/model.onnx: an export, not a "
                               "checkpoint; give the checkpoint it was made from (renamed/"
                               "model.pth)\n")
