from pathlib import Path

import pytest

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo as models
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings.declare import declared
from pytorch_cli.store import rundir
from pytorch_cli.training import optim


def test_choices_are_the_registries_own():
    s = declared(configlib.TrainConfig)
    assert s["dataset"].choices == tuple(catalog.SPECS)
    assert s["model"].choices == tuple(models.MODELS) and s["init"].choices == tuple(models.INITS)
    assert s["optimizer"].choices == tuple(optim.OPTIMIZERS)
    assert s["scheduler"].choices == tuple(optim.SCHEDULES)


def test_defaults_are_the_argparse_examples():
    c = configlib.TrainConfig()
    assert (c.batch_size, c.test_batch_size, c.epochs, c.lr, c.momentum, c.seed,
            c.log_interval) == (64, 1000, 10, 0.01, 0.5, 1, 10)
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


@pytest.mark.parametrize("mode", configlib.CUDA_GRAPH_MODES)
def test_cuda_graphs_with_gradient_accumulation_are_refused_with_the_way_out(mode):
    with pytest.raises(UsageError, match=rf"--compile-mode {mode} .* with --grad-accum 2 use "
                                         r"--compile-mode default \(or --grad-accum 1\)"):
        configlib.resolve(overrides={"compile": True, "compile_mode": mode, "grad_accum": 2})
    for fine in ({"compile_mode": mode}, {"compile_mode": "default", "grad_accum": 2},
                 {"compile": False, "grad_accum": 2}):
        configlib.resolve(overrides={"compile": True, "compile_mode": mode, **fine})


def test_missing_config_file():
    with pytest.raises(UsageError, match="does not exist"):
        configlib.resolve(Path("/nonexistent.toml"))


def test_shipped_presets_are_valid():
    root = Path(__file__).parent.parent / "configs"
    presets = {p.stem: configlib.resolve(p) for p in root.glob("*.toml")}
    assert set(presets) >= {"mnist", "fashion-mnist", "cifar10"}
    assert presets["cifar10"].model == "resnet18"


def test_a_renamed_setting_keeps_its_old_name_in_flags_files_and_checkpoints(ptrain, tmp_path):
    """--bias-lr-scale became --norm-lr-scale (it scales the norm layers, not the biases)."""
    (tmp_path / "old.toml").write_text("bias-lr-scale = 8.0\n")
    assert configlib.resolve(tmp_path / "old.toml").norm_lr_scale == 8.0
    assert configlib.from_dict({"bias_lr_scale": 4.0}).norm_lr_scale == 4.0  # an old last.pt
    r = ptrain("train", "--dataset", "fake", "--max-steps", "1", "--run-dir", "r", "--quiet",
               "--bias-lr-scale", "2")
    assert r.code == 0, r.err
    assert "norm_lr_scale = 2.0" in (tmp_path / "r/config.toml").read_text()
