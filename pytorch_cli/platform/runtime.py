"""Device choice, seeding, determinism and RNG state capture (for exact resume)."""

from __future__ import annotations

import ctypes
import functools
import os
import random

import torch

from pytorch_cli.platform.errors import PtrainError


def resolve_device(name: str) -> torch.device:
    """'auto' takes the machine's accelerator (CUDA, MPS, ...) if torch sees one, else the CPU;
    an explicit accelerator that is absent is an error."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
        if accelerator is not None:
            found = accelerator.current_accelerator() if accelerator.is_available() else None
        else:
            found = torch.device("cuda") if torch.cuda.is_available() else None
            found = found or (torch.device("mps") if has_mps else None)
        if found is None:
            return torch.device("cpu")
        # one device, named: with several GPUs, auto takes the first (torchrun uses them all)
        return torch.device(found.type, 0) if found.type == "cuda" else found
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtrainError(f"--device {name}: no CUDA device is visible to torch; "
                              "use --device cpu (or auto)", exit_code=2)
        # bare "cuda" names the current device: every later call (set_device, RNG state,
        # pinned memory) then agrees on one index
        index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise PtrainError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible", exit_code=2)
        return torch.device("cuda", index)
    if name == "mps" and not has_mps:
        raise PtrainError("--device mps: MPS is not available on this machine; use --device cpu",
                          exit_code=2)
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """'cpu (8 threads)' (torch's intra-op threads: OMP_NUM_THREADS, a sweep job's share), or
    'cuda:0 (NVIDIA H100 80GB HBM3, 1 of 8 GPUs: ...)' when more are visible."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if device.type != "cuda":
        return str(device)
    name, count = torch.cuda.get_device_name(device), torch.cuda.device_count()
    more = (f", 1 of {count} GPUs: pick one with --device cuda:N, use all with torchrun"
            if count > 1 else "")
    return f"{device} ({name}{more})"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision (None: float32 throughout). auto = bf16 on CUDA
    devices that support it, float32 elsewhere."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def precision_name(amp: torch.dtype | None) -> str:
    """What --precision resolved to, as the records say it: bfloat16, float16, float32."""
    return str(amp).removeprefix("torch.") if amp else "float32"


def fast_backends(deterministic: bool) -> None:
    """cuDNN autotuning and TF32 matmuls/convolutions: on, unless results must be reproducible."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Keep freed memory in the process for the next step (Linux with glibc; elsewhere a no-op
    that returns False). By default glibc hands blocks of 128 KiB and more straight back to the
    OS (mmap) and trims the heap's free top, so a training step's activations and gradients
    come back as fresh pages that the kernel faults in and zeroes: on a 2-core CPU, 200,000
    faults a step for resnet18 at batch 128, 4,200-8,200 for mnist-cnn at 64 in most runs.
    Served from a heap that is never trimmed, resnet18 took 1,460 ms a step instead of
    1,583-1,684 and mnist-cnn 28 instead of 35-36, for 6% more peak memory (torch 2.14.1): what
    PyTorch's CPU tuning guide gets from jemalloc or tcmalloc, without preloading a library.
    Forked processes (DataLoader workers) inherit it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def set_deterministic(on: bool) -> None:
    if not on:
        return
    # cuBLAS needs a fixed workspace for deterministic GEMMs; it is read when CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: a few CUDA backward kernels (adaptive pooling in resnet18) have no deterministic
    # version; torch warns about them rather than aborting the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def rng_state(device: torch.device) -> dict:
    """The generators a run on `device` draws from: Python's, the CPU's and, on a GPU, that
    GPU's only (not every visible one: a resume may see fewer)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def cuda_state_for(saved, index: int) -> torch.Tensor:
    """The CUDA generator state for GPU `index` from a saved "cuda" entry: one state, or (in
    checkpoints written before) a list of one per GPU visible then. From such a list the
    resuming GPU's own index is taken if it was there, else GPU 0's (a torchrun run resumed on
    fewer GPUs: each rank had used its local rank's, and rank 0 GPU 0's)."""
    if isinstance(saved, (list, tuple)):
        return saved[index] if index < len(saved) else saved[0]
    return saved


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(cuda_state_for(state["cuda"], device.index or 0), device)


def out_of_memory(e: BaseException) -> bool:
    """An allocation refused: an accelerator's OutOfMemoryError (CUDA, MPS, XPU), or the CPU
    allocator's error where a limit refuses memory up front (ulimit -v, no overcommit)."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))
