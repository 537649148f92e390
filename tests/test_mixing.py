import torch
import torch.nn.functional as F

from pytorch_cli.data import mixing
from pytorch_cli.training import step

MIXUP, CUTMIX, BOTH = mixing.Mix(mixup=0.4), mixing.Mix(cutmix=1.0), mixing.Mix(0.4, 1.0)


def _numbered(n: int = 8, size: int = 32) -> torch.Tensor:
    """Images whose every pixel is their own row's number."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def test_mixup_blends_each_image_with_its_neighbour_by_the_drawn_weight():
    d = mixing.draw(MIXUP, (32, 32), seed=5)
    assert d.kind == "mixup" and 0 < d.lam < 1
    x, y = _numbered(), torch.arange(8)
    out, mixed = mixing.apply(x.clone(), y, d)
    partner = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    torch.testing.assert_close(out, d.lam * x + (1 - d.lam) * x[partner])
    assert torch.equal(mixed.a, y) and torch.equal(mixed.b, partner) and mixed.lam == d.lam


def test_a_cutmix_box_covers_exactly_the_share_its_lam_leaves_to_the_partner():
    for seed in range(20):
        d = mixing.draw(CUTMIX, (32, 28), seed)
        out, mixed = mixing.apply(_numbered(6, 32)[..., :28].contiguous(), torch.arange(6), d)
        pasted = (out[0] == 1).sum().item() / 3  # image 0's pixels that are now image 1's
        top, bottom, left, right = d.box
        assert pasted == (bottom - top) * (right - left) == round((1 - d.lam) * 32 * 28)
        assert (out[0] != 0).sum() / 3 == pasted  # nothing else changed


def test_an_odd_last_image_keeps_itself_and_pairs_match_across_halves_of_a_batch():
    assert mixing.partners(5, torch.device("cpu")).tolist() == [1, 0, 3, 2, 4]
    whole = mixing.partners(8, torch.device("cpu"))
    halves = torch.cat([mixing.partners(4, torch.device("cpu")) + k for k in (0, 4)])
    assert torch.equal(whole, halves)  # 2 processes at batch 4 pair as 1 at batch 8


def test_draws_are_a_function_of_the_seed_and_mix_prob_is_the_share_mixed():
    assert mixing.draw(BOTH, (32, 32), 11) == mixing.draw(BOTH, (32, 32), 11)
    draws = [mixing.draw(mixing.Mix(0.4, 1.0, prob=0.3), (32, 32), s) for s in range(2000)]
    kinds = [d.kind for d in draws]
    assert 0.26 < 1 - kinds.count("none") / 2000 < 0.34
    assert abs(kinds.count("mixup") - kinds.count("cutmix")) < 100  # half and half
    lams = [d.lam for d in draws if d.kind == "mixup"]
    assert abs(sum(lams) / len(lams) - 0.5) < 0.05  # Beta(a, a) has mean 1/2
    assert mixing.draw(mixing.Mix(), (32, 32), 3).kind == "none"


def test_the_mixed_loss_is_cross_entropy_against_the_mixed_smoothed_target():
    g = torch.Generator().manual_seed(0)
    logits, a, b = torch.randn(6, 10, generator=g), torch.arange(6), torch.arange(6).flip(0)
    lam, eps = 0.3, 0.1
    target = (lam * F.one_hot(a, 10) + (1 - lam) * F.one_hot(b, 10)).float()
    assert torch.allclose(target.sum(1), torch.ones(6))  # the mixed labels still sum to 1
    smoothed = target * (1 - eps) + eps / 10
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(step.loss_of(logits, mixing.Mixed(a, b, lam), eps), expected)
    weights = torch.linspace(0.5, 2, 10)
    per_sample = [step.loss_of(logits, y, eps, weights) for y in (a, b)]
    torch.testing.assert_close(step.loss_of(logits, mixing.Mixed(a, b, lam), eps, weights),
                               lam * per_sample[0] + (1 - lam) * per_sample[1])
