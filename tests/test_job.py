"""setup(): the job's batch and step counts, the resolved config, seeding and lookahead."""

import copy
import math
import re
import shutil

import pytest
import torch

from pytorch_cli.data import catalog
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.settings.config import TrainConfig
from pytorch_cli.training.epoch import train_epoch
from pytorch_cli.training.job import setup


def _setup(**kw):
    return setup(TrainConfig(dataset="fake", device="cpu", **kw))


# the fake dataset has 2000 training images
@pytest.mark.parametrize("kw,n_batches,total_steps", [
    ({"batch_size": 64}, 32, 320),  # 31 full batches and one of 16; 10 epochs
    ({"batch_size": 100, "epochs": 3}, 20, 60),
    ({"batch_size": 64, "grad_accum": 3, "epochs": 2.5}, 32, 28),  # 11 steps an epoch
    ({"batch_size": 32, "val_split": 0.1, "epochs": 0.5}, 57, 29),  # 1800 images: 28.5 steps
])
def test_batches_and_steps_follow_batch_size_accumulation_and_epochs(kw, n_batches,
                                                                     total_steps):
    job = _setup(**kw)
    assert len(job.train) == 2000 - round(2000 * job.cfg.val_split)
    assert (job.n_batches, job.total_steps) == (n_batches, total_steps)
    assert job.device == torch.device("cpu") and job.amp is None


def test_an_accumulation_longer_than_an_epoch_is_said(capsys):
    """--epochs 0.1 --grad-accum 40 trained a whole epoch, unsaid (a hostile trial)."""
    job = _setup(epochs=0.1, grad_accum=40)
    assert (job.n_batches, job.total_steps) == (32, 1)
    assert capsys.readouterr().err == (
        "warning: --grad-accum 40: an epoch has 32 batches and a step never crosses an epoch's "
        "end, so each step accumulates 32; --epochs 0.1 takes 1 step, each a whole epoch\n")
    _setup(epochs=0.1, grad_accum=32)
    assert capsys.readouterr().err == ""


def test_max_steps_caps_the_run_but_never_extends_it():
    assert _setup(epochs=2, max_steps=5).total_steps == 5
    assert _setup(epochs=2, max_steps=10_000).total_steps == 2 * math.ceil(2000 / 64)


def test_augment_auto_becomes_the_datasets_own():
    cfg = TrainConfig(dataset="fake", device="cpu")
    job = setup(cfg)
    assert job.cfg.augment == catalog.SPECS["fake"].augment == "none"
    assert cfg.augment == "auto"  # the caller's config is left as it was
    assert _setup(augment="crop").cfg.augment == "crop"  # an explicit choice stays


def test_a_reflect_pad_as_wide_as_the_images_is_one_line_before_training():
    """torch's reflect padding must be narrower than a side: at 8x8, 7 fits and 8 is refused
    (it had been an "unexpected" RuntimeError at the first batch, the run marked failed)."""
    fit = dict(model="resnet18", image_size="8", augment="crop", pad_mode="reflect")
    assert _setup(crop_pad=7, **fit).cfg.crop_pad == 7
    with pytest.raises(UsageError, match=r"--pad-mode reflect: a pad of 8 mirrors more than "
                                         r"these 8x8 images hold; pass --crop-pad 7 or less"):
        _setup(crop_pad=8, **fit)


def test_a_norm_lr_scale_on_a_net_without_norm_layers_is_refused_in_a_new_run():
    """lenet has no BatchNorm: --norm-lr-scale there scaled nothing, in silence."""
    with pytest.raises(UsageError, match=r"^--norm-lr-scale: lenet has no norm layer "
                                         r"\(BatchNorm, GroupNorm, LayerNorm\)"):
        _setup(model="lenet", norm_lr_scale=2.0)
    assert _setup(model="resnet18", norm_lr_scale=2.0).cfg.norm_lr_scale == 2.0


def _weights(job):
    return job.state.raw.state_dict()


def test_one_seed_gives_the_same_initial_weights_another_seed_others():
    a, b, c = (_weights(_setup(model="mnist-cnn", seed=s)) for s in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_lookahead_average_starts_as_a_copy_of_the_float_weights():
    assert _setup(model="fast-cnn").state.lookahead_avg is None  # off by default
    job = _setup(model="fast-cnn", lookahead_every=3)
    average, weights = job.state.lookahead_avg, _weights(job)
    assert set(average) == {k for k, v in weights.items() if v.is_floating_point()}
    assert "features.1.num_batches_tracked" in weights  # an integer buffer: not averaged
    assert all(torch.equal(average[k], weights[k]) for k in average)
    with torch.no_grad():
        job.state.raw.fc.weight.add_(1.0)  # training moves the weights, not the average
    assert not torch.equal(average["fc.weight"], job.state.raw.fc.weight)


@pytest.mark.cuda
def test_cuda_setup_makes_its_gpu_current_and_pins_host_evaluation_data():
    last = torch.cuda.device_count() - 1
    try:
        for index in sorted({0, last}):  # cuda:1 and up too, where the machine has them
            job = setup(TrainConfig(dataset="fake", device=f"cuda:{index}", workers=2))
            assert job.device == torch.device("cuda", index)
            assert torch.cuda.current_device() == index
            assert not job.train.images.is_cuda  # --workers: the dataset stays on the host...
            assert job.test.images.is_pinned() and job.test.labels.is_pinned()  # ...pinned
    finally:
        torch.cuda.set_device(0)


def _gray_folder(root, counts):
    """Class folders of random 28x28 gray PNGs, `counts` images each."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for c, n in enumerate(counts):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            pixels = torch.randint(0, 256, (28, 28), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / f"class{c}" / f"{i}.png")
    return root


def test_class_weights_auto_are_inverse_frequencies_with_a_mean_of_1(tmp_path):
    folder = _gray_folder(tmp_path / "imbalanced", (40, 20, 10))
    job = setup(TrainConfig(dataset="folder", data_dir=str(folder), class_weights="auto"))
    counts = torch.bincount(job.train.labels, minlength=3).double()
    assert counts.tolist() == [32, 16, 8]  # 0.2 of each class held out
    assert torch.allclose(job.class_weight.double(), 56 / (3 * counts))
    assert float((job.class_weight[job.train.labels]).mean()) == pytest.approx(1.0)
    assert _setup().class_weight is None


def test_init_from_a_run_loads_what_fits_and_counts_it(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--max-steps", "2", "--epochs", "1",
                  "--run-dir", "source").code == 0
    folder = _gray_folder(tmp_path / "three", (10, 10, 10))
    r = ptrain("train", "--dataset", "folder", "--data-dir", folder, "--init-from", "source",
               "--epochs", "1", "--run-dir", "target")
    assert r.code == 0, r.err
    assert ("weights: 6 of 8 tensors from source/model.pth; new: fc2.weight, fc2.bias; head: "
            "none of the run's classes is one of its 10; 2 of its tensors unused; its "
            "normalisation: mean 0.500, std 0.250") in r.out
    shifted = _gray_folder(tmp_path / "shifted", (10, 10, 10, 10))  # class0..class3
    shutil.rmtree(shifted / "class0")  # class1..class3: two of the source's, one new
    r = ptrain("train", "--dataset", "folder", "--data-dir", shifted, "--init-from", "target",
               "--dry-run")
    assert ("weights: 8 of 8 tensors from target/model.pth; head rows of 2 of the run's 3 "
            "classes taken by name (new: class3); its normalisation") in r.out, r.out
    meta = torch.load(tmp_path / "target" / "model.pth", weights_only=True)["meta"]
    assert (meta["mean"], meta["std"], meta["num_classes"]) == ([0.5], [0.25], 3)
    missing = ptrain("train", "--dataset", "fake", "--init-from", "nowhere", "--epochs", "1")
    assert missing.code == 2 and missing.err.strip() == \
        "ptrain: error: --init-from nowhere: no such run directory or file", missing.err


def test_a_net_the_images_are_too_small_for_is_one_line_before_anything_is_written(ptrain,
                                                                                   tmp_path):
    folder = _gray_folder(tmp_path / "small", (4, 4))
    r = ptrain("train", "--dataset", "folder", "--data-dir", folder, "--image-size", "8",
               "--run-dir", "run")
    assert r.code == 2 and r.err.startswith("ptrain: error: --model lenet cannot take 8x8 "
                                            "images (") and "Traceback" not in r.err
    assert "--image-size N or HxW" in r.err and not (tmp_path / "run").exists()
    r = ptrain("train", "--dataset", "fake", "--image-size", "4x1024", "--run-dir", "run")
    assert r.code == 2 and r.err.startswith("ptrain: error: --model lenet cannot take 4x1024 "
                                            "images (")  # its layers would be negative: it
    assert not (tmp_path / "run").exists()  # had been an unexpected RuntimeError


@pytest.mark.parametrize("craft,said", [
    (lambda s: s["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(7)),
     "its 'momentum_buffer' of shape (7,) is for another parameter than one of shape "
     "(10, 1, 5, 5)"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr="x"),
     "group 0's 'lr' is 'x', not a finite number"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=float("nan")),  # not "a lower --lr"
     "group 0's 'lr' is nan, not a finite number"),
    (lambda s: s["position"].update(batch=10**6),
     "at batch 1000000 of an epoch of 32 batches here"),
])
def test_a_saved_state_its_step_would_fail_on_or_misuse_is_refused_at_setup(craft, said):
    """Fields the checkpoint checks cannot judge without the model and data: an optimizer
    state for other shapes (it failed at the first step, "unexpected"), a hyperparameter that
    is no number (a NaN LR was blamed on --lr), a position past the epoch (an empty epoch 3)."""
    cfg = TrainConfig(dataset="fake", device="cpu", momentum=0.9, epochs=2, max_steps=2)
    job = setup(cfg)
    train_epoch(job, 1)  # 2 steps: the optimizer holds its momentum
    saved = copy.deepcopy(job.state.state_dict())
    craft(saved)
    with pytest.raises(PtrainError, match=re.escape(said)):
        setup(cfg, saved)


def test_a_folder_with_fewer_images_than_its_saved_position_is_named(tmp_path):
    """It blamed the checkpoint alone ("damaged, or from another training set") when images
    had been removed from the folder since (a hostile trial)."""
    folder = _gray_folder(tmp_path / "f", (10, 10))
    cfg = TrainConfig(dataset="folder", data_dir=str(folder), device="cpu", batch_size=2,
                      epochs=2, max_steps=7)
    job = setup(cfg)
    train_epoch(job, 1)  # stopped at batch 7 of 8 (16 training images)
    saved = copy.deepcopy(job.state.state_dict())
    for image in sorted((folder / "class0").iterdir())[:6]:
        image.unlink()
    with pytest.raises(PtrainError, match=re.escape(
            f"at batch 7 of an epoch of 6 batches here: {folder} holds fewer training images "
            "than when it was saved, or it is damaged; resume from")):
        setup(cfg, saved)



def test_compile_compiles_the_ema_average_evaluations_run_on():
    """An --ema run evaluates its average, not the trained model: compiled as well."""
    job = _setup(compile=True, compile_backend="eager", ema=0.9)
    assert job.state.ema._compiled_call_impl is not None
    assert job.state.raw._compiled_call_impl is not None
    assert list(job.state.ema.state_dict()) == list(job.state.raw.state_dict())  # plain keys


def test_crop_settings_a_gray_folders_augment_auto_leaves_unused_are_named(tmp_path, capsys):
    """--augment auto is none for gray images: --crop-pad and --flip would do nothing (for the
    built-in datasets the settings' rules refuse them; a folder's is known once it is read)."""
    from test_folders import write_classes
    write_classes(tmp_path, {"a": 4, "b": 4}, channels=1, size=(28, 28))
    job = setup(TrainConfig(dataset="folder", data_dir=str(tmp_path), crop_pad=3,
                            flip="alternate"))
    assert job.cfg.augment == "none"
    assert ("--crop-pad, --flip not used: --augment auto is none for folder images like these "
            "(gray)") in capsys.readouterr().err


def test_a_last_batch_of_one_is_left_out_where_batchnorm_cannot_train_on_it(ptrain, tmp_path):
    """mobilenet_v3_small's last BatchNorm sees 1x1 maps at 28 px: a last batch of one image
    failed the run with torch's ValueError after the epoch's other batches (a hostile trial)."""
    folder = _gray_folder(tmp_path / "two", (6, 6))  # 10 training images (one each held out)
    run = ["train", "--dataset", "folder", "--data-dir", folder, "--model",
           "torchvision:mobilenet_v3_small", "--epochs", "1"]
    r = ptrain(*run, "--batch-size", "9", "--run-dir", "ragged")
    assert r.code == 0, r.err
    assert ("1 epoch of 1 batch; 1 image per epoch left out: a last batch of one image, which "
            "its BatchNorm cannot train on; writing ragged") in r.out
    r = ptrain(*run, "--batch-size", "1", "--run-dir", "single")
    assert r.code == 2 and r.err == (
        "ptrain: error: --batch-size 1: torchvision:mobilenet_v3_small has a BatchNorm layer "
        "that sees one value per channel an image at 28x28, which torch cannot normalise over "
        "a batch of one image in training; use --batch-size 2 or more (per process), or larger "
        "images\n")
