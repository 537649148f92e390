from pathlib import Path

import pytest

from pytorch_cli.settings import config as configlib
from pytorch_cli.data import catalog, datasets
from pytorch_cli.store import export, rundir
from pytorch_cli.models import zoo as models
from pytorch_cli.training import optim
from pytorch_cli.platform.errors import UsageError


def test_registries_and_config_choices_agree():
    assert set(configlib.DATASETS) == set(catalog.SPECS)
    assert set(configlib.MODELS) == set(models.MODELS)
    assert set(configlib.OPTIMIZERS) == set(optim.OPTIMIZERS)
    assert set(configlib.SCHEDULERS) == set(optim.SCHEDULES)
    assert set(configlib.INITS) == set(models.INITS)
    assert configlib.EXPORT_FORMATS == tuple(export.FORMATS)  # --help lists them without torch


def test_defaults_are_the_argparse_examples():
    c = configlib.TrainConfig()
    assert (c.batch_size, c.test_batch_size, c.epochs, c.lr, c.momentum, c.seed, c.log_interval) == \
        (64, 1000, 10, 0.01, 0.5, 1, 10)
    assert (c.model, c.optimizer, c.dataset) == ("lenet", "sgd", "mnist")


def test_file_overrides_defaults_and_flags_override_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('lr = 1\nepochs = 3\nmodel = "mnist-cnn"\nbatch-size = 32\n')
    cfg = configlib.resolve(f, {"epochs": 5})
    assert (cfg.lr, cfg.epochs, cfg.model, cfg.batch_size) == (1.0, 5, "mnist-cnn", 32)
    assert isinstance(cfg.lr, float)


def test_resolved_config_round_trips(tmp_path):
    cfg = configlib.TrainConfig(dataset="cifar10", data_dir='we"ird\\dir', lr=0.05, nesterov=True,
                                momentum=0.9, warmup_epochs=1.5)
    f = tmp_path / "config.toml"
    f.write_text(rundir.config_toml(cfg.to_dict()))
    assert configlib.resolve(f) == cfg


@pytest.mark.parametrize("text,match", [
    ("lrr = 0.1\n", "unknown key 'lrr'"),
    ('epochs = "ten"\n', "epochs must be float"),
    ("batch_size = 2.5\n", "batch_size must be int"),
    ("lr = [\n", "not valid TOML"),
    ("lr = -1\n", "--lr must be greater than 0"),
    ('optimizer = "lbfgs"\n', "--optimizer must be one of sgd"),
])
def test_bad_config_files_are_clear_errors(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UsageError, match=match):
        configlib.resolve(f)


def test_missing_config_file():
    with pytest.raises(UsageError, match="does not exist"):
        configlib.resolve(Path("/nonexistent.toml"))


def test_shipped_presets_are_valid():
    root = Path(__file__).parent.parent / "configs"
    presets = {p.stem: configlib.resolve(p) for p in root.glob("*.toml")}
    assert set(presets) >= {"mnist", "fashion-mnist", "cifar10"}
    assert presets["cifar10"].model == "resnet18"


def test_optional_fields_take_their_type_or_stay_unset(tmp_path):
    # a field typed `int | None` (resolved from the string annotation) accepts an int from TOML
    # and stays None when the key is absent; TOML has no null, so the file leaves it out
    from dataclasses import dataclass

    @dataclass
    class Later:
        max_steps: "int | None" = None
        lr: float = 0.1

    types = configlib.field_types(Later)
    assert types == {"max_steps": (int, type(None)), "lr": (float,)}
    assert configlib.coerce(types["max_steps"], "max_steps", 500, "f.toml") == 500
    assert configlib.coerce(types["lr"], "lr", 1, "f.toml") == 1.0
    with pytest.raises(UsageError, match="max_steps must be int, got 'many'"):
        configlib.coerce(types["max_steps"], "max_steps", "many", "f.toml")
    with pytest.raises(UsageError, match="max_steps must be int, got True"):
        configlib.coerce(types["max_steps"], "max_steps", True, "f.toml")
