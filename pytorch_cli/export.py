"""Export a trained model and prove the artifact works: every export is loaded back with its own
runtime and run on a real batch before the command succeeds."""

from __future__ import annotations

import copy
import importlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pytorch_cli.checkpoint import atomic_write
from pytorch_cli.errors import PtrainError

TOLERANCE = 1e-4
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt",
            "safetensors": ".safetensors"}


def _need(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PtrainError(f"this export needs the optional package {module}: "
                          f"pip install 'pytorch-cli[{extra}]'") from None


def _batch_dim():
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)  # per positional input


def _onnx(wrapped: nn.Module, sample: torch.Tensor, path: Path):
    ort = _need("onnxruntime", "onnx")
    _need("onnxscript", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # external_data=False: one self-contained file (these models are small), so a copied or
        # renamed model.onnx still runs; weights beside it would name the temporary file.
        torch.onnx.export(wrapped, (sample,), str(path), dynamo=True, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=_batch_dim(), verbose=False,
                          external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _pt2(wrapped: nn.Module, sample: torch.Tensor, path: Path):
    program = torch.export.export(wrapped, (sample,), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    return lambda x: loaded(x)


def _torchscript(wrapped: nn.Module, sample: torch.Tensor, path: Path):
    with warnings.catch_warnings():  # deprecated upstream; kept for runtimes that only read it
        warnings.simplefilter("ignore")
        torch.jit.trace(wrapped, sample).save(str(path))
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def _safetensors(wrapped: nn.Module, sample: torch.Tensor, path: Path):
    st = _need("safetensors.torch", "safetensors")
    st.save_file({k: v.contiguous() for k, v in wrapped[1].state_dict().items()}, str(path))
    clone = copy.deepcopy(wrapped)
    with torch.no_grad():
        for tensor in clone[1].state_dict().values():
            tensor.zero_()  # so the outputs can only come from the file's weights
    clone[1].load_state_dict(st.load_file(str(path)))
    return lambda x: clone(x)


EXPORTERS = {"onnx": _onnx, "pt2": _pt2, "torchscript": _torchscript, "safetensors": _safetensors}


def export(model: nn.Module, normalize: nn.Module, meta: dict, sample: torch.Tensor, fmt: str,
           output: Path, source: str) -> dict:
    """Write `output` (+ `output.json`) of normalize-then-model, which takes float images in
    [0, 1]; verify it against the eager model on `sample`. On a mismatch above TOLERANCE
    nothing is written."""
    wrapped = nn.Sequential(normalize, model).cpu().eval()
    sample = sample.cpu()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp{os.getpid()}-{output.name}")  # keeps the suffix runtimes check
    try:
        with torch.inference_mode():
            expected = wrapped(sample)
        try:
            run = EXPORTERS[fmt](wrapped, sample, tmp)
        except PtrainError:
            raise
        except Exception as e:  # the exporter's own failure: one line, with its reason
            reason = (str(e).strip().splitlines() or [""])[0][:300]
            raise PtrainError(f"export to {fmt} failed ({type(e).__name__}: {reason}); "
                              "nothing was written") from None
        with torch.inference_mode():
            got = run(sample)
            small = run(sample[:3])  # a second batch size: the batch dimension is dynamic
        diff = max((got - expected).abs().max().item(),
                   (small - expected[:3]).abs().max().item())
        if diff > TOLERANCE:
            raise PtrainError(f"export to {fmt} failed verification: max abs difference {diff:.3g} "
                              f"from the eager model exceeds {TOLERANCE}; nothing was written")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before it takes the real name
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = {"format": fmt, "file": output.name, "source_checkpoint": source,
               "model": meta["model"], "dataset": meta["dataset"], "classes": meta["classes"],
               "input_shape": ["batch", meta["in_channels"], meta["image_size"], meta["image_size"]],
               "input": "float32 images in [0, 1], NCHW" if fmt != "safetensors"
                        else "weights only: normalise inputs with mean/std yourself",
               "normalization_in_graph": fmt != "safetensors",
               "mean": meta["mean"], "std": meta["std"], "max_abs_diff": diff,
               "verified_batch": len(sample)}
    text = json.dumps(sidecar, indent=2) + "\n"
    atomic_write(Path(f"{output}.json"), lambda f: f.write(text.encode()))
    return {"output": str(output), "sidecar": f"{output}.json", "max_abs_diff": diff,
            "format": fmt}
