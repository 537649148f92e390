"""--tensorboard: the event files, read back with TensorBoard's own reader, hold the scalars,
the image grid and the hyperparameters; a resumed run continues them; without the extra, one
line."""

import pytest
from conftest import read_metrics

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

RUN = ["train", "--dataset", "fake", "--batch-size", "50", "--log-interval", "10", "--quiet"]


def _read(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_scalars_images_and_hparams_read_back(ptrain, tmp_path):
    assert (
        ptrain(*RUN, "--epochs", "1", "--val-split", "0.1", "--tensorboard", "--run-dir", "tb").code
        == 0
    )
    events = _read(tmp_path / "tb/tensorboard")
    tags = events.Tags()
    for tag in ("Loss/train", "LR", "Throughput/images_per_s", "Loss/test", "Accuracy/test",
                "Accuracy/val", "hparam/test_acc"):
        assert tag in tags["scalars"], tag
    train = events.Scalars("Loss/train")
    assert [s.step for s in train] == [10, 20, 30]  # 1800 images / 50 = 36 steps, every 10
    assert train[-1].value < train[0].value  # it learns
    acc = events.Scalars("Accuracy/test")
    epoch = read_metrics(tmp_path / "tb", ("epoch",))[0]
    assert len(acc) == 1 and acc[0].step == 36 and acc[0].value == pytest.approx(epoch["test_acc"])
    grid = events.Images("Images/first_batch")[0]
    assert grid.encoded_image_string.startswith(b"\x89PNG") and grid.width > 200  # 8 x 28 px wide

    # a resumed run goes on writing where it stopped; resume can also start it, or stop it
    assert ptrain("resume", "tb", "--epochs", "2", "--quiet").code == 0
    acc = _read(tmp_path / "tb/tensorboard").Scalars("Accuracy/test")
    assert [s.step for s in acc] == [36, 72]
    assert ptrain(*RUN, "--epochs", "1", "--run-dir", "late").code == 0
    assert not (tmp_path / "late/tensorboard").exists()
    assert ptrain("resume", "late", "--epochs", "2", "--tensorboard", "--quiet").code == 0
    assert [s.step for s in _read(tmp_path / "late/tensorboard").Scalars("Accuracy/test")] == [80]


def test_without_the_extra_it_is_one_line(ptrain, tmp_path, without):
    without("tensorboard")
    out = ptrain("train", "--dataset", "fake", "--tensorboard", "--run-dir", "x")
    assert out.code == 2 and out.err.splitlines() == [
        "ptrain: error: --tensorboard needs the tensorboard package: "
        "pip install 'pytorch-cli[tensorboard]'"
    ]
    assert not (tmp_path / "x").exists()


def test_a_tensorboard_folder_that_is_a_link_is_refused(ptrain, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb/tensorboard").symlink_to(tmp_path / "elsewhere")
    r = ptrain(*RUN, "--epochs", "1", "--tensorboard", "--run-dir", "tb")
    assert r.code == 1 and "tb/tensorboard: it is a symbolic link" in r.err
    assert not list((tmp_path / "elsewhere").iterdir())
