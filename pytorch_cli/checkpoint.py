"""Saving and loading: atomic writes, weights-only loads, plain containers of tensors only.

Two file kinds, both dicts tagged with "format":
- training state (`last.pt`, `best.pt`): everything an exact resume needs;
- model file (`model.pth`): weights plus what rebuilds the model and its preprocessing.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from pytorch_cli.errors import PtrainError

STATE_FORMAT = "ptrain-train-state"
MODEL_FORMAT = "ptrain-model"
VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return out


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: a crash at
    any moment leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load(path: Path) -> dict:
    """Load with weights_only=True: a file that would need to run code is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise PtrainError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the blocked callable: "unsupported GLOBAL posix.system" (older: "Unsupported
        # global: GLOBAL posix.system")
        found = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if found:
            raise PtrainError(f"{path}: refused to load: it asks to run {found.group(1)}, and ptrain "
                              "loads only tensors and plain values; do not use this file") from None
        raise PtrainError(f"{path}: not a PyTorch checkpoint, or a corrupt one; "
                          "use another checkpoint of the run (last.pt, best.pt)") from None
    except Exception as e:  # torn zip, bad record, missing key: all mean a damaged file
        raise PtrainError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}); "
                          "use another checkpoint of the run (last.pt, best.pt)") from None
    if not isinstance(obj, dict):
        raise PtrainError(f"{path}: not a ptrain checkpoint or state_dict")
    return obj
