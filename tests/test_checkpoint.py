"""Checkpoint files: atomic writes under real SIGKILLs, weights-only loads, formats."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

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


def test_sigkill_during_checkpoint_writes_never_loses_the_previous_one(tmp_path):
    target = tmp_path / "last.pt"
    rng = random.Random(0)
    seen = set()
    for _ in range(8):
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
    with pytest.raises(PtrainError, match="refused to load: it asks to run posix.system"):
        checkpoint.load(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_a_newer_checkpoint_version_is_refused_with_advice(tmp_path):
    torch.save(
        {"format": checkpoint.MODEL_FORMAT, "version": checkpoint.VERSION + 1}, tmp_path / "new.pth"
    )
    with pytest.raises(PtrainError, match="written by a newer ptrain.*upgrade ptrain"):
        checkpoint.load(tmp_path / "new.pth")


def test_weights_of_every_file_kind(tmp_path):
    w = {"fc.weight": torch.ones(2, 2)}
    assert checkpoint.weights({"format": checkpoint.MODEL_FORMAT, "state_dict": w}) is w
    assert checkpoint.weights({"format": checkpoint.STATE_FORMAT, "model": w}) is w
    assert checkpoint.weights(w) is w
    assert checkpoint.weights({"hello": 1}) is None
    checkpoint.save_model_file(tmp_path / "m.pth", w, {"model": "x"}, {}, {"test_acc": 0.5})
    saved = checkpoint.load(tmp_path / "m.pth")
    assert saved["version"] == checkpoint.VERSION and torch.equal(
        checkpoint.weights(saved)["fc.weight"], w["fc.weight"]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
