"""Checkpoint files: their formats and versions, weights-only loads (written atomically: files.py).

Two file kinds, both dicts tagged with "format" and "version":
- training state (`last.pt`, `best.pt`): TrainState.state_dict() (state.py says what it holds)
  plus the run's config and the model's meta;
- model file (`model.pth`): weights plus what rebuilds the model and its preprocessing.
A third thing loads too: a bare state_dict of tensors, as other scripts save them.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from pytorch_cli.models import zoo
from pytorch_cli.platform.errors import DamagedFile, PtrainError, first_line
from pytorch_cli.platform.files import atomic_write
from pytorch_cli.store import export, rundir, sidecar

STATE_FORMAT = "ptrain-train-state"
MODEL_FORMAT = "ptrain-model"
VERSION = 1
_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights on the CPU under the plain module's names (wrapper prefixes dropped)."""
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
    """torch.save, serialised in memory first: its C++ writer turns a full disk into an obscure
    RuntimeError; a plain write of the bytes gives the OSError that names the cause. A failed
    save keeps the previous file and leaves no temporary file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    except OSError as e:
        raise PtrainError(f"cannot write {path}: {e.strerror or e}; the previous {Path(path).name} "
                          "(if any) is intact") from None


def save_train_state(path: Path, state: dict, config: dict, meta: dict) -> None:
    atomic_save({"format": STATE_FORMAT, "version": VERSION, **state, "config": config,
                 "meta": meta}, path)


def save_model_file(path: Path, state_dict: dict, meta: dict, config: dict, metrics: dict) -> None:
    atomic_save({"format": MODEL_FORMAT, "version": VERSION,
                 "state_dict": clean_state_dict(state_dict), "meta": meta, "config": config,
                 "metrics": metrics}, path)


RUN_ADVICE = "use another checkpoint of the run (last.pt, best.pt)"


def load(path: Path, advice: str = RUN_ADVICE) -> dict:
    """Load with weights_only=True: a file that would need to run code is refused, never run.
    `advice`: what a damaged file's message ends with."""
    path = Path(path)
    if not path.is_file():
        raise PtrainError(f"{path}: no such checkpoint file" if not path.exists() else
                          f"{path} is not a file, so no checkpoint (a folder, a device or a pipe)")
    if _torchscript(path):  # torch.load would hand it to torch.jit.load, with a warning
        raise _not_loaded(path, "", export_file=True)
    obj = _safetensors(path, advice) if _is_safetensors(path) else _torch_load(path, advice)
    if not isinstance(obj, dict):
        raise PtrainError(f"{path}: not a ptrain checkpoint or state_dict")
    if obj.get("format") in (STATE_FORMAT, MODEL_FORMAT):
        version = obj.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DamagedFile(path, f"its version is {version!r}, not a whole number")
        if version > VERSION:
            raise PtrainError(f"{path}: written by a newer ptrain (checkpoint version "
                              f"{version}, this one reads {VERSION}); upgrade ptrain")
        _check_tagged(obj, path)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        check_weights(obj, path)  # a bare state_dict
    return obj


def _torch_load(path: Path, advice: str):
    """torch.load, weights only; each way it fails is one line."""
    try:
        with warnings.catch_warnings():  # a raw pickle of protocol 4+: torch's warning, then ours
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the blocked callable: "unsupported GLOBAL posix.system" (older: "Unsupported
        # global: GLOBAL posix.system"); protocol 4's framing it reads not at all ("Unsupported
        # operand 149"), so the names come from the opcodes (pickletools runs nothing)
        found = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if found:  # a class (CapWords) is most often a model saved whole: torch.save(model)
            whole = found.group(1).rsplit(".", 1)[-1][:1].isupper()
            raise PtrainError(
                f"{path}: refused to load: it asks to run {found.group(1)}, and ptrain loads "
                "only tensors and plain values; " + (
                    "a model saved whole (torch.save(model, ...)) is such a file: save "
                    "model.state_dict() instead, in the code that built it" if whole else
                    "do not use this file")) from None
        if named := _pickled_globals(path):
            raise PtrainError(
                f"{path}: refused to load: a raw pickle (protocol 4 or newer, not torch.save's) "
                f"that names {', '.join(named[:3])}; ptrain loads only torch.save's files of "
                "tensors and plain values") from None
        raise _not_loaded(path, f"not a PyTorch checkpoint, or a corrupt one; {advice}"
                          ) from None
    except Exception as e:  # torn zip, bad record, missing key: all mean a damaged file
        raise _not_loaded(path, f"truncated or corrupt checkpoint ({type(e).__name__}); "
                          f"{advice}") from None


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: 8 bytes of header length (little-endian), then the JSON header.
    torch.load reads one from torch 2.14 on, not the GPU machine's 2.11 (nor --weights of the
    safetensors files timm and Hugging Face publish)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and \
        int.from_bytes(head[:8], "little") < path.stat().st_size


def _safetensors(path: Path, advice: str) -> dict:
    st = export.need("safetensors.torch", "safetensors")
    try:
        return st.load_file(str(path))
    except Exception as e:  # a torn or crafted header
        raise _not_loaded(path, f"a damaged safetensors file ({type(e).__name__}: "
                          f"{first_line(e, 120)}); {advice}") from None


# the endings of export's formats torch.load cannot read (a safetensors file holds weights)
EXPORT_ENDINGS = tuple(end for fmt, (end, _) in export.FORMATS.items() if fmt != "safetensors")


def _not_loaded(path: Path, why: str, export_file: bool = False) -> PtrainError:
    """The line for a file torch.load could not read: an export (its sidecar names the
    checkpoint it was made from) is said to be one, else `why`."""
    source = sidecar.read(path).get("source_checkpoint")
    beside = path.parent / rundir.MODEL
    if source and not Path(source).exists() and beside.is_file():  # the run moved or renamed
        source = str(beside)
    if source or export_file or path.name.lower().endswith(EXPORT_ENDINGS):
        return PtrainError(f"{path}: an export, not a checkpoint; give the checkpoint it was made "
                           f"from ({source or 'the run directory, or its model.pth'})")
    return PtrainError(f"{path}: {why}")


def _torchscript(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save's zip holds constants.pkl; torch.save's never):
    given back to ptrain, the export of a run, a .pt like any checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith("/constants.pkl") for name in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _pickled_globals(path: Path) -> list[str]:
    """The callables a raw pickle names, read from its opcodes (none run); [] if unreadable."""
    import pickletools
    named, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    named.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    named.append(".".join(strings[-2:]))
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle after all, or torn: the caller's generic line
        pass
    return list(dict.fromkeys(named))


# Each file kind's fields besides its weights: name -> type (the training state's own fields,
# position and RNG, are checked by training/state.py, which writes them).
_FIELDS = {MODEL_FORMAT: {"meta": dict, "config": dict, "metrics": dict},
           STATE_FORMAT: {"meta": dict, "config": dict, "optimizer": dict, "scheduler": dict,
                          "position": dict, "rng": dict}}
_WEIGHTS = {MODEL_FORMAT: "state_dict", STATE_FORMAT: "model"}


def _check_tagged(obj: dict, path: Path) -> None:
    kind = obj["format"]
    for key, type_ in {_WEIGHTS[kind]: dict, **_FIELDS[kind]}.items():
        if key not in obj:
            raise DamagedFile(path, f"it has no {key!r}")
        if not isinstance(obj[key], type_):
            raise DamagedFile(path, f"its {key!r} is a {type(obj[key]).__name__}, not a "
                              f"{type_.__name__}")
    check_weights(obj[_WEIGHTS[kind]], path)
    if kind == STATE_FORMAT and "model_ema" in obj:  # --ema's average, beside the weights
        if not isinstance(obj["model_ema"], dict):
            raise DamagedFile(path, "its 'model_ema' is not a table of tensors")
        check_weights(obj["model_ema"], path)
    zoo.check_meta(obj["meta"], path)


def check_weights(state_dict: dict, path: Path) -> None:
    """Named real tensors: loading complex values into a real model would drop their imaginary
    part. (NaN weights load: `eval` says what such a model scores; export refuses them.)"""
    if not state_dict:
        raise DamagedFile(path, "it holds no weights")
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise DamagedFile(path, f"its weights hold {name!r}: {type(value).__name__}, not a "
                              "named tensor")
        if value.is_complex():
            raise DamagedFile(path, f"weight {name} is complex ({value.dtype}); ptrain's models "
                              "are real-valued")


def weights(saved: dict, ema: bool = True) -> dict[str, torch.Tensor] | None:
    """The model weights of a loaded file of any kind; None if it holds none. A training state
    of an --ema run holds two sets: the average (ema, what model.pth gets) or the live weights."""
    if saved.get("format") == MODEL_FORMAT:
        return saved["state_dict"]
    if saved.get("format") == STATE_FORMAT:
        return saved["model_ema"] if ema and "model_ema" in saved else saved["model"]
    if saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        return saved  # a bare state_dict
    return None


def checkpoint_in(target: Path, name: str) -> Path:
    """A checkpoint given as itself, or as its run directory (which then must hold `name`)."""
    if not target.is_dir():
        return target
    path = target / name
    if not path.exists():
        why = ("it is still training, was stopped, failed, or ran with --no-save-model"
               if name == rundir.MODEL else
               "it ended before its first save, or ran with --no-save-model")
        raise PtrainError(f"{target} has no {name} ({why}); name a checkpoint file instead")
    return path
