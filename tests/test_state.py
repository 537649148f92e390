"""The training state: what last.pt holds, whatever wraps the model that steps."""

import pytest
import torch
from torch import nn

from pytorch_cli.models import zoo as models
from pytorch_cli.platform import runtime
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.store import checkpoint
from pytorch_cli.store.rundir import RunDir
from pytorch_cli.training import loop, optim
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
    saved = runtime.rng_state(torch.device("cpu"))
    a = torch.rand(4)
    runtime.set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(4), a)


def _resumed_from_8_gpu_state(tmp_path, device: str, own_first) -> None:
    """Stop a run mid-epoch, rewrite its last.pt as earlier versions wrote it on a machine with
    8 GPUs (a list of 8 CUDA generator states under "cuda"; `own_first` gives the first), resume
    from the file: the run ends with the weights of the run that was never stopped."""
    cfg = TrainConfig(dataset="fake", device=device, epochs=1, batch_size=100, log_interval=5,
                      deterministic=True)  # lenet: its dropout draws from the generators
    full, cut, stop = RunDir(tmp_path / "full"), RunDir(tmp_path / "cut"), loop.StopFlag()
    loop.train(cfg, full, lambda r: None)
    loop.train(cfg, cut, lambda r: r["kind"] == "train" and r["batch"] == 10
               and stop.request("test"), stop=stop)
    saved = checkpoint.load(cut.file("last.pt"))
    # other GPUs' states, as CUDA lays one out: the seed, then the offset (int64 each)
    others = [torch.tensor([1000 + i, 4 * i]).view(torch.uint8) for i in range(7)]
    saved["rng"]["cuda"] = [own_first(saved["rng"])] + others
    state = {k: v for k, v in saved.items() if k not in ("format", "version", "config", "meta")}
    checkpoint.save_train_state(cut.file("last.pt"), state, saved["config"], saved["meta"])
    loop.train(cfg, cut, lambda r: None, resume=checkpoint.load(cut.file("last.pt")))
    a, b = (checkpoint.load(r.file("last.pt"))["model"] for r in (full, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_with_more_cuda_states_than_the_machine_has_gpus_resumes(tmp_path):
    _resumed_from_8_gpu_state(tmp_path, "cpu", lambda rng: torch.tensor([7, 0]).view(torch.uint8))


@pytest.mark.cuda
def test_a_gpu_run_resumed_from_8_legacy_cuda_states_continues_exactly(tmp_path):
    _resumed_from_8_gpu_state(tmp_path, "cuda:0", lambda rng: rng["cuda"])  # cuda:0's own
