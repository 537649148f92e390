"""--weights and --init-from: where the starting weights come from, with their mean and std, and
a fine-tune from them that evaluates, exports and predicts as it trained."""

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from pytorch_cli.models import zoo
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.training import pretrained

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RESNET18_FILE = "resnet18-f37072fd.pth"  # ResNet18_Weights.IMAGENET1K_V1's file name


def _cached_resnet18() -> dict:
    """What torchvision would have downloaded: a resnet18 state dict in $TORCH_HOME (seeded
    random weights: none can be downloaded here)."""
    torch.manual_seed(0)
    state = zoo.build("torchvision:resnet18", 3, 1000, 224).state_dict()
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / RESNET18_FILE)
    return state


def test_default_weights_come_from_torchs_cache_with_their_normalisation():
    state = _cached_resnet18()
    for given in ("DEFAULT", "ResNet18_Weights.DEFAULT", "IMAGENET1K_V1",
                  "ResNet18_Weights.IMAGENET1K_V1"):
        source = pretrained.resolve(TrainConfig(model="torchvision:resnet18", weights=given))
        assert (source.mean, source.std) == IMAGENET
        assert source.label.startswith("ResNet18_Weights.IMAGENET1K_V1 (")
        assert all(torch.equal(source.state[k], state[k]) for k in state)
    half = pretrained._normalisation("googlenet", None)  # its weights' transform_input
    assert half == ((0.5,) * 3, (0.5,) * 3)


def test_offline_one_line_names_the_file_and_where_to_put_it():
    with pytest.raises(PtrainError) as e:
        pretrained.resolve(TrainConfig(model="torchvision:resnet18", weights="DEFAULT"))
    message = str(e.value)
    assert "could not be downloaded" in message and RESNET18_FILE in message
    assert str(Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints") in message
    assert "\n" not in message
    with pytest.raises(UsageError, match=r"no such file, nor a weight name of "
                                         r"torchvision:resnet18 \(DEFAULT, IMAGENET1K_V1\)"):
        pretrained.resolve(TrainConfig(model="torchvision:resnet18", weights="IMAGENET_V9"))


def test_a_file_is_a_state_dict_or_a_ptrain_model(tmp_path):
    torch.save(zoo.build("torchvision:resnet18", 3, 1000, 224).state_dict(), tmp_path / "sd.pth")
    source = pretrained.resolve(TrainConfig(model="torchvision:resnet18",
                                            weights=str(tmp_path / "sd.pth")))
    assert (source.mean, source.std) == IMAGENET  # a bare file: the model's own weights' guess
    assert pretrained.for_channels(IMAGENET[0], 1) == (pytest.approx(0.449),)
    assert pretrained.for_channels((0.5,), 3) == (0.5, 0.5, 0.5)


def test_weights_need_a_zoo_model_and_exclude_init_from():
    from pytorch_cli.settings.config import validate
    with pytest.raises(UsageError, match="--weights is for torchvision:NAME and timm:NAME"):
        validate(TrainConfig(model="lenet", weights="DEFAULT"))
    with pytest.raises(UsageError, match="pass one of them"):
        validate(TrainConfig(model="torchvision:resnet18", weights="DEFAULT", init_from="runs/a"))
    with pytest.raises(UsageError, match="--unfreeze-at releases a frozen backbone"):
        validate(TrainConfig(unfreeze_at=2))
    with pytest.raises(UsageError, match=r"^--unfreeze-at 3 is past the run's end \(--epochs 3\)"):
        validate(TrainConfig(unfreeze_at=3, epochs=3, freeze="backbone"))


def test_a_weights_file_that_is_no_checkpoint_is_one_line_that_names_no_run(tmp_path):
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(PtrainError, match=r"junk.pth: not a PyTorch checkpoint, or a corrupt "
                       r"one; give another weights file: a state dict, or a run's model.pth"):
        pretrained.from_file(tmp_path / "junk.pth")


@pytest.mark.parametrize("key", pretrained.WRAPPERS)
def test_a_training_scripts_checkpoint_gives_the_state_dict_it_wraps(tmp_path, key):
    """Lightning's "state_dict", torchvision's references' "model"...: timm's load_checkpoint
    reads them; a file of no weights names its keys."""
    weights = zoo.build("lenet", 1, 10, 28).state_dict()
    torch.save({"epoch": 3, key: weights, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    got = pretrained.from_file(tmp_path / "ckpt.pth").state
    assert list(got) == list(weights) and all(torch.equal(got[k], weights[k]) for k in weights)
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "none.pth")
    with pytest.raises(PtrainError, match=r"none.pth: holds no weights: .* \(its keys: epoch, "
                                          r"optimizer\)"):
        pretrained.from_file(tmp_path / "none.pth")


def test_a_timm_weights_path_that_is_not_there_says_no_such_file():
    pytest.importorskip("timm")
    for given in ("/nonexist.pth", "mis/typed"):
        with pytest.raises(UsageError, match=f"--weights {given}: no such file"):
            pretrained.resolve(TrainConfig(model="timm:resnet18", weights=given))


@pytest.mark.slow  # an end-to-end recipe of 15-17 s here
def test_a_gray_fine_tune_from_default_weights_evaluates_exports_and_predicts(ptrain, tmp_path):
    _cached_resnet18()
    r = ptrain("train", "--dataset", "fake", "--model", "torchvision:resnet18", "--weights",
               "DEFAULT", "--max-steps", "3", "--epochs", "1", "--run-dir", "ft")
    assert r.code == 0, r.err
    assert ("weights: 100 of 102 tensors from ResNet18_Weights.IMAGENET1K_V1" in r.out
            and "new: fc.weight, fc.bias; first conv summed over RGB for gray images" in r.out
            and "its normalisation: mean 0.449, std 0.226" in r.out), r.out
    meta = torch.load(tmp_path / "ft" / "model.pth", weights_only=True)["meta"]
    assert meta["model"] == "torchvision:resnet18"
    assert meta["mean"] == [pytest.approx(0.449)] and meta["std"] == [pytest.approx(0.226)]
    ev = ptrain("eval", "ft", "--json").json()
    last = [line for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
            if '"epoch"' in line and '"kind": "epoch"' in line][-1]
    assert f'"test_correct": {ev["correct"]}' in last  # normalised alike in eval
    x = ptrain("export", "ft", "-f", "onnx", "--json")  # verified against the model, or exit 1
    assert x.code == 0 and x.json()["max_abs_diff"] < 1e-3, x.err
    sidecar = json.loads((tmp_path / "ft" / "model.onnx.json").read_text())
    assert (sidecar["mean"], sidecar["std"]) == (meta["mean"], meta["std"])
    Image.new("L", (50, 40), 200).save(tmp_path / "odd.png")  # another size: resized as trained
    top = ptrain("predict", "ft", tmp_path / "odd.png", "--json").json()["results"][0]["top"]
    assert len(top) == 3 and abs(sum(t["prob"] for t in top)) <= 1


def test_timm_takes_a_weights_file_with_its_models_normalisation(tmp_path):
    timm = pytest.importorskip("timm")  # the extra, installed by `.[dev]`
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "timm18.pth")
    from pytorch_cli.training.job import setup
    job = setup(TrainConfig(dataset="fake", model="timm:resnet18",
                            weights=str(tmp_path / "timm18.pth")))
    assert job.transfer.converted == "first conv summed over RGB for gray images"
    assert job.transfer.new == ["fc.weight", "fc.bias"]
    assert job.data.spec.mean == (pytest.approx(0.449),)  # ImageNet's, averaged for gray


def _listening_port():
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_host_is_reachable_when_it_takes_a_connection_or_a_proxy_is_set(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with _listening_port() as server:
        assert pretrained._reachable(f"http://127.0.0.1:{server.getsockname()[1]}/x")
        free = server.getsockname()[1]
    assert not pretrained._reachable(f"http://127.0.0.1:{free}/x")  # closed: refused
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy decides
    assert pretrained._reachable(f"http://127.0.0.1:{free}/x")


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """A Hugging Face endpoint that refuses connections, and a hub cache of the test's own."""
    hf = pytest.importorskip("huggingface_hub.constants")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with _listening_port() as server:
        free = server.getsockname()[1]
    monkeypatch.setattr(hf, "ENDPOINT", f"http://127.0.0.1:{free}")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_timm_weights_load_from_the_hub_cache_at_once_when_the_hub_cannot_be_reached(
        unreachable_hub, caplog):
    """An offline GPU node with the weights in $HF_HOME/hub: no retries (huggingface_hub waits
    ~45 s without this), the cached file; missing, one line, again without retries."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file
    torch.manual_seed(0)
    state = timm.create_model("resnet18").state_dict()
    cfg = TrainConfig(dataset="fake", model="timm:resnet18", weights="DEFAULT")
    with pytest.raises(PtrainError) as e:
        pretrained.resolve(cfg)
    assert "cannot be reached and timm's resnet18 weights are not in huggingface_hub's " \
           "cache ($HF_HOME/hub); pass --weights FILE" in str(e.value)
    snapshot = unreachable_hub / "models--timm--resnet18.a1_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    source = pretrained.resolve(cfg)
    assert torch.equal(source.state["conv1.weight"], state["conv1.weight"])
    assert source.label == "timm resnet18" and source.mean == IMAGENET[0]
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
    import huggingface_hub.constants as hf
    assert hf.HF_HUB_OFFLINE is False  # the process's setting, as it was
