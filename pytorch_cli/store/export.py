"""Export a trained model and prove the artifact works: every export is loaded back with its own
runtime and run on a real batch before the command succeeds.

Torch-free to import (each function imports it): the registry's names are the --format choices
that --help and completion list."""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.platform.files import atomic_write

if TYPE_CHECKING:
    import torch
    from torch import nn

TOLERANCE = 1e-4


def _need(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PtrainError(f"this export needs the optional package {module}: "
                          f"pip install 'pytorch-cli[{extra}]'") from None


def _batch_dim():
    import torch
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)  # per positional input


# Each exporter serialises to bytes in memory and returns (bytes, a runner loaded back from
# those bytes): nothing touches the disk until the verified bytes are written atomically, so a
# full disk is one Python OSError, never a C++ writer aborting halfway through a file.

def _onnx(wrapped: nn.Module, sample: torch.Tensor):
    import torch
    ort = _need("onnxruntime", "onnx")
    _need("onnxscript", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (sample,), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=_batch_dim(),
                                    verbose=False)
    data = program.model_proto.SerializeToString()  # one self-contained file, weights inside
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _pt2(wrapped: nn.Module, sample: torch.Tensor):
    import torch
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(wrapped, (sample,), dynamic_shapes=_batch_dim()), buffer)
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    return buffer.getvalue(), lambda x: loaded(x)


def _torchscript(wrapped: nn.Module, sample: torch.Tensor):
    import torch
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # deprecated upstream; kept for runtimes that only read it
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(wrapped, sample), buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    return buffer.getvalue(), lambda x: loaded(x)


def _safetensors(wrapped: nn.Module, sample: torch.Tensor):
    import torch
    st = _need("safetensors.torch", "safetensors")
    data = st.save({k: v.contiguous() for k, v in wrapped[1].state_dict().items()})
    clone = copy.deepcopy(wrapped)
    with torch.no_grad():
        for tensor in clone[1].state_dict().values():
            tensor.zero_()  # so the outputs can only come from the file's weights
    clone[1].load_state_dict(st.load(data))
    return data, lambda x: clone(x)


# name -> (the file's suffix, its exporter)
FORMATS = {"onnx": (".onnx", _onnx), "pt2": (".pt2", _pt2),
           "torchscript": (".torchscript.pt", _torchscript),
           "safetensors": (".safetensors", _safetensors)}


def export(model: nn.Module, normalize: nn.Module, meta: dict, sample: torch.Tensor, fmt: str,
           output: Path, source: str) -> dict:
    """Write `output` (+ `output.json`) of normalize-then-model, which takes float images in
    [0, 1]; verify it against the eager model on `sample`. On a mismatch above TOLERANCE
    nothing is written."""
    import torch
    from torch import nn
    wrapped = nn.Sequential(normalize, model).cpu().eval()
    sample = sample.cpu()
    with torch.inference_mode():
        expected = wrapped(sample)
    try:
        data, run = FORMATS[fmt][1](wrapped, sample)
    except PtrainError:
        raise
    except Exception as e:  # the exporter's own failure: one line, with its reason
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise PtrainError(f"export to {fmt} failed ({type(e).__name__}: {reason}); "
                          "nothing was written") from None
    with torch.inference_mode():
        got = run(sample)
        small = run(sample[:3])  # a second batch size: the batch dimension is dynamic
    diff = max((got - expected).abs().max().item(), (small - expected[:3]).abs().max().item())
    if diff > TOLERANCE:
        raise PtrainError(f"export to {fmt} failed verification: max abs difference {diff:.3g} "
                          f"from the eager model exceeds {TOLERANCE}; nothing was written")
    sidecar = {
        "format": fmt,
        "file": output.name,
        "source_checkpoint": source,
        "model": meta["model"],
        "dataset": meta["dataset"],
        "classes": meta["classes"],
        "input_shape": ["batch", meta["in_channels"], meta["image_size"], meta["image_size"]],
        "input": "float32 images in [0, 1], NCHW"
        if fmt != "safetensors"
        else "weights only: normalise inputs with mean/std yourself",
        "normalization_in_graph": fmt != "safetensors",
        "mean": meta["mean"],
        "std": meta["std"],
        "max_abs_diff": diff,
        "verified_batch": len(sample),
    }
    text = json.dumps(sidecar, indent=2) + "\n"
    written = False
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda f: f.write(data))
        written = True
        atomic_write(Path(f"{output}.json"), lambda f: f.write(text.encode()))
    except OSError as e:  # a full disk, no permission: no half file, no model without its sidecar
        if written:
            output.unlink(missing_ok=True)
        raise PtrainError(f"cannot write {e.filename or output}: {e.strerror or e}; "
                          "nothing was written") from None
    return {"output": str(output), "sidecar": f"{output}.json", "max_abs_diff": diff,
            "format": fmt}
