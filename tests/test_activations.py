import re
import shutil

import pytest
import torch
from PIL import Image

from pytorch_cli.models import activations, zoo
from pytorch_cli.platform.errors import UsageError


def test_lenet_has_a_stage_per_resolution_with_its_convs_channels():
    model = zoo.build("lenet", 1, 10, 28, "default").eval()
    found = activations.stages(model, torch.randn(1, 1, 28, 28), "lenet")
    assert [tuple(s.maps.shape) for s in found] == [(10, 24, 24), (10, 12, 12), (20, 8, 8),
                                                    (20, 4, 4)]


def test_resnet18_stages_are_the_outputs_of_its_four_layers():
    model = zoo.build("resnet18", 3, 10, 32, "default").eval()
    x = torch.randn(1, 3, 32, 32)
    found = activations.stages(model, x, "resnet18")
    assert [s.node for s in found] == ["layer1.1.relu_1", "layer2.1.relu_1", "layer3.1.relu_1",
                                       "layer4.1.relu_1"]
    with torch.no_grad():  # the very maps the model computes
        stem = model.relu(model.bn1(model.conv1(x)))
        assert torch.equal(found[1].maps, model.layer2(model.layer1(stem))[0])


def test_a_vision_transformer_has_its_patch_embedding_as_its_only_maps():
    """Its tokens are no maps: before, each block's attention (heads x tokens x dims, 4-d) was
    drawn as a stage."""
    pytest.importorskip("timm")
    model = zoo.build("timm:vit_tiny_patch16_224", 3, 10, 32).eval()
    found = activations.stages(model, torch.randn(1, 3, 32, 32), "timm:vit_tiny_patch16_224")
    assert [(s.node, tuple(s.maps.shape)) for s in found] == [("patch_embed.proj", (192, 2, 2))]


def test_blocks_fx_keeps_whole_count_as_convolutions():
    """torchvision's efficientnet: FX keeps its Conv2dNormActivation blocks as leaf nodes, so no
    node is a Conv2d itself; before, it had "no convolutional feature maps to draw"."""
    model = zoo.build("torchvision:efficientnet_b0", 3, 10, 64, "default").eval()
    found = activations.stages(model, torch.randn(1, 3, 64, 64), "efficientnet_b0")
    assert [s.maps.shape[1:] for s in found] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert found[-1].node == "features.8"
    assert activations.grad_cam(model, torch.randn(2, 3, 64, 64), [3, 4], "e").shape == (2, 64, 64)


class _Halves(torch.nn.Module):
    """Class k's logit is the mean of channel k (a 1x1 identity conv, ReLU, average pool): its
    evidence lies exactly where channel k is bright."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 1, bias=False)
        self.fc = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
        return self.fc(pooled.flatten(1))


@pytest.mark.parametrize("frozen", [False, True])
def test_grad_cam_lights_up_where_a_class_evidence_lies(frozen):
    """Channel 0 bright on the left, channel 1 on the right: class 0's map is the left half,
    class 1's the right, each scaled to 1 at its peak; a model frozen for fine-tuning too."""
    model = _Halves().eval().requires_grad_(not frozen)
    x = torch.zeros(3, 2, 8, 8)
    x[:, 0, :, :4] = 1.0
    x[:, 1, :, 4:] = 0.5
    cam = activations.grad_cam(model, x, [0, 1, 0], "halves")
    assert cam.shape == (3, 8, 8)
    for i, left in enumerate([True, False, True]):
        lit, dark = (cam[i, :, :4], cam[i, :, 4:]) if left else (cam[i, :, 4:], cam[i, :, :4])
        assert torch.equal(lit, torch.ones(8, 4)) and torch.equal(dark, torch.zeros(8, 4))


def test_a_model_fx_cannot_trace_is_one_line():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x  # data-dependent: no FX graph
    with pytest.raises(UsageError, match="cannot be traced by torch.fx"):
        activations.stages(Branchy(), torch.randn(1, 1, 8, 8), "branchy")


def test_activations_draws_the_maps_of_a_trained_run(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--max-steps", "2", "--run-dir", "run").code == 0
    Image.new("L", (40, 30), 128).save(tmp_path / "digit.png")  # any size: prepared as trained
    result = ptrain("activations", "run", "digit.png", "-o", "maps.png", "--channels", "4")
    assert result.code == 0, result.err
    assert "conv2_drop: 20x8x8" in result.out and "4 stages" in result.out
    assert Image.open(tmp_path / "maps.png").size[0] > 300
    assert ptrain("activations", "run", "digit.png", "-o", "maps.svg").code == 0
    assert re.search(r"<!-- Grad-CAM: \d \d\.\d\d -->", (tmp_path / "maps.svg").read_text())
    shutil.copy(tmp_path / "run/model.pth", tmp_path / "m.png")  # a checkpoint named as a picture
    onto = ptrain("activations", "m.png", "digit.png", "-o", "m.png")
    assert onto.code == 2 and "refusing to write m.png: it is the checkpoint being read" in onto.err
    onto = ptrain("activations", "run", "digit.png", "-o", "digit.png")  # the input, kept
    assert onto.code == 2 and "refusing to write digit.png: it is the image being read" in onto.err
    assert Image.open(tmp_path / "digit.png").size == (40, 30)
    missing = ptrain("activations", "run", "nothing.png")
    assert missing.code != 0 and "nothing.png" in missing.err and "Traceback" not in missing.err


def test_a_built_in_run_at_another_size_sees_the_image_as_predict_and_eval_do(ptrain, tmp_path):
    # a built-in set's run at --image-size 40: training resized 28x28 images on the device; a
    # user's image is decoded at 28x28 and resized the same way, as predict does (it was resized
    # by PIL straight to 40x40: other pixels than predict's, and than training's)
    from pytorch_cli.commands import predicting, saved
    from pytorch_cli.data import batches
    from pytorch_cli.data.images import read_image
    assert ptrain("train", "--dataset", "fake", "--image-size", "40", "--max-steps", "2",
                  "--run-dir", "run").code == 0
    pixels = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (61, 97), generator=pixels, dtype=torch.uint8).numpy()
    Image.fromarray(noise, "L").save(tmp_path / "odd.png")
    found = predicting.run_activations(tmp_path / "run", tmp_path / "odd.png", tmp_path / "m.png",
                                       2)
    loaded = saved.load_model(tmp_path / "run")
    x = batches.resize(read_image(tmp_path / "odd.png", 1, (28, 28))[None], (40, 40))
    expected = activations.stages(loaded.model, batches.Normalize((0.5,), (0.25,))(x / 255),
                                  "lenet")
    assert [s.node for s in found] == [s.node for s in expected]
    assert all(torch.equal(a.maps, b.maps) for a, b in zip(found, expected))
