"""Loading weights trained elsewhere by name and shape; the head, the backbone and its norms."""

import pytest
import torch
import torch.nn.functional as F

from pytorch_cli.models import adapt, zoo
from pytorch_cli.platform.errors import PtrainError


def test_matching_tensors_load_and_a_head_for_other_classes_is_new():
    source = zoo.build("lenet", 1, 10, 28).state_dict()
    model = zoo.build("lenet", 1, 5, 28)
    report = adapt.load_into(model, source, "mnist.pth")
    assert report.new == ["fc2.weight", "fc2.bias"] and report.unused == 2
    assert len(report.loaded) == 6
    mine = model.state_dict()
    assert all(torch.equal(mine[k], source[k]) for k in report.loaded)
    assert report.describe() == "6 of 8 tensors from mnist.pth; new: fc2.weight, fc2.bias; " \
                                "2 of its tensors unused"


def test_an_rgb_first_conv_is_summed_for_gray_images_and_answers_alike():
    source = zoo.build("torchvision:resnet18", 3, 1000, 64).state_dict()
    gray = zoo.build("torchvision:resnet18", 1, 10, 64)
    report = adapt.load_into(gray, source, "imagenet")
    assert report.converted == "first conv summed over RGB for gray images"
    image = torch.rand(2, 1, 16, 16)
    expected = F.conv2d(image.expand(-1, 3, -1, -1), source["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(gray.conv1(image), expected, atol=1e-5)  # gray = R = G = B
    back = zoo.build("torchvision:resnet18", 3, 10, 64)  # and a gray one spread over RGB
    assert adapt.load_into(back, gray.state_dict(), "g").converted.startswith("first conv spread")
    assert torch.allclose(back.conv1(image.expand(-1, 3, -1, -1)), gray.conv1(image), atol=1e-5)


def test_a_vits_position_embedding_is_resampled_for_another_patch_grid():
    pytest.importorskip("timm")
    from timm.layers import resample_abs_pos_embed
    source = zoo.build("timm:vit_tiny_patch16_224", 3, 1000, 224).state_dict()  # 14x14 patches
    model = zoo.build("timm:vit_tiny_patch16_224", 3, 10, (64, 96))  # 4x6
    report = adapt.load_into(model, source, "vit.pth")
    assert report.new == ["head.weight", "head.bias"] and "pos_embed" in report.loaded
    assert report.resampled == "position embedding resampled from 14x14 to 4x6 patches"
    assert report.resampled in report.describe()
    expected = resample_abs_pos_embed(source["pos_embed"], new_size=[4, 6], num_prefix_tokens=1)
    assert torch.equal(model.state_dict()["pos_embed"], expected)  # the class token's kept
    assert torch.equal(expected[:, 0], source["pos_embed"][:, 0])


def test_a_torchvision_vits_position_embedding_is_resampled_alike():
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    def vit(side, classes):  # vit_b_16's layout, small
        return VisionTransformer(side, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                                 num_classes=classes)
    source = vit(64, 1000).state_dict()  # 8x8 patches
    model = vit(32, 10)  # 4x4
    report = adapt.load_into(model, source, "vit.pth")
    assert report.new == ["heads.head.weight", "heads.head.bias"]
    assert report.resampled == "position embedding resampled from 8x8 to 4x4 patches"
    expected = interpolate_embeddings(32, 8, {"encoder.pos_embedding":
                                              source["encoder.pos_embedding"]})
    assert torch.equal(model.state_dict()["encoder.pos_embedding"],
                       expected["encoder.pos_embedding"])


def test_weights_that_fit_nothing_are_refused():
    with pytest.raises(PtrainError, match="x.pth: none of its 8 tensors fits this model"):
        adapt.load_into(zoo.build("cifar-net", 3, 10, 32), zoo.build("lenet", 1, 10, 28)
                        .state_dict(), "x.pth")


def test_the_backbone_is_everything_but_the_head_and_its_norms_are_listed():
    model = zoo.build("torchvision:resnet18", 3, 10, 32)
    backbone = adapt.backbone(model, 10)
    assert {n for n, _ in model.named_parameters()} - backbone == {"fc.weight", "fc.bias"}
    norms = adapt.frozen_norms(model, 10)
    assert len(norms) == 20 and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
