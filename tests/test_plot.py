"""`ptrain plot` and `ptrain eval --plot-confusion`: real runs drawn into images that decode."""

import csv
import os
import re
import stat

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from pytorch_cli.store.rundir import RunDir  # noqa: E402

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
    # runs/sgd/ and ./runs/sgd are runs/sgd again: drawn once (a hostile trial's legend
    # showed one run as two)
    r = ptrain("plot", "runs/sgd", "runs/adam", "runs/sgd/", "./runs/sgd", "-o", "curves.png")
    assert r.code == 0 and "curves of 2 run(s) drawn in curves.png" in r.out
    fmt, (width, height), colours = _image(tmp_path / "curves.png")
    assert fmt == "PNG" and width > 1000 and height > 400 and colours > 50  # lines, not a blank
    assert ptrain("plot", "runs/sgd", "-o", "one.svg").code == 0
    assert (tmp_path / "one.svg").read_text().lstrip().startswith("<?xml")

    r = ptrain("eval", "runs/sgd", "--plot-confusion", "confusion.png")
    assert r.code == 0 and "confusion matrix drawn in confusion.png" in r.out
    fmt, (width, height), colours = _image(tmp_path / "confusion.png")
    assert fmt == "PNG" and width > 400 and height > 400 and colours > 20


def test_eval_draws_the_worst_mistakes_in_the_order_errors_lists_them(ptrain, tmp_path):
    """--plot-errors: the 16 worst of --errors' rows, worst first, each titled with its image,
    true -> predicted class, probability and loss (matplotlib's SVG keeps each text line as a
    comment: the titles are read back in drawing order)."""
    assert ptrain(*RUN[:4], "1", *RUN[5:], "--run-dir", "run").code == 0
    r = ptrain("eval", "run", "--errors", "wrong.csv", "--plot-errors", "worst.svg")
    wrong = list(csv.DictReader((tmp_path / "wrong.csv").open()))
    assert r.code == 0 and len(wrong) > 16, r.err
    assert f"the 16 worst of {len(wrong):,} misclassified images drawn in worst.svg" in r.out
    texts = re.findall(r"<!-- (.*?) -->", (tmp_path / "worst.svg").read_text())
    titles = [texts[i:i + 3] for i, t in enumerate(texts) if re.fullmatch(r"test\[\d+\]", t)]
    assert titles == [[w["image"], f"{w['true']} \u2192 {w['predicted']}",
                       f"p {float(w['prob']):.2f}, loss {float(w['loss']):.2f}"]
                      for w in wrong[:16]]
    r = ptrain("eval", "run", "--plot-errors", "worst.png", "--json")
    assert r.json()["plot_errors"] == {"file": "worst.png", "images": 16, "of": len(wrong)}
    fmt, (width, height), colours = _image(tmp_path / "worst.png")
    assert fmt == "PNG" and width > 900 and height > 1000 and colours > 50
    r = ptrain("eval", "run", "--plot-errors", "heat.svg", "--heatmap")
    assert r.code == 0 and "Grad-CAM of the predicted class" in (tmp_path / "heat.svg").read_text()
    assert ptrain("eval", "run", "--plot-errors", "heat.png", "--heatmap").code == 0

    def coloured(name):  # the share of pixels that are not gray: the fake set's images are
        rgb = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(int)
        return ((rgb.max(2) - rgb.min(2)) > 30).mean()
    assert coloured("worst.png") < 0.01 and coloured("heat.png") > 0.2  # the maps over them
    r = ptrain("eval", "run", "--plot-errors", "worst.txt")
    assert r.code == 2 and "matplotlib cannot write .txt images" in r.err


def test_plot_of_something_that_is_no_run_is_one_line(ptrain, tmp_path):
    (tmp_path / "empty").mkdir()
    r = ptrain("plot", "empty")
    assert (
        r.code == 2
        and r.err
        == "ptrain: error: empty has no metrics.jsonl with records; name run directories\n"
    )
    assert not (tmp_path / "curves.png").exists()


def test_a_run_that_failed_before_its_first_log_is_not_drawn_as_an_empty_figure(ptrain,
                                                                               tmp_path):
    # a hostile trial's diverged run (start and abort records only) gave empty axes, "drawn"
    r = ptrain("train", "--dataset", "fake", "--lr", "1000", "--momentum", "0.9", "--run-dir",
               "nan", "--quiet")
    assert r.code == 3
    r = ptrain("plot", "nan", "-o", "nan.png")
    assert r.code == 1 and r.err.splitlines() == [
        "warning: nan: nothing to draw (no training or epoch record: it ended before its first "
        "log line; `ptrain runs` says how)",
        "ptrain: error: no curves to draw: the run has no training or epoch record"]
    assert not (tmp_path / "nan.png").exists()
    _records_run(tmp_path / "runs/a")
    r = ptrain("plot", "nan", "runs/a", "-o", "both.png")  # the others are drawn
    assert r.code == 0 and "curves of 1 run(s) drawn in both.png" in r.out
    assert r.err.startswith("warning: nan: nothing to draw")


def test_without_matplotlib_it_is_one_line(ptrain, without):
    without("matplotlib")
    out = ptrain("plot", "runs/x")
    assert out.code == 2 and out.err.splitlines() == [
        "ptrain: error: ptrain plot needs matplotlib: pip install 'pytorch-cli[plot]'"]


def _records_run(path, *extra: bytes):
    """A run directory with curves to draw (no training needed) and these raw lines after."""
    run = RunDir(path)
    run.create({"dataset": "fake", "model": "lenet", "epochs": 2})
    for epoch in (1, 2):
        for batch in (5, 10):
            run.append_metrics({"kind": "train", "epoch": epoch, "batch": batch, "batches": 10,
                                "step": 10 * (epoch - 1) + batch, "train_loss": 2.0 / epoch})
        run.append_metrics({"kind": "epoch", "epoch": epoch, "step": 10 * epoch,
                            "test_loss": 1.0 / epoch, "test_acc": 0.4 * epoch})
    with open(run.file("metrics.jsonl"), "ab") as f:
        f.write(b"".join(line + b"\n" for line in extra))
    return run


def test_bad_lines_are_skipped_with_a_warning_and_the_rest_is_drawn(ptrain, tmp_path):
    _records_run(tmp_path / "runs/a", b"[1, 2]", b"\xff\xfe", b'{"kind": "train", "step": null}',
                 b'{"kind": "epoch", "epoch": 3, "test_loss": 0.2, "test_acc": null}',
                 b'{"kind": "epoch", "epoch": 4, "test_loss": null, "test_acc": 0.9}',
                 b'{"kind": "train", "train_loss": 1.0}', b'{"kind": "epoch", "epoch": NaN}')
    r = ptrain("plot", "runs/a", "-o", "curves.png")
    assert r.code == 0, r.err
    assert r.err == ("warning: runs/a/metrics.jsonl: skipped 4 unreadable lines (first: line 7)\n")
    fmt, (width, _), colours = _image(tmp_path / "curves.png")
    assert fmt == "PNG" and width > 1000 and colours > 50


@pytest.mark.parametrize("output,message", [
    ("curves.txt", "curves.txt: matplotlib cannot write .txt images; name a .png, .svg or .pdf"),
    ("runs", "runs is a folder; name an image file"),
    ("", ". is a folder; name an image file"),
    ("runs/a/config.toml/c.png", "cannot write runs/a/config.toml/c.png: runs/a/config.toml is a "
                                 "file, not a folder"),
])
def test_an_output_it_cannot_write_is_one_line_naming_it(ptrain, tmp_path, output, message):
    _records_run(tmp_path / "runs/a")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = ptrain("plot", "runs/a", "-o", output)
    assert r.code == 2 and r.err.startswith(f"ptrain: error: {message}") and r.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no image, no temporary file


def test_a_pipe_or_a_device_named_as_the_picture_is_refused_and_kept(ptrain, tmp_path):
    _records_run(tmp_path / "runs/a")
    os.mkfifo(tmp_path / "pipe.png")
    for out, what in (("pipe.png", "a named pipe"), ("/dev/null", "a character device")):
        r = ptrain("plot", "runs/a", "-o", out)
        assert r.code == 2 and r.err == (f"ptrain: error: refusing to write {out}: it is {what}, "
                                         "not a file; name an image file (.png, .svg, .pdf)\n")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.png").st_mode)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_a_picture_into_a_read_only_folder_is_refused_before_any_work(ptrain, tmp_path,
                                                                      mounts):
    """(lr-find --plot and eval's pictures had run their whole work first.)"""
    _records_run(tmp_path / "runs/a")
    mounts(tmp_path / "ro", "1m", ",ro")
    for args in (["plot", "runs/a", "-o", "ro/c.png"],
                 ["lr-find", "--dataset", "fake", "--plot", "ro/new/lr.png"],
                 ["lr-find", "--dataset", "fake", "--plot", "/proc/lr.png"]):  # root's access()
        # said yes there, and the test ran whole before "Permission denied" (a hostile trial)
        r = ptrain(*args)
        assert r.code == 2 and r.err.endswith(("ro is not writable\n", "proc is not writable\n"))
    r = ptrain("eval", "/dev/null")
    assert r.code == 1 and r.err == ("ptrain: error: /dev/null is not a file, so no checkpoint "
                                     "(a folder, a device or a pipe)\n")


def test_an_image_in_a_new_folder_and_without_a_suffix_is_a_png_named_so(ptrain, tmp_path):
    # as matplotlib's savefig("curves") writes curves.png; the file was "curves", a PNG that
    # no viewer knew by its name, and the line said nothing of it
    _records_run(tmp_path / "runs/a")
    r = ptrain("plot", "runs/a", "-o", "new/folder/curves")
    assert r.code == 0 and r.out.endswith("drawn in new/folder/curves.png\n")
    assert _image(tmp_path / "new/folder/curves.png")[0] == "PNG"
    assert not (tmp_path / "new/folder/curves").exists()
    r = ptrain("lr-find", "--dataset", "fake", "--steps", "5", "--plot", "lr")
    assert r.code == 0 and "lr.png" in r.out and _image(tmp_path / "lr.png")[0] == "PNG"


def test_a_run_of_fewer_batches_than_the_log_interval_draws_its_epochs_train_loss(monkeypatch,
                                                                                  tmp_path):
    """A small folder's 5 batches an epoch under --log-interval 10 wrote no train record, and
    its figure had no train curve (a hostile trial): each epoch's mean loss is drawn."""
    from pytorch_cli.output import plot
    drawn = {}
    monkeypatch.setattr(plot, "_save", lambda fig, out: drawn.setdefault("fig", fig))
    records = [{"kind": "epoch", "epoch": e, "batch": 5, "batches": 5, "train_loss": 2.0 / e,
                "test_loss": 1.5 / e, "test_acc": 0.3 * e} for e in (1, 2, 3)]
    plot.curves({"small": records}, tmp_path / "c.png")
    lines = {line.get_label(): line for line in drawn["fig"].axes[0].get_lines()}
    assert list(lines) == ["small train", "small test"]
    assert list(lines["small train"].get_ydata()) == [2.0, 1.0, 2.0 / 3]
