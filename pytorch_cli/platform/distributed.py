"""Several processes, one job: torchrun's environment, the process group and the few collectives
the engine needs. With one process every function here is a no-op, so the loop has no branches
for it (nanoGPT's way).

The rule that keeps a job from hanging: every rank calls every collective, in the same order.
Files are written by rank 0 *between* collectives ("all ranks reach the save, rank 0 writes, all
ranks learn whether it worked"), never with a collective inside `if rank == 0`.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from pytorch_cli.platform import signals
from pytorch_cli.platform.errors import PtrainError, UsageError, first_line, plural

DEFAULT_TIMEOUT_S = 300.0  # a collective waits this long, at most (PTRAIN_DIST_TIMEOUT)
MAX_TIMEOUT_S = 7 * 24 * 3600  # a week: a collective that waits longer is a hang


def timeout_s() -> float:
    """PTRAIN_DIST_TIMEOUT in seconds (unset or empty: 300). Read when a session starts, not at
    import: a bad value is one usage error before any work, for one process too (c10d would
    answer a negative one with a C++ stack dump)."""
    text = os.environ.get("PTRAIN_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 1 <= seconds <= MAX_TIMEOUT_S:  # nan and inf fail too; under a second, c10d's
        # rendezvous times out before it connects (a C++ stack dump at 1e-9 and 0.0001)
        raise UsageError(f"PTRAIN_DIST_TIMEOUT must be a number of seconds from 1 to "
                         f"{MAX_TIMEOUT_S} (a week), got {text!r}")
    return seconds


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun (or `ptrain train --nproc`): its environment variables are set."""
    return all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"))


def _restarts() -> tuple[int, int]:
    """torchrun's --max-restarts, and how many of them were used before this worker group."""
    return (int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")),
            int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))


def elastic() -> bool:
    """torchrun may restart this worker group (--max-restarts > 0): a restart must continue."""
    return _restarts()[0] > 0


def restarted() -> bool:
    """This worker group is one torchrun restarted after a failure (not its first start)."""
    return _restarts()[1] > 0


def world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size())


_joined = False  # init() joined a process group in this process


def joined() -> bool:
    """Whether this process joined a process group: it then ends with signals.exit_now, not
    through the interpreter's teardown. DDP's reducer keeps gloo's process group, and its threads,
    alive past destroy_process_group (the threads were still there after it, measured with
    torch 2.14.1), and destroying them in that teardown aborts the process now and then
    ("terminate called without an active exception", SIGABRT after the run ended: 2 of the 9
    torchrun jobs of one test-suite run on this 2-core machine)."""
    return _joined


def init() -> None:
    """Join torchrun's process group when launched by it: gloo for CPU tensors and, where
    there are GPUs, nccl for CUDA ones. Collectives wait timeout_s() at most."""
    global _joined
    if launched() and not dist.is_initialized():
        # torchrun's agent (`ptrain train --nproc`'s own process) SIGKILLed: its workers, each
        # in a session of its own, trained on unseen and held the run's lock (a hostile trial);
        # now they get SIGTERM, and save and stop as on any
        signals.sigterm_with_parent(orphaned=True)()
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s())
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun's agent store outlives a restart, and with it the addresses the previous
        # worker group published: a fresh prefix per attempt keeps a restarted rank from
        # dialling a dead peer (seen here as gloo's "Connection refused" on restart)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"ptrain/attempt_{attempt}", store),
                                rank=rank, world_size=size, timeout=timeout)
        _joined = True


def local_device(device: torch.device) -> torch.device:
    """This process's device: under torchrun with CUDA, the GPU of its local rank. A GPU is
    made the current device, as calls that take none (is_bf16_supported, the DataLoader's
    pin-memory thread) use that one; left at GPU 0 they open a second context there."""
    if device.type != "cuda":
        return device
    if not launched():
        torch.cuda.set_device(device)
        return device
    local = int(os.environ["LOCAL_RANK"])
    if device.index not in (None, 0) and int(os.environ["WORLD_SIZE"]) > 1:
        raise PtrainError(f"--device {device}: under torchrun each process takes the GPU of its "
                          "local rank; pass --device cuda (or auto)", exit_code=2)
    if local >= torch.cuda.device_count():
        raise PtrainError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); "
                          "start at most that many processes per node", exit_code=2)
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def peer_lost(error: Exception) -> PtrainError:
    """A collective failed because a peer died or timed out: one line, not a traceback."""
    first = first_line(error, 200)
    most, used = _restarts()
    then = (f"these workers stop, and torchrun starts them again from the last checkpoint "
            f"({plural(most - used, 'restart')} left)" if most > used else
            "the job ends; what it saved (last.pt, if it got that far) is intact")
    return PtrainError(f"rank {world().rank}: another process of this job stopped answering "
                       f"({first}); {then}")


def _collective(fn: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # torch.distributed.DistError is one
            raise peer_lost(e) from None
    return wrapped


@_collective
def all_sum(*numbers: float) -> list[float]:
    """Sums across ranks, in float64 (counts stay exact)."""
    if not dist.is_initialized():
        return list(numbers)
    t = torch.tensor(numbers, dtype=torch.float64)  # on the CPU: gloo carries it
    dist.all_reduce(t)
    return t.tolist()


@_collective
def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across ranks, in place (nccl: it must live on the GPU)."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


@_collective
def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@_collective
def _broadcast(box: list[Any]) -> None:
    dist.broadcast_object_list(box, src=0)


def from_main(fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 only and hand its result, or its error, to every rank."""
    if not dist.is_initialized():
        return fn()
    box: list[Any] = [None]
    error: Exception | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except (PtrainError, OSError) as e:  # OSError: a full disk, a lost permission
            error = e
            box[0] = ("error", e if isinstance(e, PtrainError) else PtrainError(str(e)))
    _broadcast(box)
    if error is not None:
        raise error
    if box[0][0] == "error":
        box[0][1].echo = True  # rank 0 prints it; this rank only exits with its code
        raise box[0][1]
    return box[0][1]


@_collective
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) everywhere: DDP keeps them in step at
    each forward, but each rank's last batch moved its own copy; evaluation and the saved model
    use rank 0's."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


@_collective
def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 does the block first (a download, say), then the others, which find it done."""
    if not world().main:
        barrier()
    yield
    if world().main:
        barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model when there is a process group."""
    if not dist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
