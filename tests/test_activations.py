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
    onto = ptrain("activations", "run", "digit.png", "-o", "digit.png")  # the input, kept
    assert onto.code == 2 and "refusing to write digit.png: it is the image being read" in onto.err
    assert Image.open(tmp_path / "digit.png").size == (40, 30)
    missing = ptrain("activations", "run", "nothing.png")
    assert missing.code != 0 and "nothing.png" in missing.err and "Traceback" not in missing.err
