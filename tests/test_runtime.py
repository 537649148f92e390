"""Device choice, precision, backends."""

import pytest
import torch

from pytorch_cli.platform import runtime
from pytorch_cli.platform.errors import PtrainError


def test_precision_choices():
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype("auto", cpu) is None  # float32 off CUDA
    assert runtime.autocast_dtype("32", cpu) is None
    assert runtime.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert runtime.autocast_dtype("16", cpu) is torch.float16


def test_fast_backends_unless_deterministic():
    runtime.fast_backends(deterministic=False)
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    runtime.fast_backends(deterministic=True)
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_auto_is_the_cpu_without_an_accelerator():
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.describe_device(torch.device("cpu")) == "cpu"
    with pytest.raises(PtrainError, match="no CUDA device"):
        runtime.resolve_device("cuda:1")


@pytest.mark.cuda
def test_auto_picks_cuda_0_and_names_it():
    device = runtime.resolve_device("auto")
    assert device == torch.device("cuda", 0)
    text = runtime.describe_device(device)
    assert text.startswith("cuda:0 (") and torch.cuda.get_device_name(0) in text
    if torch.cuda.device_count() > 1:
        assert f"1 of {torch.cuda.device_count()} GPUs" in text


@pytest.mark.cuda
def test_auto_precision_is_bf16_on_cuda_that_has_it():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert runtime.autocast_dtype("auto", torch.device("cuda", 0)) is expected
