"""`ptrain plot` and `ptrain eval --plot-confusion`: real runs drawn into images that decode."""

import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

RUN = ["train", "--dataset", "fake", "--epochs", "2", "--batch-size", "50", "--quiet"]


def _image(path):
    with Image.open(path) as image:
        image.load()
        colours = len(image.convert("RGB").getcolors(1 << 20) or [])
        return image.format, image.size, colours


def test_curves_of_two_runs_on_one_figure(ptrain, tmp_path):
    assert ptrain(*RUN, "--run-dir", "runs/sgd").code == 0
    assert ptrain(*RUN, "--run-dir", "runs/adam", "--optimizer", "adam", "--lr", "0.002",
                  "--val-split", "0.1").code == 0
    r = ptrain("plot", "runs/sgd", "runs/adam", "-o", "curves.png")
    assert r.code == 0 and "curves of 2 run(s) drawn in curves.png" in r.out
    fmt, (width, height), colours = _image(tmp_path / "curves.png")
    assert fmt == "PNG" and width > 1000 and height > 400 and colours > 50  # lines, not a blank
    assert ptrain("plot", "runs/sgd", "-o", "one.svg").code == 0
    assert (tmp_path / "one.svg").read_text().lstrip().startswith("<?xml")

    r = ptrain("eval", "runs/sgd", "--plot-confusion", "confusion.png")
    assert r.code == 0 and "confusion matrix drawn in confusion.png" in r.out
    fmt, (width, height), colours = _image(tmp_path / "confusion.png")
    assert fmt == "PNG" and width > 400 and height > 400 and colours > 20


def test_plot_of_something_that_is_no_run_is_one_line(ptrain, tmp_path):
    (tmp_path / "empty").mkdir()
    r = ptrain("plot", "empty")
    assert (
        r.code == 2
        and r.err
        == "ptrain: error: empty has no metrics.jsonl with records; name run directories\n"
    )
    assert not (tmp_path / "curves.png").exists()


def test_without_matplotlib_it_is_one_line(ptrain, without):
    without("matplotlib")
    out = ptrain("plot", "runs/x")
    assert out.code == 2 and out.err.splitlines() == [
        "ptrain: error: ptrain plot needs matplotlib: pip install 'pytorch-cli[plot]'"]
