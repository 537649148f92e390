"""Export a trained model and prove the artifact works: every export is loaded back with its own
runtime and run on a real batch before the command succeeds.

Torch-free to import (each function imports it): the registry's names are the --format choices
that --help and completion list."""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pytorch_cli.platform import files
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.store import outputs, sidecar
from pytorch_cli.store.rundir import BEST, LAST, MODEL

if TYPE_CHECKING:
    import torch
    from torch import nn

TOLERANCE = 1e-4


def need(module: str, extra: str):
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
# full disk is one Python OSError, never a C++ writer aborting halfway through a file. Each
# file carries `about` (the sidecar's description, JSON) in its format's own metadata, under
# EMBEDDED: a copy or rename that leaves the sidecar behind still says what the model is.
EMBEDDED = "ptrain.json"


def _onnx(wrapped: nn.Module, sample: torch.Tensor, about: str):
    import torch
    ort = need("onnxruntime", "onnx")
    need("onnxscript", "onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (sample,), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=_batch_dim(),
                                    verbose=False)
    proto = program.model_proto
    proto.metadata_props.add(key=EMBEDDED, value=about)  # (onnx's metadata_props)
    data = proto.SerializeToString()  # one self-contained file, weights inside
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _pt2(wrapped: nn.Module, sample: torch.Tensor, about: str):
    import torch
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(wrapped, (sample,), dynamic_shapes=_batch_dim()), buffer,
                      extra_files={EMBEDDED: about})
    loaded = torch.export.load(io.BytesIO(buffer.getvalue())).module()
    return buffer.getvalue(), lambda x: loaded(x)


def _torchscript(wrapped: nn.Module, sample: torch.Tensor, about: str):
    import torch
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # deprecated upstream; kept for runtimes that only read it
        warnings.simplefilter("ignore")
        from pytorch_cli.data.batches import ExportInput
        checked = torch.nn.Sequential(torch.jit.script(ExportInput(*sample.shape[1:])), wrapped)
        torch.jit.save(torch.jit.trace(checked, sample), buffer, _extra_files={EMBEDDED: about})
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    return buffer.getvalue(), lambda x: loaded(x)


def _safetensors(wrapped: nn.Module, sample: torch.Tensor, about: str):
    import torch
    st = need("safetensors.torch", "safetensors")
    data = st.save({k: v.contiguous() for k, v in wrapped[1].state_dict().items()},
                   metadata={EMBEDDED: about})
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


def made_from(run: Path) -> list[str]:
    """The files `export` wrote into run directory `run` of its checkpoints, by their default
    names (model.onnx of model.pth...): each with its sidecar, which names the file and the
    checkpoint. A file without one, or of another source, is the user's and stays."""
    found = []
    for name in (Path(c).stem + suffix for c in (MODEL, LAST, BEST)
                 for suffix, _ in FORMATS.values()):
        side = sidecar.read(run / name)
        source = Path(str(side.get("source_checkpoint")))
        if side and side.get("file") == name and source.parent.name in ("", run.name) \
                and source.name in (MODEL, LAST, BEST):
            found += [name, f"{name}.json"]
    return found


def check_output(output: Path, source: Path, fmt: str) -> None:
    """Before any work: neither the output nor its sidecar (OUTPUT.json) may land on the
    checkpoint exported or on a file of a run; the output must be a file named for its format:
    ending, in any case, in the last suffix of FORMATS' (.onnx, .pt2, .pt, .safetensors) or in
    .FORMAT (model.torchscript)."""
    side_path = Path(f"{output}.json")
    suffixes = sorted({"." + FORMATS[fmt][0].rsplit(".", 1)[-1], f".{fmt}"})
    if output.is_dir():
        raise UsageError(f"{output} is a folder; name the file to write, e.g. "
                         f"{output / ('model' + FORMATS[fmt][0])}")
    outputs.refuse_overwrite([output, side_path], {source: "the checkpoint being exported"}, "-o")
    run = output.parent
    if output.name in made_from(run) and source.resolve().parent != run.resolve():
        raise UsageError(f"refusing to write {output}: it is the export of {run}'s own "
                         "checkpoint (its sidecar says so), a file of that run; name another "
                         "file with -o")
    if not output.name.lower().endswith(tuple(suffixes)):
        example = output.with_name((output.name.split(".")[0] or "model") + FORMATS[fmt][0])
        names = " or ".join(f"*{x}" for x in suffixes)
        raise UsageError(f"{output}: an export to {fmt} is named {names} (so that what reads it "
                         f"knows its format); name it e.g. {example}")
    above = next((d for d in output.parents if d.exists()), Path("."))
    if not above.is_dir():
        raise UsageError(f"cannot write {output}: {above} is a file, not a folder")
    if side_path.is_dir():
        raise UsageError(f"{side_path} is a folder, and the export's metadata goes there; "
                         "move it away or name another output with -o")


def _not_finite(model: nn.Module, source: str) -> PtrainError:
    import torch
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return PtrainError(f"{source}: the model's weights are not finite (NaN or infinity in "
                           f"{bad[0]}{more}); nothing was written: export a checkpoint from "
                           "before the run diverged")
    return PtrainError(f"{source}: the model's outputs on the verification batch are not finite "
                       "(the weights overflow, or the normalisation is not finite); nothing was "
                       "written")


def export(model: nn.Module, normalize: nn.Module, meta: dict, sample: torch.Tensor, fmt: str,
           output: Path, source: str, verified_on: str = "") -> dict:
    """Write `output` (+ `output.json`) of normalize-then-model, which takes float images in
    [0, 1]; verify it against the eager model on `sample` (`verified_on` says what it is). On a
    mismatch above TOLERANCE, or any output that is not finite, nothing is written. `meta`:
    the run's, with its "resize" and "precision"."""
    import torch
    from torch import nn
    wrapped = nn.Sequential(normalize, model).cpu().eval()
    sample = sample.cpu()
    with torch.inference_mode():
        expected = wrapped(sample)
    if not torch.isfinite(expected).all():  # NaN == NaN is no verification
        raise _not_finite(model, source)
    about = sidecar.describe(meta, fmt, output, source)
    embedded = sidecar.as_json(about, source)  # checked before the slow part
    try:
        data, run = FORMATS[fmt][1](wrapped, sample, embedded)
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
    if not diff <= TOLERANCE:  # (NaN compares False either way: so, not `diff > TOLERANCE`)
        how = f"exceeds {TOLERANCE}" if math.isfinite(diff) else "is not finite"
        raise PtrainError(f"export to {fmt} failed verification: max abs difference {diff:.3g} "
                          f"from the eager model {how}; nothing was written")
    verified = {"max_abs_diff": diff, "verified_batch": len(sample),
                **({"verified_on": verified_on} if verified_on else {})}
    write_pair(output, data, sidecar.as_json({**about, **verified}, source))
    return {"output": str(output), "sidecar": f"{output}.json", "max_abs_diff": diff,
            "format": fmt}


def write_pair(output: Path, data: bytes, text: str) -> None:
    """The export and its sidecar, both or neither (files.atomic_write_pair); folders it had to
    make are removed again on failure."""
    made = [d for d in output.parents if not d.exists()]  # innermost first
    side_path = Path(f"{output}.json")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write_pair(output, data, side_path, text.encode())
    except files.PairTorn:
        raise PtrainError(f"cannot write {side_path}; {output} is the new export, its "
                          f"{side_path.name} is the old one: export again") from None
    except OSError as e:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise PtrainError(f"cannot write {e.filename or output}: {e.strerror or e}; nothing was "
                          f"written (the previous {output.name} and its .json, if any, are "
                          "intact)") from None
