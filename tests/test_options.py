"""One declaration per setting: the train and resume options, the TOML keys, the typed-flag
overrides and README's flag table all come from (or are checked against) the fields."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from pytorch_cli.commands.cli import app
from pytorch_cli.data import catalog
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings.declare import declared, flag
from pytorch_cli.settings.run import RunOptions

README = Path(__file__).resolve().parents[1] / "README.md"


def _command(name):
    import typer.main
    return typer.main.get_command(app).commands[name]


def _spellings(command) -> dict[str, list[str]]:
    """parameter name -> every flag that sets it (--x, --no-x, aliases)."""
    return {
        p.name: [*p.opts, *p.secondary_opts] for p in command.params if p.opts[0].startswith("-")
    }


def test_train_has_one_option_per_setting_and_run_option_named_as_the_field():
    params = _spellings(_command("train"))
    fields = [f.name for f in dataclasses.fields(configlib.TrainConfig)]
    run = [f.name for f in dataclasses.fields(RunOptions)]
    assert sorted(params) == sorted(["config", *fields, *run])
    for name in fields:  # the typed-flags override finds each of them by its field's name
        assert flag(name) in params[name] or declared(configlib.TrainConfig)[name].flags


def test_resume_takes_what_a_resume_may_change():
    params = _spellings(_command("resume"))
    assert sorted(params) == sorted(["epochs", "data_dir", "labels", "test_batch_size", "device",
                                     "workers", "tensorboard", "mlflow", "wandb", "profile",
                                     "requeue", "json", "quiet", "model", "dataset", "nproc",
                                     "max_restarts"])
    for tracker in ("tensorboard", "mlflow", "wandb"):  # each started or stopped on a resume
        assert f"--no-{tracker}" in params[tracker]


def _help(*command) -> str:
    from typer.testing import CliRunner
    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


@pytest.mark.parametrize("name", ["eval", "export", "predict", "activations", "summary"])
def test_the_commands_reading_a_saved_model_take_trains_model_dataset_and_device(name):
    """A bare state_dict's --model and --dataset take the names train's do, and --device is
    train's (its help, PTRAIN_DEVICE): declared once, not once per command."""
    train, help = _help("train"), _help(name)
    choices = "--dataset <" + "|".join(catalog.DATASETS) + ">"
    assert choices in train and choices in help
    assert "--model NAME" in train and "--model NAME" in help
    device = "--device <str> auto|cpu|cuda|cuda:N|mps. [env var: PTRAIN_DEVICE; default: auto]"
    assert device in train and (device in help) == (name in ("eval", "predict"))


def test_typed_flags_beat_the_config_file_and_the_rest_keep_its_values(ptrain, tmp_path):
    (tmp_path / "c.toml").write_text('batch-size = 16\nlr = 0.2\nseed = 3\nlog-interval = 5\n'
                                     'model = "lenet"\nchannels-last = true\nmomentum = 0.8\n')
    r = ptrain("train", "--dataset", "fake", "--config", tmp_path / "c.toml", "--max-steps", "1",
               "--run-dir", "r", "--quiet", "--batch-size", "32", "--lr", "0.05", "--model",
               "cifar-net", "--seed", "7", "--log-interval", "3", "--no-channels-last")
    assert r.code == 0, r.err
    saved = tomllib.loads((tmp_path / "r/config.toml").read_text())
    assert {k: saved[k] for k in ("batch_size", "lr", "model", "seed", "log_interval",
                                  "channels_last", "momentum", "max_steps")} == {
        "batch_size": 32, "lr": 0.05, "model": "cifar-net", "seed": 7, "log_interval": 3,
        "channels_last": False, "momentum": 0.8, "max_steps": 1}


def test_readme_flag_table_lists_exactly_the_train_options():
    text = README.read_text().split("## `ptrain train`", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `--")]
    found = set(re.findall(r"--[a-z][a-z0-9-]*", " ".join(rows)))
    params = _spellings(_command("train"))
    every = {f for spellings in params.values() for f in spellings}
    assert found - every == set()  # no flag that does not exist
    missing = [name for name, spellings in params.items() if not found & set(spellings)]
    assert missing == []


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(configlib.TrainConfig)])
def test_every_setting_has_help_or_choices(name):
    s = declared(configlib.TrainConfig)[name]
    assert s.help or s.choices
