import importlib.util
from pathlib import Path

import pytest
import torch

from pytorch_cli.models import zoo as models


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 100)])
def test_models_adapt_to_channels_size_and_classes(name, channels, size, classes):
    m = models.build(name, channels, classes, size).eval()
    assert m(torch.zeros(2, channels, size, size)).shape == (2, classes)


def test_mnist_cnn_matches_the_examples_state_dict():
    shapes = {
        k: tuple(v.shape) for k, v in models.build("mnist-cnn", 1, 10, 28).state_dict().items()
    }
    assert shapes == {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,),
                      "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
                      "fc1.weight": (128, 9216), "fc1.bias": (128,),
                      "fc2.weight": (10, 128), "fc2.bias": (10,)}


def test_resnet18_has_small_image_stem():
    m = models.build("resnet18", 3, 10, 32)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("init", ["xavier", "kaiming", "normal", "orthogonal"])
def test_init_schemes_replace_weights_and_zero_biases(init):
    torch.manual_seed(0)
    default = models.build("lenet", 1, 10, 28)
    torch.manual_seed(0)
    m = models.build("lenet", 1, 10, 28, init=init)
    assert not torch.equal(m.fc1.weight, default.fc1.weight)
    assert torch.count_nonzero(m.fc1.bias) == 0
    if init == "normal":
        assert abs(m.fc1.weight.std().item() - 0.02) < 0.002


def _reference_net():
    """The net of benchmarks/reference_mnist.py: the argparse example's, as the Grokking-PyTorch
    notes give it."""
    path = Path(__file__).parent.parent / "benchmarks" / "reference_mnist.py"
    spec = importlib.util.spec_from_file_location("reference_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net()


def test_lenet_is_the_grokking_net_in_training_mode_too():
    ref = _reference_net()
    ours = models.build("lenet", 1, 10, 28)
    ours.load_state_dict(ref.state_dict())  # same parameter names: that script's weights load
    x = torch.randn(32, 1, 28, 28)
    torch.manual_seed(3)
    want = ref.train()(x)
    torch.manual_seed(3)
    got = ours.train()(x).log_softmax(1)  # same dropout draws: no extra dropout after fc1
    assert torch.allclose(got, want, atol=1e-6)


def test_airbench_whitening_decorrelates_the_training_patches():
    torch.manual_seed(0)
    # correlated images: smooth (neighbouring pixels alike) and channels alike
    base = torch.nn.functional.avg_pool2d(torch.randn(200, 1, 34, 34), 3, 1)
    images = base.repeat(1, 3, 1, 1) + 0.3 * torch.randn(200, 3, 32, 32)
    net = models.build("airbench", 3, 10, 32)
    models.DATA_INITS["airbench"](net, images)
    conv = net.whiten
    out = torch.nn.functional.conv2d(images, conv.weight[:12])  # the positive half, no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)  # eigenvalues >> eps: near identity
    assert torch.equal(conv.weight[12:], -conv.weight[:12])
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert "whiten.weight" in frozen and all(n.endswith(".weight") for n in frozen)
    assert sum("groups" in n for n in frozen) == 6  # the six BatchNorm scales
    assert all(m.bias is None for m in net.groups.modules() if isinstance(m, torch.nn.Conv2d))


def test_airbench_whitening_bias_trains_for_three_epochs_only():
    net = models.build("airbench", 3, 10, 32)
    for epoch, trains in ((0, True), (2, True), (3, False), (9, False)):
        models.set_trainable_for_epoch(net, "airbench", epoch)
        assert net.whiten.bias.requires_grad is trains, epoch
    models.set_trainable_for_epoch(models.build("lenet", 1, 10, 28), "lenet", 5)  # others: nothing


@pytest.mark.parametrize("name, size, least", [
    ("torchvision:mobilenet_v3_small", 28, 2),  # its last BatchNorm sees 1x1 maps
    ("torchvision:mobilenet_v3_small", 64, 1),  # 2x2: a batch of one trains
    ("resnet18", 8, 2), ("fast-cnn", 28, 1), ("lenet", 28, 1)])  # lenet: no BatchNorm
def test_the_probe_finds_the_fewest_images_a_batch_the_model_trains_on(name, size, least):
    """torch's BatchNorm refuses a batch of one image where it sees one value per channel an
    image; the probe (in eval mode, which never refuses) says so before training."""
    model = models.build(name, 1, 10, size)
    flops, found = models.check_input(model, name, 1, (size, size))
    assert found == least and flops > 0
    if least == 2:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model.train()(torch.zeros(1, 1, size, size))
    else:
        model.train()(torch.zeros(1, 1, size, size))
