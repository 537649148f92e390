"""Checkpoint files: atomic writes under real SIGKILLs, weights-only loads, formats."""

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from PIL import Image
from test_prepare import tiny_run

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo as models
from pytorch_cli.platform.errors import PtrainError
from pytorch_cli.store import checkpoint

WRITER = """
import sys, torch
from pathlib import Path
from pytorch_cli.store.checkpoint import atomic_save
i = 0
while True:
    i += 1
    atomic_save({"i": i, "w": torch.full((1_000_000,), float(i))}, Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_loses_the_previous_one(tmp_path):
    target = tmp_path / "last.pt"
    rng = random.Random(0)
    seen = set()
    for _ in range(5):  # each a process: torch's import is most of the time
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        start = target.stat().st_mtime if target.exists() else 0
        while not target.exists() or target.stat().st_mtime == start:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = checkpoint.load(target)  # always a whole, loadable file
        assert torch.equal(saved["w"], torch.full((1_000_000,), float(saved["i"])))
        seen.add(saved["i"])
    assert len(seen) > 1


def test_saved_state_dicts_drop_ddp_and_compile_prefixes():
    net = models.build("lenet", 1, 10, 28)
    wrapped = torch.compile(nn.DataParallel(net))  # lazy: nothing compiles until called
    assert next(iter(wrapped.state_dict())).startswith("_orig_mod.module.")
    clean = checkpoint.clean_state_dict(wrapped.state_dict())
    assert list(clean) == list(net.state_dict())
    models.build("lenet", 1, 10, 28).load_state_dict(clean)




class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_naming_what_it_would_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "ptrain-model", "meta": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(PtrainError, match="refused to load: it asks to run posix.system, and "
                       "ptrain loads only tensors and plain values; do not use this file$"):
        checkpoint.load(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_a_model_saved_whole_is_refused_saying_to_save_its_state_dict(tmp_path):
    """torch.save(model) is common; the line said only "do not use this file" (a hostile
    trial), which leaves the user no way on."""
    torch.save(torch.nn.Linear(2, 3), tmp_path / "whole.pth")
    with pytest.raises(PtrainError, match=r"it asks to run torch\.nn\.modules\.linear\.Linear, "
                       r"and ptrain loads only tensors and plain values; a model saved whole "
                       r"\(torch\.save\(model, \.\.\.\)\) is such a file: save "
                       r"model\.state_dict\(\) instead, in the code that built it$"):
        checkpoint.load(tmp_path / "whole.pth")


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_raw_pickle_of_a_newer_protocol_is_refused_in_one_line_naming_its_callable(
        tmp_path, monkeypatch, protocol, recwarn):
    """torch's safe loader reads no protocol 4 framing ("Unsupported operand 149"), and warned
    of it on stderr: the names come from the opcodes, nothing runs, no warning is left."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Exploit(), protocol=protocol))
    with pytest.raises(PtrainError, match=r"refused to load: a raw pickle \(protocol 4 or newer, "
                                          r"not torch.save's\) that names posix.system"):
        checkpoint.load(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists() and not recwarn.list


def test_a_newer_checkpoint_version_is_refused_with_advice(tmp_path):
    torch.save(
        {"format": checkpoint.MODEL_FORMAT, "version": checkpoint.VERSION + 1}, tmp_path / "new.pth"
    )
    with pytest.raises(PtrainError, match="written by a newer ptrain.*upgrade ptrain"):
        checkpoint.load(tmp_path / "new.pth")


def test_a_safetensors_file_loads_on_every_torch_and_a_torn_one_is_one_line(tmp_path):
    """torch.load reads safetensors from torch 2.14 on; the GPU machine's 2.11 refused them
    (a safetensors export, and timm's and Hugging Face's weights given to --weights)."""
    from safetensors.torch import save_file
    weights = models.build("lenet", 1, 10, 28).state_dict()
    save_file(weights, tmp_path / "w.safetensors")
    loaded = checkpoint.load(tmp_path / "w.safetensors")
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k])
                                                   for k in weights)
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes((tmp_path / "w.safetensors").read_bytes()[:-1000])  # its header whole
    with pytest.raises(PtrainError, match=r"torn\.safetensors: a damaged safetensors file \("):
        checkpoint.load(torn)


def test_weights_of_every_file_kind(tmp_path):
    w = {"fc.weight": torch.ones(2, 2)}
    assert checkpoint.weights({"format": checkpoint.MODEL_FORMAT, "state_dict": w}) is w
    assert checkpoint.weights({"format": checkpoint.STATE_FORMAT, "model": w}) is w
    assert checkpoint.weights(w) is w
    assert checkpoint.weights({"hello": 1}) is None
    meta = models.describe("lenet", catalog.SPECS["mnist"], [])
    checkpoint.save_model_file(tmp_path / "m.pth", w, meta, {}, {"test_acc": 0.5})
    saved = checkpoint.load(tmp_path / "m.pth")
    assert saved["version"] == checkpoint.VERSION and torch.equal(
        checkpoint.weights(saved)["fc.weight"], w["fc.weight"]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.fixture(scope="session")  # session: made once per xdist worker
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("crafted"))


def _set(path: str, value):
    """An edit of a loaded checkpoint: set (or, with value DELETE, remove) the key at path."""
    def edit(saved: dict) -> None:
        *parents, key = path.split("/")
        for parent in parents:
            saved = saved[parent]
        if value is DELETE:
            del saved[key]
        elif callable(value):
            saved[key] = value(saved[key])
        else:
            saved[key] = value
    return edit


DELETE = object()
FIRST = "conv1.weight"
# (file, what is changed, what the error names); every kind of file every command reads
CRAFTED = [
    ("last.pt", _set("model", DELETE), "has no 'model'"),
    ("last.pt", _set("optimizer", DELETE), "has no 'optimizer'"),
    ("last.pt", _set("config", DELETE), "has no 'config'"),
    ("last.pt", _set("rng/python", DELETE), "RNG state is unusable"),
    ("last.pt", _set("version", "1"), "version is '1'"),
    ("last.pt", _set("position/epoch", -2), "position 'epoch' is -2"),
    ("last.pt", _set("position/step", "x"), "position 'step' is 'x'"),
    ("last.pt", _set("config/lr", "fast"), "saved config is not valid"),
    ("last.pt", _set("meta/image_size", 10 ** 6),
     "'image_size' is 1000000, outside what --image-size takes (4 to 1024)"),
    ("model.pth", _set("state_dict", DELETE), "has no 'state_dict'"),
    ("model.pth", _set("version", "2"), "version is '2'"),
    ("model.pth", _set("meta", [1, 2]), "its 'meta' is a list"),
    ("model.pth", _set("meta/in_channels", -1), "'in_channels' is -1, but fake has 1"),
    ("model.pth", _set("meta", lambda m: {**m, "dataset": "folder", "image_size": 10 ** 6}),
     "'image_size' is 1000000, outside what a folder run has (4 to 1024)"),
    ("model.pth", _set("meta/classes", ["a", "b"]), "'classes' holds 2 entries for 10 outputs"),
    ("model.pth", _set("meta/std", [0.0]), "a std must be above 0"),
    ("model.pth", _set("meta/mean", "0.5"), "'mean' is '0.5', not a list"),
    ("model.pth", _set(f"state_dict/{FIRST}", lambda w: w.to(torch.complex64)), "is complex"),
]


@pytest.mark.parametrize("name,edit,says", CRAFTED, ids=[c[2] for c in CRAFTED])
def test_crafted_checkpoints_are_one_error_naming_file_and_field(ptrain, run, tmp_path, name,
                                                                 edit, says):
    saved = torch.load(run / name, weights_only=True)
    edit(saved)
    crafted = tmp_path / name
    torch.save(saved, crafted)
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    commands = [["eval", crafted], ["export", crafted, "-f", "torchscript", "-o", "out.pt"],
                ["predict", crafted, "digit.png"]]
    if name == "last.pt":
        commands.append(["resume", crafted])
    for command in commands:
        result = ptrain(*command)
        assert result.code == 1, (command, result.err)
        assert str(crafted) in result.err and says in result.err, (command, result.err)
        assert "unexpected" not in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "out.pt").exists()


def test_an_optimizer_state_for_other_parameters_is_one_error_and_the_run_is_kept(ptrain, run,
                                                                                   tmp_path):
    shutil.copytree(run, tmp_path / "run")
    saved = torch.load(run / "last.pt", weights_only=True)
    saved["optimizer"]["param_groups"][0]["params"] = [0]  # one parameter, where the model has more
    torch.save(saved, tmp_path / "run" / "last.pt")
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    result = ptrain("resume", tmp_path / "run", "--epochs", "2")
    assert result.code == 1 and "does not fit this" in result.err
    assert result.err.startswith(f"ptrain: error: {tmp_path / 'run' / 'last.pt'}: ")  # which file
    assert "unexpected" not in result.err
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes().startswith(before)
    assert not (tmp_path / "run" / "run.lock").exists()
