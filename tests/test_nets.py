"""The nets themselves: logits' shape, LeNet's names, Airbench's and FastCNN's layers."""

import pytest
import torch
from torch import nn

from pytorch_cli.models import nets

NETS = [nets.LeNet, nets.MnistCNN, nets.CifarNet, nets.FastCNN, nets.Airbench, nets.resnet18]


@pytest.mark.parametrize("net", NETS, ids=lambda n: n.__name__)
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 10)])
def test_each_net_maps_images_to_one_row_of_logits_each(net, channels, size, classes):
    torch.manual_seed(0)
    model = net(channels, classes, size).eval()
    logits = model(torch.rand(2, channels, size, size))
    assert logits.shape == (2, classes) and logits.isfinite().all()


def test_lenet_keeps_the_classic_examples_parameter_names_and_adapts_fc1():
    names = {n for n, _ in nets.LeNet(1, 10, 28).named_parameters()}
    assert names == {f"{layer}.{p}" for layer in ("conv1", "conv2", "fc1", "fc2")
                     for p in ("weight", "bias")}
    assert nets.LeNet(1, 10, 28).fc1.in_features == 20 * 4 * 4  # the example's 320
    assert nets.LeNet(3, 10, 32).fc1.in_features == 20 * 5 * 5


def test_airbench_head_has_no_bias_and_its_convs_start_as_the_identity():
    net = nets.Airbench(3, 10, 32)
    assert net.head.bias is None and net.head.in_features == 256
    assert net.whiten.out_channels == 24 and net.whiten.bias.requires_grad
    first = net.groups[0][0].weight  # 24 whitened channels in, 64 out
    assert torch.equal(first[:24, :, 1, 1], torch.eye(24))  # the first 24 filters pass through
    assert torch.count_nonzero(first[:24]) == 24


def test_airbench_widths_set_the_group_sizes():
    net = nets.Airbench(1, 5, 28, widths=(8, 16, 16))
    assert net.head.in_features == 16 and net.whiten.out_channels == 8
    assert net.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 5)


def test_whitening_filters_do_not_depend_on_the_chunk_size():
    torch.manual_seed(0)
    images = torch.randn(60, 1, 12, 12)
    a, b = nets.Airbench(1, 10, 12), nets.Airbench(1, 10, 12)
    nets.whiten_from(a, images)
    nets.whiten_from(b, images, chunk=7)
    assert a.whiten.weight.dtype == torch.float32 and not a.whiten.weight.requires_grad
    assert torch.allclose(a.whiten.weight, b.whiten.weight, rtol=1e-5, atol=1e-5)


def test_fast_cnn_has_three_batchnorm_blocks_and_bias_free_convs():
    net = nets.FastCNN(1, 10, 28)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.num_features for bn in norms] == [32, 64, 128]
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert net.fc.in_features == 128  # after the global max-pool: any image size fits
    assert net.eval()(torch.rand(2, 1, 40, 40)).shape == (2, 10)
