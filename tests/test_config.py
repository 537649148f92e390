import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

from pytorch_cli.data import catalog
from pytorch_cli.models import zoo as models
from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import config as configlib
from pytorch_cli.settings import rules, tomlfile
from pytorch_cli.settings.declare import declared
from pytorch_cli.store import checkpoint, rundir
from pytorch_cli.training import optim


def test_choices_are_the_registries_own():
    s = declared(configlib.TrainConfig)
    assert s["dataset"].choices == catalog.DATASETS == (*catalog.SPECS, "folder")
    assert s["model"].suggest == tuple(models.MODELS) and s["init"].choices == tuple(models.INITS)
    # the model is open to torchvision:/timm: names, held to their form
    for name in (*models.MODELS, "torchvision:resnet18", "timm:convnext_tiny.fb_in1k"):
        configlib.validate(configlib.TrainConfig(model=name))
    for name in ("resnet", "torchvision:", "keras:resnet50", "timm:a b"):
        with pytest.raises(UsageError, match="--model must be one of lenet.*torchvision:NAME"):
            configlib.validate(configlib.TrainConfig(model=name))
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
    ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "is not valid TOML: nested too deeply"),
    ("seed = 1" + "0" * 5000 + "\n", "holds an integer of more than 4300 digits"),
    ("lr = 1" + "0" * 400 + "\n", "lr must be a finite number, got an integer too large"),
    ("lr = nan\n", "--lr must be a finite number, got nan"),
    ("epochs = inf\n", "--epochs must be a finite number, got inf"),
    ("seed = -1\n", r"--seed must be in \[0, 2\*\*63-1\]"),
    ("seed = 18446744073709551615\n", r"--seed must be in \[0, 2\*\*63-1\]"),
    ("workers = 1000\n", r"--workers must be at most 64 \(.*\), got 1000 \(from .*bad.toml\)$"),
    ("batch_size = 1" + "0" * 30 + "\n", "--batch-size must be a 64-bit integer"),
    ('data_dir = "a\\nb"\n', "--data-dir must be a path without control characters"),
    ('data_dir = "a\\u0000b"\n', "--data-dir must be a path without control characters"),
    ('name = ""\n', "unknown key 'name'"),  # how a session runs is no config key
    ('run_dir = ""\n', "unknown key 'run_dir'"),
])
def test_bad_config_files_are_clear_errors(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UsageError, match=match):
        configlib.resolve(f)


@pytest.mark.parametrize("mode", rules.CUDA_GRAPH_MODES)
def test_cuda_graphs_with_gradient_accumulation_are_refused_with_the_way_out(mode):
    with pytest.raises(UsageError, match=rf"--compile-mode {mode} .* with --grad-accum 2 use "
                                         r"--compile-mode default \(or --grad-accum 1\)"):
        configlib.resolve(overrides={"compile": True, "compile_mode": mode, "grad_accum": 2})
    for fine in ({"compile_mode": mode}, {"compile_mode": "default", "grad_accum": 2}):
        configlib.resolve(overrides={"compile": True, "compile_mode": mode, **fine})


def test_inductors_modes_are_refused_with_another_backend():
    with pytest.raises(UsageError, match="--compile-mode max-autotune is inductor's: with "
                                         "--compile-backend eager use --compile-mode default"):
        configlib.resolve(overrides={"compile": True, "compile_mode": "max-autotune",
                                     "compile_backend": "eager"})
    configlib.resolve(overrides={"compile": True, "compile_backend": "aot_eager"})


def test_a_config_saved_with_a_byte_order_mark_reads_and_other_bytes_are_one_line(tmp_path):
    """Notepad's UTF-8 starts with a byte-order mark, which TOML itself refuses."""
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbflr = 0.5\n")
    assert configlib.resolve(tmp_path / "bom.toml").lr == 0.5
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\nlr = 0.5\n")
    with pytest.raises(UsageError, match=r"latin1.toml: not UTF-8 text \(invalid continuation "
                                         r"byte at byte 5\)$"):
        configlib.resolve(tmp_path / "latin1.toml")


def test_missing_config_file():
    with pytest.raises(UsageError, match="^config file /nonexistent.toml: no such file$"):
        configlib.resolve(Path("/nonexistent.toml"))


def test_shipped_presets_are_valid():
    root = Path(__file__).parent.parent / "configs"
    presets = {p.stem: configlib.resolve(p) for p in root.glob("*.toml")}
    assert set(presets) >= {"mnist", "fashion-mnist", "cifar10", "cifar100"}
    assert presets["cifar10"].model == "resnet18"


def test_the_cifar100_preset_trains_on_cifar100_files_and_counts_100_classes(tmp_path, ptrain):
    from conftest import write_cifar100_python
    write_cifar100_python(tmp_path / "data", n_train=64, n_test=40)
    preset = Path(__file__).parent.parent / "configs/cifar100.toml"
    r = ptrain("train", "--config", str(preset), "--data-dir", str(tmp_path / "data"),
               "--model", "lenet", "--max-steps", "2", "--batch-size", "32", "--run-dir", "r")
    assert r.code == 0, r.err
    saved = (tmp_path / "r/config.toml").read_text()
    assert 'dataset = "cifar100"' in saved and "epochs = 200" in saved
    assert len(checkpoint.load(tmp_path / "r/model.pth")["meta"]["classes"]) == 100


def test_a_renamed_setting_keeps_its_old_name_in_flags_files_and_checkpoints(ptrain, tmp_path):
    """--bias-lr-scale became --norm-lr-scale (it scales the norm layers, not the biases)."""
    (tmp_path / "old.toml").write_text("bias-lr-scale = 8.0\n")
    assert configlib.resolve(tmp_path / "old.toml").norm_lr_scale == 8.0
    assert configlib.from_dict({"bias_lr_scale": 4.0}).norm_lr_scale == 4.0  # an old last.pt
    for both in ("bias_lr_scale = 2.0\nnorm_lr_scale = 3.0\n", "norm-lr-scale = 2.0\n"
                 "norm_lr_scale = 3.0\n"):  # neither wins silently
        (tmp_path / "both.toml").write_text(both)
        with pytest.raises(UsageError, match=r"both.toml: '.*' and 'norm_lr_scale' are the same "
                                             "setting; keep one of them"):
            configlib.resolve(tmp_path / "both.toml")
    r = ptrain("train", "--dataset", "fake", "--max-steps", "1", "--run-dir", "r", "--quiet",
               "--model", "fast-cnn", "--bias-lr-scale", "2")
    assert r.code == 0, r.err
    assert "norm_lr_scale = 2.0" in (tmp_path / "r/config.toml").read_text()


def test_a_config_that_is_no_regular_file_is_refused_before_it_is_opened(ptrain, tmp_path):
    """A FIFO would block the read forever, /dev/zero never ends: stat() first, one line."""
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "folder.toml").mkdir()
    cases = {"fifo.toml": "a FIFO", "/dev/zero": "a device", "folder.toml": "a directory"}
    with _deadline(10):  # a regression fails here instead of blocking the suite
        for path, kind in cases.items():
            r = ptrain("train", "--dataset", "fake", "--dry-run", "--config", path)
            assert r.code == 2 and r.err.count("\n") == 1, r.err
            assert f"config file {path}: not a regular file ({kind})" in r.err
    empty = ptrain("train", "--dataset", "fake", "--dry-run", "--config", "")
    assert empty.code == 2 and "--config names no file: pass a TOML file" in empty.err


def test_a_config_file_over_the_size_cap_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(tomlfile.MAX_CONFIG_BYTES + 1)  # sparse: no megabyte written
    with pytest.raises(UsageError, match=r"big.toml: larger than 1 MiB, the most it may be$"):
        configlib.resolve(big)


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise in the test, rather than hang, if what it runs blocks (SIGALRM, main thread)."""
    def expire(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# absurd values of every numeric setting: each must be one usage error naming its flag
HUGE = {int: [10**30, -10**30], float: [1e308, -1e308, float("nan"), float("inf")]}
HARMLESS = {("clip_grad", 1e308)}  # a clip that never clips


@pytest.mark.parametrize("name", [n for n, t in configlib.FIELD_TYPES.items()
                                  if t[0] in HUGE])
def test_every_numeric_setting_refuses_absurd_values(name):
    for value in HUGE[configlib.FIELD_TYPES[name][0]]:
        if (name, value) in HARMLESS:
            continue
        with pytest.raises(UsageError, match="--" + name.replace("_", "-")):
            configlib.resolve(overrides={name: value})


@pytest.mark.parametrize("value, size", [
    (0, None), ("0", None), (28, (28, 28)), ("28", (28, 28)), ("24x32", (24, 32)),
    (" 96X128 ", (96, 128)), ("3x5", "bad"), ("2000", "bad"), ("24x", "bad"), ("axb", "bad"),
    ("24x32x3", "bad"), (-5, "bad"), ("1e3", "bad"), (10**30, "bad"), ("24x2000", "bad")])
def test_image_size_takes_n_or_height_by_width(value, size):
    if size == "bad":
        with pytest.raises(UsageError, match=r"--image-size must be 0 \(auto\), N or HxW, each "
                                             r"side 4 to 1024"):
            configlib.resolve(overrides={"dataset": "folder", "image_size": value})
        return
    cfg = configlib.resolve(overrides={"dataset": "folder", "image_size": value})
    assert catalog.parse_size(cfg.image_size) == size


def test_image_size_in_a_file_is_a_number_or_a_string(tmp_path):
    for text, size in (("image_size = 24", (24, 24)), ('image_size = "24x32"', (24, 32))):
        (tmp_path / "c.toml").write_text(f'dataset = "folder"\n{text}\n')
        cfg = configlib.resolve(tmp_path / "c.toml")
        assert catalog.parse_size(cfg.image_size) == size


def test_plateau_refuses_a_warmup_with_the_way_out():
    with pytest.raises(UsageError, match=r"^--scheduler plateau has no warmup .* drop "
                                         r"--warmup-epochs, or warm up with --scheduler linear"):
        configlib.resolve(overrides={"scheduler": "plateau", "warmup_epochs": 1.0})


@pytest.mark.parametrize("given, says, fine", [
    ({"gamma": 0.5}, "--gamma is the LR factor of --scheduler step and plateau; --scheduler "
     "none has none",
     {"scheduler": "step"}),
    ({"plateau_patience": 4}, "--plateau-patience is --scheduler plateau's; --scheduler cosine "
     "has none",
     {"scheduler": "plateau"}),
    ({"final_lr": 0.1}, "--final-lr is where --scheduler cosine and linear end; --scheduler "
     "step has none",
     {"scheduler": "linear"}),
    ({"warmup_start": 0.2}, "--warmup-start is where --warmup-epochs' linear warmup starts",
     {"warmup_epochs": 1}),
    ({"lookahead_decay": 0.9}, "--lookahead-decay is --lookahead-every's",
     {"lookahead_every": 5}),
    ({"momentum": 0.9, "optimizer": "adam"}, "--momentum is --optimizer sgd's and rmsprop's; "
     "--optimizer adam has none", {"optimizer": "rmsprop"}),
    ({"min_delta": 0.1}, "--min-delta is the gain --patience and --scheduler plateau count",
     {"patience": 2}),
    ({"crop_pad": 3, "augment": "none"}, "--crop-pad is the padding of --augment's crops; "
     "--augment none pads nothing on mnist", {"augment": "crop"}),
    ({"crop_pad": 3, "augment": "auto"}, "--augment auto pads nothing on mnist",  # MNIST's own
     {"dataset": "cifar10"}),
    ({"pad_mode": "reflect", "augment": "none"}, "--pad-mode is how --augment's crops are "
     "padded", {"augment": "randaugment"}),
    ({"flip": "alternate", "augment": "crop"}, "--flip is how --augment crop-flip (and the "
     "policies after it) flips; --augment crop flips nothing", {"augment": "crop-flip"}),
    ({"crop_scale": 0.3, "augment": "crop-flip"}, "--crop-scale is the smallest crop of --augment "
     "resized-crop; --augment crop-flip is not it", {"augment": "resized-crop"}),
    ({"crop_pad": 3, "augment": "resized-crop"}, "--augment resized-crop pads nothing",
     {"augment": "crop"}),
    ({"test_split": 0.9}, "--test-split is the share of a folder's images held out for testing; "
     "mnist has its own test set", {"dataset": "folder", "data_dir": "x"}),
    ({"compile_mode": "max-autotune"}, "--compile-mode is --compile's", {"compile": True}),
    ({"compile_backend": "eager"}, "--compile-backend is --compile's", {"compile": True}),
    ({"bias_decay": True}, "--bias-decay applies --weight-decay to biases and norm layers",
     {"weight_decay": 0.1}),
    ({"save_interval": 5, "save_model": False}, "--save-interval is how often last.pt is "
     "written mid-epoch; --no-save-model writes none", {"save_model": True}),
    ({"backbone_lr_scale": 0.1, "freeze": "backbone"}, "--backbone-lr-scale is the LR of the "
     "layers --freeze backbone keeps frozen all run", {"unfreeze_at": 1}),
    ({"layer_decay": 0.7, "freeze": "backbone", "model": "timm:resnet18"}, "--layer-decay "
     "scales the LR of the layers --freeze backbone keeps frozen all run", {"unfreeze_at": 1})])
def test_a_setting_of_a_feature_left_off_is_refused_not_ignored(given, says, fine):
    """Each had no effect (a hostile trial found adam's momentum, crop's flip... silently
    dropped, while config.toml recorded them); a config saved before loads, with the default."""
    name, *context = given
    scheduler = {"plateau_patience": "cosine", "final_lr": "step"}.get(name, "none")
    with pytest.raises(UsageError, match=re.escape(says)):
        configlib.resolve(overrides={**given, "scheduler": scheduler})
    configlib.resolve(overrides={**given, "scheduler": scheduler, **fine})  # with it: taken
    old = configlib.from_dict({**given, "scheduler": scheduler})  # a run of an older ptrain
    assert old.to_dict() == configlib.TrainConfig(  # loads, the setting at its default
        scheduler=scheduler, **{k: given[k] for k in context}).to_dict()


def test_a_flag_typed_at_its_default_with_its_feature_off_is_refused_too(tmp_path):
    """A hostile trial: `--optimizer adam --momentum 0.5` (momentum's default) passed while 0.9
    was refused. A config file's default value is not typed: a run's config.toml, with every
    setting in it, still takes --optimizer adam."""
    with pytest.raises(UsageError, match="--momentum is --optimizer sgd's and rmsprop's"):
        configlib.resolve(overrides={"optimizer": "adam", "momentum": 0.5})
    (tmp_path / "all.toml").write_text("momentum = 0.5\n")
    assert configlib.resolve(tmp_path / "all.toml", {"optimizer": "adam"}).optimizer == "adam"


def test_max_steps_0_lifts_a_config_files_cap(tmp_path):
    """A hostile trial could not re-run a --max-steps run's config.toml in full: 0 was refused."""
    (tmp_path / "cut.toml").write_text("max_steps = 5\n")
    assert configlib.resolve(tmp_path / "cut.toml").max_steps == 5
    assert configlib.resolve(tmp_path / "cut.toml", {"max_steps": 0}).max_steps is None
    with pytest.raises(UsageError, match="--max-steps must be 0 or more"):
        configlib.resolve(overrides={"max_steps": -1})


def test_a_setting_a_config_file_gave_is_named_with_its_file_when_a_flag_turns_it_off(
        tmp_path):
    """A preset's momentum, then --optimizer adam typed: the file is named, not just the flag."""
    (tmp_path / "preset.toml").write_text("momentum = 0.9\n")
    with pytest.raises(UsageError, match=re.escape(
            f"--momentum is --optimizer sgd's and rmsprop's; --optimizer adam has none (from "
            f"{tmp_path / 'preset.toml'})")):
        configlib.resolve(tmp_path / "preset.toml", {"optimizer": "adam"})
    # ...and a flag typed at its default puts the file's value back, so the preset runs with
    # adam (no command line could: a hostile trial)
    (tmp_path / "sgd.toml").write_text("momentum = 0.9\nnesterov = true\n")
    cfg = configlib.resolve(tmp_path / "sgd.toml", {"optimizer": "adam", "momentum": 0.5,
                                                    "nesterov": False})
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov) == ("adam", 0.5, False)


def test_onecycles_own_warmup_and_a_mix_of_no_batch_are_refused():
    with pytest.raises(UsageError, match="a --scheduler other than onecycle"):
        configlib.resolve(overrides={"scheduler": "onecycle", "warmup_epochs": 1,
                                     "warmup_start": 0.5})
    with pytest.raises(UsageError, match="^--mix-prob 0 mixes no batch"):
        configlib.resolve(overrides={"mixup": 0.2, "mix_prob": 0.0})
    old = configlib.from_dict({"mixup": 0.2, "mix_prob": 0.0})  # a run saved before: it loads
    assert (old.mixup, old.mix_prob) == (0.0, 1.0)  # as what it did: no mixing


def test_ema_and_lookahead_are_refused_together():
    with pytest.raises(UsageError, match="^--ema and --lookahead-every both keep an average"):
        configlib.resolve(overrides={"ema": 0.99, "lookahead_every": 5})


def test_resize_needs_a_folder_and_an_image_size():
    """--resize fits a folder's images to --image-size: refused where it would do nothing."""
    with pytest.raises(UsageError, match="^--resize is how a folder's images meet --image-size: "
                       "it needs --dataset folder$"):
        configlib.resolve(overrides={"resize": "crop", "dataset": "fake", "image_size": 32})
    with pytest.raises(UsageError, match="so --resize pad would do nothing$"):
        configlib.resolve(overrides={"resize": "pad", "dataset": "folder"})
    assert configlib.resolve(overrides={"resize": "pad", "dataset": "folder",
                                        "image_size": "24x32"}).resize == "pad"
