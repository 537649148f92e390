"""The training state: what last.pt holds, whatever wraps the model that steps."""

import torch
from torch import nn

from pytorch_cli.models import zoo as models
from pytorch_cli.platform import runtime
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.training import optim
from pytorch_cli.training.state import Position, TrainState, position_of


def _state(wrap=lambda m: m):
    cfg = TrainConfig(optimizer="adamw", lr=0.01, scheduler="cosine", epochs=2)
    raw = models.build("lenet", 1, 10, 28)
    opt = optim.build_optimizer(raw, cfg)
    return TrainState(wrap(raw), raw, opt, optim.build_scheduler(opt, cfg, 20, 10))


def test_state_of_a_wrapped_model_saves_plain_keys_and_loads_back():
    torch.manual_seed(0)
    state = _state(nn.DataParallel)  # adds "module." to every key, as DDP does
    assert next(iter(state.model.state_dict())).startswith("module.")
    loss = state.model(torch.randn(8, 1, 28, 28)).logsumexp(1).mean()
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.pos = Position(epoch=1, batch=3, step=13, best_acc=0.5)
    saved = state.state_dict()
    expected_draw = torch.rand(3)  # the RNG moves on after the save...
    assert list(saved["model"]) == list(models.build("lenet", 1, 10, 28).state_dict())
    assert saved["optimizer"]["state"] and saved["scheduler"]["last_epoch"] == 1
    assert position_of(saved) == state.pos and isinstance(saved["rng"]["torch"], torch.Tensor)
    assert "scaler" not in saved and "ema" not in saved

    fresh = _state()
    fresh.load_state_dict(saved)  # ...and a restored state draws the same numbers again
    assert torch.equal(torch.rand(3), expected_draw)
    for key, tensor in saved["model"].items():
        assert torch.equal(fresh.raw.state_dict()[key], tensor), key
    assert fresh.pos == state.pos and fresh.scheduler.last_epoch == 1


def test_rng_state_round_trips():
    runtime.seed_everything(5)
    saved = runtime.rng_state()
    a = torch.rand(4)
    runtime.set_rng_state(saved)
    assert torch.equal(torch.rand(4), a)
