"""One training state: what a step changes and what `last.pt` holds. `state_dict()` and
`load_state_dict()` are the only place that says what is in a training checkpoint."""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytorch_cli.platform import distributed, runtime
from pytorch_cli.platform.errors import DamagedFile
from pytorch_cli.store.checkpoint import clean_state_dict
from pytorch_cli.training import optim


@dataclass
class Position:
    """Where a run stands; a resume continues at the next batch."""
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done
    best_acc: float = -1.0
    best_epoch: int = 0  # the epoch best.pt holds
    stale_epochs: int = 0  # --patience: epochs since the metric last gained over --min-delta...
    gained_at: float = -1.0  # ...and what it was then
    early_stop: int = 0  # the epoch --patience ended the run at (0: it did not)
    elapsed_s: float = 0.0
    train_s: float = 0.0  # of that, training steps only (no setup, compile, evaluation, saving)
    epoch_loss_sum: float = 0.0  # summed train loss of this epoch's samples so far
    epoch_samples: int = 0
    # Carried by a mid-epoch save, so that a resumed run reports what the uninterrupted one does:
    epoch_train_s: float = 0.0  # this epoch's training seconds so far
    log_loss_sum: float = 0.0  # the log interval's losses and samples so far...
    log_samples: int = 0
    log_s: float = 0.0  # ...and its seconds


@dataclass
class TrainState:
    model: nn.Module  # what the step runs: the module itself, or it wrapped (compile, DDP)
    raw: nn.Module  # the plain module: its weights are what is saved
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler
    scaler: Any = None  # torch.amp.GradScaler for float16 training
    # --lookahead-every: the averaged copy of the weights (saved as "ema", its old name)
    lookahead_avg: dict[str, torch.Tensor] | None = None
    ema: nn.Module | None = None  # --ema: the averaged model (evaluated and saved as model.pth)
    pos: Position = field(default_factory=Position)
    last_lr: float | None = None  # the head's LR in the last optimizer step (step.py)

    @property
    def lr(self) -> float:
        """What records log: the head's LR in the last step taken, not in the next one (the
        schedule has moved on); before any step, the first one's."""
        return optim.head_lr(self.optimizer) if self.last_lr is None else self.last_lr

    @property
    def evaluated(self) -> nn.Module:
        """What evaluation runs and model.pth holds: the --ema average, else the weights."""
        return self.ema if self.ema is not None else self.raw

    @property
    def device(self) -> torch.device:
        """Where the run trains: its RNG state is that device's (and the CPU's)."""
        return next(self.raw.parameters()).device

    def state_dict(self) -> dict:
        """Called by every rank (it gathers each rank's RNG state); rank 0's is what is saved."""
        rng = distributed.gather(runtime.rng_state(self.device))
        out = {"model": clean_state_dict(self.raw.state_dict()),
               "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
               "position": dataclasses.asdict(self.pos), "rng": rng[0], "world": len(rng)}
        if len(rng) > 1:
            out["rng_ranks"] = rng
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        if self.lookahead_avg is not None:
            out["ema"] = dict(self.lookahead_avg)
        if self.ema is not None:
            out["model_ema"] = clean_state_dict(self.ema.state_dict())
        return out

    def load_state_dict(self, saved: dict) -> None:
        self.raw.load_state_dict(clean_state_dict(saved["model"]))
        optim.load_optimizer_state(self.optimizer, saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        if self.lookahead_avg is not None and "ema" in saved:
            for name, value in saved["ema"].items():
                self.lookahead_avg[name].copy_(value)
        if self.ema is not None and "model_ema" in saved:
            self.ema.load_state_dict(clean_state_dict(saved["model_ema"]))
        self.pos = position_of(saved)
        # last: building the model drew from the RNG. Each rank takes its own back; with another
        # number of processes, rank 0 takes rank 0's and the others keep their seeded streams.
        world, ranks = distributed.world(), saved.get("rng_ranks", [saved["rng"]])
        if len(ranks) == world.size or world.main:
            runtime.set_rng_state(ranks[world.rank] if len(ranks) == world.size else ranks[0],
                                  self.device)


def position_of(saved: dict) -> Position:
    """The position recorded in a saved training state."""
    return Position(**saved["position"])


def check_saved(saved: dict, path) -> None:
    """What state_dict() writes besides the weights and meta (checkpoint.load checks those):
    a crafted or damaged last.pt is one error naming the field, before anything is built."""
    position = saved["position"]
    for f in dataclasses.fields(Position):
        value = position.get(f.name, f.default)
        kind = int if f.type == "int" else float
        if isinstance(value, bool) or not isinstance(value, (kind, int)):
            raise DamagedFile(path, f"its position {f.name!r} is {value!r}, not a number")
        low = -1.0 if f.name in ("best_acc", "gained_at") else 0
        if not math.isfinite(value) or value < low:
            raise DamagedFile(path, f"its position {f.name!r} is {value!r}, below {low} or not "
                              "finite")
    unknown = set(position) - {f.name for f in dataclasses.fields(Position)}
    if unknown:
        raise DamagedFile(path, f"its position holds unknown fields ({sorted(map(str, unknown))})")
    world = saved.get("world", 1)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise DamagedFile(path, f"its 'world' is {world!r}, not a number of processes")
    for rng in saved.get("rng_ranks", [saved["rng"]]):
        _check_rng(rng, path)


def _check_rng(rng, path) -> None:
    """Each generator's state as its own setter would take it (on throwaway generators)."""
    try:
        random.Random().setstate(rng["python"])
        torch.Generator().set_state(rng["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise DamagedFile(path, f"its RNG state is unusable ({type(e).__name__}: "
                          f"{str(e)[:80]})") from None
