"""--wandb: a real W&B offline run (not logged in: no key, no ~/.netrc), read back from the
records W&B wrote in the run directory, with W&B's own protobuf definitions."""

import json
from pathlib import Path

import pytest
from conftest import read_metrics

pytest.importorskip("wandb")

RUN = ["--dataset", "fake", "--model", "lenet", "--log-interval", "10", "--quiet",
       "--run-dir", "r", "--wandb"]


@pytest.fixture(autouse=True)
def logged_out(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def _records(path: Path):
    """The protobuf records of a .wandb file: LevelDB's log format (32 KiB blocks of chunks,
    each a 7-byte header: CRC, length, type) after W&B's 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, chunks = path.read_bytes(), 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            yield record
            chunks = b""


def run_record(path: Path):
    """The run's own record: run_id, project, run_group, the config at the start..."""
    return next(r.run for r in _records(path) if r.WhichOneof("record_type") == "run")


def _logged(path: Path) -> tuple[dict, dict]:
    """({step: {key: value}} of the history, the config)."""
    history, config = {}, {}
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in record.history.item}
            history.setdefault(items.pop("_step"), {}).update(items)
        elif kind in ("run", "config"):  # the config at the start, then any update
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({i.key: json.loads(i.value_json) for i in updates})
    return history, config


def test_an_offline_run_in_the_run_directory_holds_the_metrics_and_config(ptrain, tmp_path):
    assert ptrain("train", *RUN, "--epochs", "2", "--lr", "0.05").code == 0
    run_id = json.loads((tmp_path / "r/trackers.json").read_text())["wandb"]
    [log] = (tmp_path / "r/wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    history, config = _logged(log)
    assert config["lr"] == 0.05 and config["model"] == "lenet"
    for epoch in read_metrics(tmp_path / "r", kinds=("epoch",)):
        assert history[epoch["step"]]["Accuracy/test"] == pytest.approx(epoch["test_acc"])
    trains = read_metrics(tmp_path / "r", kinds=("train",))
    assert all(history[r["step"]]["Loss/train"] == pytest.approx(r["train_loss"])
               for r in trains)


def test_a_resume_continues_the_same_wandb_run(ptrain, tmp_path):
    assert ptrain("train", *RUN, "--epochs", "1").code == 0
    assert ptrain("resume", "r", "--epochs", "2").code == 0
    run_id = json.loads((tmp_path / "r/trackers.json").read_text())["wandb"]
    # (a second run of one id in one second gets a "-1" after its folder's name)
    logs = sorted((tmp_path / "r/wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert len(logs) == 2  # `wandb sync` sends both to the one run
    first, second = _logged(logs[0])[0], _logged(logs[1])[0]
    epochs = read_metrics(tmp_path / "r", kinds=("epoch",))
    assert "Accuracy/test" in first[epochs[0]["step"]]
    assert "Accuracy/test" in second[epochs[1]["step"]]


def test_without_wandb_it_is_one_line_naming_the_extra(ptrain, without):
    without("wandb")
    out = ptrain("train", *RUN)
    assert out.code == 2 and out.err.splitlines() == [
        "ptrain: error: --wandb needs the wandb package: pip install 'pytorch-cli[wandb]'"]
