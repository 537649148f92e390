"""Device choice, seeding, determinism and RNG state capture (for exact resume)."""

from __future__ import annotations

import os
import random

import torch

from pytorch_cli.errors import PtrainError


def resolve_device(name: str) -> torch.device:
    """'auto' takes the machine's accelerator (CUDA, MPS, ...) if torch sees one, else the CPU;
    an explicit accelerator that is absent is an error."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
        if accelerator is not None:
            return accelerator.current_accelerator() if accelerator.is_available() else torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtrainError(f"--device {name}: no CUDA device is visible to torch; "
                              "use --device cpu (or auto)", exit_code=2)
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise PtrainError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible", exit_code=2)
    if name == "mps" and not has_mps:
        raise PtrainError("--device mps: MPS is not available on this machine; use --device cpu",
                          exit_code=2)
    return torch.device(name)


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


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
