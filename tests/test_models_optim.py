import math

import pytest
import torch

from pytorch_cli import models, optim
from pytorch_cli.config import TrainConfig


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 100)])
def test_models_adapt_to_channels_size_and_classes(name, channels, size, classes):
    m = models.build(name, channels, classes, size).eval()
    assert m(torch.zeros(2, channels, size, size)).shape == (2, classes)


def test_mnist_cnn_matches_the_examples_state_dict():
    shapes = {k: tuple(v.shape) for k, v in models.build("mnist-cnn", 1, 10, 28).state_dict().items()}
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


def test_weight_decay_skips_biases_and_norm_weights():
    m = models.build("resnet18", 3, 10, 32)
    opt = optim.build_optimizer(m, TrainConfig(weight_decay=5e-4, optimizer="sgd", momentum=0.9))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in m.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2), name
    assert id(m.bn1.weight) not in decayed


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW), ("adadelta", torch.optim.Adadelta),
                                      ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_registry(name, cls):
    opt = optim.build_optimizer(models.build("lenet", 1, 10, 28), TrainConfig(optimizer=name, lr=0.3))
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.3


def _lrs(cfg, steps_per_epoch):
    m = torch.nn.Linear(2, 2)
    opt = optim.build_optimizer(m, cfg)
    sched = optim.build_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_step_schedule_multiplies_by_gamma_each_epoch():
    lrs = _lrs(TrainConfig(lr=1.0, scheduler="step", gamma=0.5, epochs=3), 4)
    assert lrs[:4] == [1.0] * 4 and lrs[4:8] == [0.5] * 4 and lrs[8:] == [0.25] * 4


def test_cosine_with_warmup():
    lrs = _lrs(TrainConfig(lr=1.0, scheduler="cosine", warmup_epochs=1, epochs=5), 10)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_onecycle_peaks_at_lr():
    lrs = _lrs(TrainConfig(lr=0.5, scheduler="onecycle", epochs=2), 50)
    assert max(lrs) == pytest.approx(0.5, rel=1e-3) and lrs[0] < 0.05 and lrs[-1] < 1e-3
    assert not math.isnan(sum(lrs))
