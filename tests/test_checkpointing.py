import copy

import pytest
import torch

from pytorch_cli.models import checkpointing, zoo
from pytorch_cli.platform.errors import UsageError


def _saved_bytes(model, x) -> int:
    """What autograd keeps for the backward pass of one forward: the activation memory."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(kept)


def _train(model, x, y, steps=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return model.state_dict()


def test_checkpointed_resnet18_trains_bit_for_bit_as_the_plain_one_with_less_kept():
    torch.manual_seed(0)
    plain = zoo.build("resnet18", 3, 10, 16, "default")
    patched = copy.deepcopy(plain)
    assert checkpointing.enable(patched, "resnet18") == 8  # its 8 BasicBlocks
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    assert _saved_bytes(patched, x) < 0.3 * _saved_bytes(plain, x)
    a, b = _train(plain, x, y), _train(patched, x, y)
    # the weights, and BatchNorm's statistics, which the recomputation must not move twice
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(a) == list(b)  # the same keys: a checkpointed run's files are a plain run's


def test_a_copy_of_a_checkpointed_model_runs_its_own_weights():
    """--ema deep-copies the model: the copy's blocks must compute with the copy's weights."""
    model = zoo.build("resnet18", 1, 10, 28, "default")
    checkpointing.enable(model, "resnet18")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    assert not torch.equal(model(x), twin(x))
    assert torch.equal(twin(x), torch.zeros(2, 10))


def test_a_model_without_residual_blocks_is_one_line():
    with pytest.raises(UsageError, match="residual blocks.*lenet has none"):
        checkpointing.enable(zoo.build("lenet", 1, 10, 28, "default"), "lenet")


def test_torchvision_resnets_and_timm_models_are_checkpointed():
    import torchvision
    assert checkpointing.enable(torchvision.models.resnet50(num_classes=10), "r50") == 16
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=10)
    assert checkpointing.enable(model, "timm:resnet18") == 0 and model.grad_checkpointing


def test_a_run_of_a_net_without_blocks_is_refused_in_one_line(ptrain):
    refused = ptrain("train", "--dataset", "fake", "--grad-checkpointing", "--dry-run")
    assert refused.code == 2 and "lenet has none" in refused.err
