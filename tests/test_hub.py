"""torchvision:NAME and timm:NAME models: built for the run's channels and classes, their head
and first conv found, names checked with a hint."""

import sys

import pytest
import torch

from pytorch_cli.models import hub, zoo
from pytorch_cli.platform.errors import PtrainError, UsageError


@pytest.mark.parametrize("name,head", [
    ("torchvision:resnet18", "fc"),  # the common case
    ("torchvision:squeezenet1_1", "classifier.1"),  # a 1x1 conv head
    ("torchvision:googlenet", "fc"),  # aux heads dropped: one output in training too
    ("torchvision:mobilenet_v3_small", "classifier.3"),
    ("timm:resnet18", "fc"),  # the optional extra (installed by `.[dev]`)
])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_zoo_model_is_built_for_the_channels_and_classes(name, head, channels):
    model = zoo.build(name, channels, 7, 64).train()
    logits = model(torch.zeros(2, channels, 64, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)  # no aux tuple
    assert hub.head_names(model, 7) == [head]
    _, conv = hub.first_conv(model)
    assert conv.in_channels == channels


def test_a_timm_vit_is_built_for_the_runs_image_size_and_a_timm_convnet_as_ever():
    pytest.importorskip("timm")
    vit = zoo.build("timm:vit_tiny_patch16_224", 3, 10, (64, 96)).eval()  # it wanted 224x224
    assert vit.patch_embed.grid_size == (4, 6) and vit(torch.zeros(2, 3, 64, 96)).shape == (2, 10)
    assert zoo.build("timm:vit_tiny_patch16_224", 1, 10, 28).patch_embed.img_size == (28, 28)
    convnet = zoo.build("timm:resnet18", 3, 10, (64, 96))  # it takes no img_size: any size
    assert convnet(torch.zeros(2, 3, 64, 96)).shape == (2, 10)


def test_a_torchvision_vit_is_built_for_square_images_of_the_runs_size():
    vit = zoo.build("torchvision:vit_b_16", 3, 10, 64).eval()  # it wanted 224x224
    assert (vit.image_size, vit.patch_size) == (64, 16)
    with torch.inference_mode():
        assert vit(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert hub._sized("resnet18", (64, 96)) == {}
    for size, said in (((64, 96), "not 64x96: resize them with --image-size 96"),
                       (30, "not 30x30: resize them with --image-size 32")):
        with pytest.raises(UsageError, match="takes square images whose side is a multiple of "
                           f"16 \\(its patch\\), {said}"):  # not its AssertionError
            zoo.build("torchvision:vit_b_16", 3, 10, size)


def test_builtin_nets_heads_are_their_last_layer():
    heads = {"lenet": "fc2", "mnist-cnn": "fc2", "cifar-net": "fc3", "fast-cnn": "fc",
             "airbench": "head", "resnet18": "fc"}
    assert {n: hub.head_names(zoo.build(n, 3, 10, 32), 10)[0] for n in zoo.MODELS} == heads
    assert hub.first_conv(zoo.build("airbench", 3, 10, 32))[0] == "whiten"


@pytest.mark.parametrize("name", ["timm:deit_tiny_distilled_patch16_224", "timm:levit_128s"])
def test_a_distilled_models_two_heads_are_its_head_and_its_backbone_all_the_rest(name):
    """DeiT's and LeViT's class and distillation heads (timm's get_classifier gives both): a
    frozen backbone raised a raw StopIteration, as did predict --features (a hostile trial)."""
    from pytorch_cli.models import adapt
    pytest.importorskip("timm")
    model = zoo.build(name, 3, 5, 32 if "deit" in name else 64)
    assert hub.head_names(model, 5) == ["head", "head_dist"]
    every = {n for n, _ in model.named_parameters()}
    outside = {n for n in every if n.split(".")[0] in ("head", "head_dist")}
    assert outside and adapt.backbone(model, 5) == every - outside
    norms = adapt.frozen_norms(model, 5)
    assert all(m is not model.head.bn for m in norms) if "levit" in name else norms == []


def test_unknown_names_get_a_hint_and_the_form_is_checked_without_torchvision():
    with pytest.raises(UsageError, match=r"no such torchvision classification model \(did you "
                                         r"mean torchvision:resnet18"):
        zoo.build("torchvision:resnet81", 3, 10, 32)
    with pytest.raises(UsageError, match="no such timm"):
        zoo.build("timm:not_a_model_at_all", 3, 10, 32)
    assert zoo.known("torchvision:vit_b_16") and not zoo.known("torchvision:vit b")


def test_without_timm_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed: import fails
    with pytest.raises(PtrainError, match=r"timm is not installed \(pip install "
                                          r"'pytorch-cli\[timm\]'\)"):
        zoo.build("timm:resnet18", 3, 10, 32)


def test_a_model_that_cannot_take_the_size_is_one_line():
    model = zoo.build("torchvision:alexnet", 3, 10, (4, 6))  # its max-pools need more
    with pytest.raises(UsageError, match=r"--model torchvision:alexnet cannot take 4x6 "
                                         r"images \(.*\); resize them"):
        zoo.check_input(model, "torchvision:alexnet", 3, (4, 6))
    assert model.training  # the probe leaves the mode as it was
