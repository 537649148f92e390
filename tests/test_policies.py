"""RandAugment, TrivialAugmentWide and AutoAugment(CIFAR10), batched: each image its own ops,
and each image's result bit-equal to torchvision's v2 functional on that image alone."""

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from pytorch_cli.data import policies

TORCHVISION = {"randaugment": v2.RandAugment(), "trivialaugment": v2.TrivialAugmentWide(),
               "autoaugment": v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)}
SHAPES = [(3, 32, 32), (1, 28, 28), (3, 20, 36)]  # CIFAR, MNIST, and a non-square one


def images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Textured images: gradients of random slope plus noise, each in its own value range; the
    first one also holds every value 0-255 (so thresholds and bit masks meet every value)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for _ in range(n):
        a = torch.rand(3, generator=g)
        v = torch.stack([xx * a[0] * 10, yy * a[1] * 9, (xx + yy) * a[2] * 5])[:c]
        v = v + torch.randint(-40, 41, (c, h, w), generator=g)
        lo, hi = torch.randint(0, 100, (), generator=g), torch.randint(150, 256, (), generator=g)
        v = lo + (v - v.min()) / (v.max() - v.min()) * (hi - lo)
        out.append(v.round().clamp(0, 255).to(torch.uint8))
    x = torch.stack(out)
    x[0].view(c, -1)[:, :256] = torch.arange(256, dtype=torch.uint8)[:h * w]
    return x


def reference(image: torch.Tensor, kind: str, column: torch.Tensor) -> torch.Tensor:
    """One image through torchvision, op by op, with the ops and magnitudes of its draws column
    (magnitudes read from torchvision's own augmentation space)."""
    t = TORCHVISION[kind]
    h, w = image.shape[-2:]
    for r in range(policies.ROUNDS):
        op = policies.OPS[int(column[3 * r])]
        if op == "Identity":
            continue
        fn, signed = t._AUGMENTATION_SPACE[op]
        values = fn(policies.BINS[kind], h, w)
        mag = 0.0 if values is None else float(values[int(column[3 * r + 1])])
        if signed and column[3 * r + 2]:
            mag *= -1
        image = t._apply_image_or_video_transform(image, op, mag, fill=t._fill,
                                                  interpolation=InterpolationMode.NEAREST)
    return image


def mismatches(x: torch.Tensor, y: torch.Tensor, kind: str, draws: torch.Tensor) -> list[int]:
    return [i for i in range(len(x)) if not torch.equal(y[i], reference(x[i], kind, draws[:, i]))]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind,op", [(k, op) for k in policies.KINDS for op in policies.SPACES[k]])
def test_each_op_equals_torchvision_on_single_images(kind, op, shape):
    # one batch, each image with its own magnitude bin and sign
    bins = range(policies.BINS[kind]) if kind == "autoaugment" else (0, 3, 9, 17, 20, 27, 30)
    cases = [(b, s) for b in bins for s in (0, 1)]
    x = images(len(cases), *shape, seed=policies.OPS.index(op))
    draws = torch.zeros(policies.ROWS, len(cases), dtype=torch.int64)
    draws[0] = policies.OPS.index(op)
    draws[1:3] = torch.tensor(cases).T
    y = policies.apply(x, kind, draws)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert mismatches(x, y, kind, draws) == []


@pytest.mark.parametrize("kind", policies.KINDS)
def test_random_policies_equal_torchvision_image_by_image(kind):
    for shape in SHAPES[:2]:
        x = images(48, *shape, seed=7)
        draws = policies.draw(kind, 48, torch.Generator().manual_seed(3))
        assert mismatches(x, policies.apply(x, kind, draws), kind, draws) == []


def test_magnitudes_and_cifar10_policy_are_torchvisions():
    for kind, t in TORCHVISION.items():
        assert set(policies.SPACES[kind]) == set(t._AUGMENTATION_SPACE)
        for op, (fn, signed) in t._AUGMENTATION_SPACE.items():
            values = fn(policies.BINS[kind], 28, 36)
            for b in range(policies.BINS[kind]):
                want = 0.0 if values is None else float(values[b])
                assert policies.magnitude(kind, op, b, 0, 28, 36) == want
                assert policies.magnitude(kind, op, b, 1, 28, 36) == (-want if signed else want)
    theirs = TORCHVISION["autoaugment"]._policies
    assert [tuple((op, p, b or 0) for op, p, b in sub) for sub in theirs] == list(policies.CIFAR10)


@pytest.mark.parametrize("kind", policies.KINDS)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=("rgb", "gray"))
def test_copies_of_one_image_come_out_varied(kind, shape):
    x = images(1, *shape, seed=1).expand(64, *shape)
    y = policies.apply(x, kind, policies.draw(kind, 64, torch.Generator().manual_seed(0)))
    distinct = len({bytes(img.flatten().tolist()) for img in y})
    # AutoAugment often skips ops (its probabilities) and repeats sub-policies; the gray image
    # has no Color
    assert distinct >= {"randaugment": 40, "trivialaugment": 30, "autoaugment": 16}[kind]


@pytest.mark.parametrize("kind", policies.KINDS)
def test_draws_and_results_repeat_per_seed(kind):
    a = policies.draw(kind, 32, torch.Generator().manual_seed(11))
    b = policies.draw(kind, 32, torch.Generator().manual_seed(11))
    other = policies.draw(kind, 32, torch.Generator().manual_seed(12))
    assert a.dtype == torch.int64 and a.shape == (policies.ROWS, 32) and policies.ROWS <= 8
    assert torch.equal(a, b) and not torch.equal(a, other)
    x = images(32, 3, 32, 32)
    assert torch.equal(policies.apply(x, kind, a), policies.apply(x, kind, b))


@pytest.mark.parametrize("kind", policies.KINDS)
def test_channels_last_batches_give_the_same_images(kind):
    x = images(32, 3, 32, 32, seed=5)
    draws = policies.draw(kind, 32, torch.Generator().manual_seed(2))
    y = policies.apply(x.to(memory_format=torch.channels_last), kind, draws)
    assert torch.equal(y, policies.apply(x, kind, draws))


@pytest.mark.parametrize("kind", policies.KINDS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=("mnist", "cifar"))
def test_every_policy_runs_on_dataset_shaped_batches(kind, shape):
    x = images(100, *shape, seed=9)
    y = policies.apply(x, kind, policies.draw(kind, 100, torch.Generator().manual_seed(4)))
    assert y.dtype == torch.uint8 and y.shape == x.shape and y.device == x.device
    assert policies.apply(x[:0], kind, policies.draw(kind, 0, torch.Generator())).shape[0] == 0


def test_extreme_magnitudes_saturate_instead_of_wrapping():
    # the strongest brightening, contrast and sharpening of a bright image: clamped to 255
    x = images(3, 3, 32, 32, seed=3) | 128
    draws = torch.zeros(policies.ROWS, 3, dtype=torch.int64)
    draws[0] = torch.tensor([policies.OPS.index(op) for op in ("Brightness", "Contrast", "Color")])
    draws[1] = 30
    y = policies.apply(x, "trivialaugment", draws)
    assert (y[0] == 255).float().mean() > 0.9 and y[1].max() == 255 and y[2].max() == 255
    assert (y.int() >= x.int() - 128).all()  # no value wrapped round to near 0


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="randaugment"):
        policies.draw("augmix", 4, torch.Generator())
    with pytest.raises(ValueError, match="randaugment"):
        policies.apply(images(1, 3, 8, 8), "augmix", torch.zeros(policies.ROWS, 1).long())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", policies.KINDS)
def test_cuda_gives_the_cpu_images(kind):
    x = images(64, 3, 32, 32, seed=6)
    draws = policies.draw(kind, 64, torch.Generator().manual_seed(1))
    y = policies.apply(x.cuda(), kind, draws)
    assert y.device.type == "cuda" and torch.equal(y.cpu(), policies.apply(x, kind, draws))
