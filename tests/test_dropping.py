"""--dropout and --drop-path: the rates land on the layers the libraries' own arguments set,
unset keeps the model's own, a model without them is one line, and a resume keeps them."""

import pytest
import torch
from conftest import run_cli
from torch import nn

from pytorch_cli.models import zoo

FAKE = ["--dataset", "fake", "--model", "lenet", "--log-interval", "100", "--quiet"]


def _rates(model, kind: str) -> list[float]:
    if kind == "dropout":
        return [m.p for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    return [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]


@pytest.mark.parametrize("arch", ["efficientnet_b0", "convnext_tiny"])
def test_drop_path_sets_each_block_as_torchvisions_own_argument_would(arch):
    """efficientnet's schedule ends below its rate ((n-1)/n of it), convnext's at it: both come
    out as torchvision's stochastic_depth_prob builds them, and 0 turns the default off."""
    import torchvision
    with torch.device("meta"):  # the layers' rates without the weights' memory
        own = zoo.build(f"torchvision:{arch}", 3, 10, (32, 32))
        ours = zoo.build(f"torchvision:{arch}", 3, 10, (32, 32), drop_path=0.35)
        off = zoo.build(f"torchvision:{arch}", 3, 10, (32, 32), drop_path=0.0)
        theirs = torchvision.models.get_model(arch, num_classes=10, stochastic_depth_prob=0.35)
    assert max(_rates(own, "drop_path")) > 0  # on by default in torchvision
    assert _rates(ours, "drop_path") == pytest.approx(_rates(theirs, "drop_path"), abs=1e-12)
    assert set(_rates(off, "drop_path")) == {0.0}


def test_dropout_sets_every_dropout_layer_and_unset_keeps_the_examples_rates():
    assert _rates(zoo.build("mnist-cnn", 1, 10, (28, 28)), "dropout") == [0.25, 0.5]
    assert _rates(zoo.build("mnist-cnn", 1, 10, (28, 28), dropout=0.1), "dropout") == [0.1, 0.1]
    assert _rates(zoo.build("lenet", 1, 10, (28, 28), dropout=0.0), "dropout") == [0.0]


def test_timm_builds_its_models_with_the_rates():
    pytest.importorskip("timm")
    model = zoo.build("timm:resnet18", 3, 10, (32, 32), dropout=0.3, drop_path=0.1)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert model.drop_rate == 0.3 and max(rates) == pytest.approx(0.1)  # timm's own spread
    assert not [m for m in zoo.build("timm:resnet18", 3, 10, (32, 32)).modules()
                if type(m).__name__ == "DropPath"]  # timm's default: none


@pytest.mark.parametrize("args, says", [
    (["--model", "resnet18", "--dropout", "0.1"], "--dropout: --model resnet18 has no dropout "
                                                  "layer to set"),
    (["--model", "cifar-net", "--drop-path", "0.1"], "--drop-path: --model cifar-net has no "
                                                     "stochastic depth"),
    (["--model", "torchvision:mobilenet_v3_small", "--drop-path", "0.1"], "has no stochastic "
                                                                          "depth"),
    (["--model", "timm:vgg11", "--drop-path", "0.1"], "--model timm:vgg11 does not take "
                                                      "drop_path_rate"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
])
def test_a_rate_the_model_cannot_take_is_one_line(tmp_path, args, says):
    if "timm:" in " ".join(args):
        pytest.importorskip("timm")
    r = run_cli(["train", "--dataset", "fake", "--epochs", "1", "--dry-run", *args], tmp_path)
    assert r.code != 0 and r.err.count("\n") == 1 and says in r.err, r.err


def test_a_resumed_run_keeps_its_rate(tmp_path):
    """lenet at --dropout 0 for 2 epochs, in one go and as 1 + a resume: the same weights (a
    resume that rebuilt the example's Dropout2d at 0.5 would drop channels in epoch 2), and
    not those of the default rate."""
    for name, flags in (("once", ["--epochs", "2"]), ("default", ["--epochs", "2"]),
                        ("resumed", ["--epochs", "1"])):
        rate = [] if name == "default" else ["--dropout", "0"]
        assert run_cli(["train", *FAKE, *flags, *rate, "--run-dir", name], tmp_path).code == 0
    assert "dropout = 0.0" in (tmp_path / "resumed/config.toml").read_text()
    assert run_cli(["resume", "resumed", "--epochs", "2"], tmp_path).code == 0
    weights = {n: torch.load(tmp_path / n / "model.pth", weights_only=True)["state_dict"]
               for n in ("once", "default", "resumed")}
    assert all(torch.equal(weights["once"][k], weights["resumed"][k]) for k in weights["once"])
    assert not torch.equal(weights["once"]["fc2.weight"], weights["default"]["fc2.weight"])
