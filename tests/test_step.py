"""The step on its own: gradient accumulation, clipping, label smoothing, the meter."""

import pytest
import torch
import torch.nn.functional as F

from pytorch_cli.models import zoo as models
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.training import optim, step
from pytorch_cli.training.state import TrainState


def _state(cfg: TrainConfig, seed: int = 0) -> TrainState:
    torch.manual_seed(seed)
    model = models.build("mnist-cnn", 1, 10, 28).eval()  # eval: no dropout, so runs compare
    opt = optim.build_optimizer(model, cfg)
    return TrainState(model, model, opt, optim.build_scheduler(opt, cfg, 10, 10))


def _batch(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("sizes", [[16, 16, 16, 16], [20, 20, 20, 4]])
def test_accumulated_micro_batches_give_the_big_batch_gradient(sizes):
    x, y = _batch(sum(sizes))
    big = _state(TrainConfig())
    step.forward_backward(big.model, x, y, 1.0)
    small = _state(TrainConfig())
    start = 0
    for n in sizes:  # weights as the loop gives them: each micro-batch's share of the samples
        step.forward_backward(small.model, x[start:start + n], y[start:start + n], n / len(y))
        start += n
    assert torch.allclose(_grads(small.model), _grads(big.model), atol=1e-6, rtol=1e-4)


def test_step_groups_follow_grad_accum_and_end_with_the_epoch():
    assert [step.group_of(b, 10, 4) for b in (0, 3, 4, 8, 9)] == \
        [range(0, 4), range(0, 4), range(4, 8), range(8, 10), range(8, 10)]
    assert step.group_of(5, 10, 1) == range(5, 6)


def test_clip_grad_bounds_the_update():
    # plain SGD with lr 1: the update is the (clipped) gradient itself
    cfg = TrainConfig(optimizer="sgd", lr=1.0, momentum=0.0)
    x, y = _batch()
    for clip, bounded in ((0.0, False), (0.05, True)):
        state = _state(cfg)
        before = torch.cat([p.detach().flatten().clone() for p in state.raw.parameters()])
        step.forward_backward(state.model, x, y, 1.0)
        grad_norm = _grads(state.model).norm()
        step.optimizer_step(state, clip_grad=clip)
        after = torch.cat([p.detach().flatten() for p in state.raw.parameters()])
        moved = (after - before).norm()
        assert grad_norm > 0.05
        assert (moved <= 0.05 * (1 + 1e-4)) == bounded
        assert state.pos.step == 1 and all(p.grad is None for p in state.raw.parameters())


def test_label_smoothing_changes_the_training_loss_by_the_expected_amount():
    x, y = _batch()
    state = _state(TrainConfig())
    with torch.no_grad():
        logp = state.model(x).log_softmax(1)
    nll, uniform = F.nll_loss(logp, y), -logp.mean(1).mean()
    plain = step.forward_backward(state.model, x, y, 1.0, label_smoothing=0.0)
    smooth = step.forward_backward(state.model, x, y, 1.0, label_smoothing=0.1)
    assert plain == pytest.approx(float(nll), rel=1e-5)
    assert smooth == pytest.approx(float(0.9 * nll + 0.1 * uniform), rel=1e-5)


def test_meter_is_the_sample_weighted_mean_and_resets():
    m = step.Meter(torch.device("cpu"))
    m.add(torch.tensor(2.0), 64)
    m.add(torch.tensor(1.0), 16)
    total, n = m.read()
    assert n == 80 and total / n == pytest.approx((2 * 64 + 16) / 80)
    assert m.read() == (2 * 64 + 16, 80)  # reading does not reset
    m.add(torch.tensor(0.1, dtype=torch.float64), 1)  # read as float32 (MPS has no float64)
    assert m.read()[0] == 2 * 64 + 16 + float(torch.tensor(0.1, dtype=torch.float32))
    m.reset()
    assert m.read() == (0.0, 0)


def test_lookahead_pulls_the_average_toward_the_weights_then_resets_them_to_it():
    state = _state(TrainConfig())
    state.lookahead_avg = {
        k: v.clone() for k, v in state.raw.state_dict().items() if v.is_floating_point()
    }
    before = {k: v.clone() for k, v in state.lookahead_avg.items()}
    with torch.no_grad():
        for p in state.raw.parameters():
            p.add_(1.0)  # as if the optimizer had moved them
    step.lookahead(state, decay=0.75)
    for name, value in state.raw.state_dict().items():
        if name in before:  # a quarter of the way from the old average to the moved weights
            expected = before[name] + 0.25 * (1.0 if name.endswith(("weight", "bias")) else 0.0)
            assert torch.allclose(value, expected) and torch.equal(
                value, state.lookahead_avg[name]
            ), name
    assert step.lookahead_decay(0, 100, 5, 0.95) == 0.0  # at first the weights lead
    assert step.lookahead_decay(100, 100, 5, 0.95) == pytest.approx(0.95 ** 5)


def test_ema_moves_toward_the_weights_by_the_warmed_up_rate_and_copies_integer_buffers():
    import copy
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model=model, raw=model, optimizer=opt, scheduler=None,
                       ema=copy.deepcopy(model).requires_grad_(False))
    average = model[0].weight.item()
    for t, w in enumerate((2.0, -1.0, 0.5), start=1):
        with torch.no_grad():
            model[0].weight.fill_(w)
            model[1].num_batches_tracked.fill_(10 * t)
        state.pos.step = t
        step.ema_update(state, 0.999)
        d = min(0.999, (1 + t) / (10 + t))  # the warm-up: 2/11, 3/12, 4/13
        average = d * average + (1 - d) * w
        assert state.ema[0].weight.item() == pytest.approx(average, rel=1e-6)
        assert int(state.ema[1].num_batches_tracked) == 10 * t
