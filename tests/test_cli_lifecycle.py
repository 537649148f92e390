"""eval and resume on real files, and checkpoint safety with real SIGKILLs."""

import csv
import io
import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import MNIST_DIR, read_metrics, write_cifar100_python
from forked import Forked
from test_checkpoint import Exploit
from test_cli_train import without_timing

FAST = ["--dataset", "fake", "--epochs", "2", "--log-interval", "10"]


def test_eval_prints_the_accuracy_train_printed(ptrain, tmp_path):
    # a high learning rate: epoch 2 scores best, epoch 3 falls back, so best.pt != last.pt
    r = ptrain("train", "--dataset", "fake", "--epochs", "3", "--lr", "0.5", "--batch-size", "256",
               "--deterministic", "--name", "jumpy")
    printed = re.findall(r"epoch \d/3 .*test acc (\S+ \(\d+/\d+\))", r.out)
    accs = [float(p.split("%")[0]) for p in printed]
    best = printed[accs.index(max(accs))]
    assert best != printed[-1], "precondition: the best epoch is not the last"
    for name, trained in (("model.pth", printed[-1]), ("last.pt", printed[-1]), ("best.pt", best)):
        e = ptrain("eval", f"runs/jumpy/{name}")
        assert e.code == 0, e.err
        assert f"acc {trained}" in e.out, name
    e = ptrain("eval", "runs/jumpy", "--json")  # a run directory: its model.pth
    assert e.code == 0 and e.json()["checkpoint"] == "runs/jumpy"
    assert f"{100 * e.json()['acc']:.2f}%" == printed[-1].split()[0]
    assert ptrain("train", *FAST).code == 0
    e = ptrain("eval", "runs/fake/model.pth", "--json").json()
    assert sum(map(sum, e["confusion"])) == e["total"] == 500
    assert e["acc"] == read_metrics(tmp_path / "runs/fake")[-1]["test_acc"]
    assert set(e["per_class_acc"]) == {str(i) for i in range(10)} and "top5_acc" not in e


@pytest.mark.parametrize("precision", ["bf16"])  # (16 on a CPU: the same path, 20x slower)
def test_eval_of_a_mixed_precision_run_evaluates_as_its_training_did(ptrain, precision):
    """Training evaluates under its autocast: eval does too (on fake data in bf16, 21.20%
    where float32 gives 21.80%), and --precision 32 asks for float32."""
    r = ptrain("train", "--dataset", "fake", "--epochs", "1", "--precision", precision,
               "--run-dir", "r", "--json")
    trained = r.json()["test_acc"]
    e = ptrain("eval", "r", "--json").json()
    assert e["acc"] == trained and e["precision"] == "bfloat16"  # what ran
    full = ptrain("eval", "r", "--json", "--precision", "32").json()
    assert full["precision"] == "float32" and full["loss"] != e["loss"]


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, verbatim in structure."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def test_eval_bare_state_dict_from_the_examples_script(ptrain, tmp_path, mnist_dir):
    torch.manual_seed(0)
    net = ExamplesNet().eval()
    torch.save(net.state_dict(), tmp_path / "mnist_cnn.pt")
    r = ptrain("eval", "mnist_cnn.pt", "--model", "mnist-cnn", "--dataset", "mnist",
               "--data-dir", mnist_dir, "--json")
    assert r.code == 0, r.err
    # same predictions as the original module on the same normalised images
    from pytorch_cli.data import batches, datasets
    d = datasets.load("mnist", data_dir=str(mnist_dir))
    with torch.no_grad():
        pred = net(batches.normalize(d.test.images, d.spec)).argmax(1)
    assert r.json()["correct"] == int((pred == d.test.labels).sum())
    r = ptrain("eval", "mnist_cnn.pt", "--data-dir", mnist_dir)
    assert r.code == 2 and "bare state_dict" in r.err and "--model" in r.err
    r = ptrain(
        "eval", "mnist_cnn.pt", "--model", "lenet", "--dataset", "mnist", "--data-dir", mnist_dir
    )
    assert r.code == 1 and "do not fit a lenet" in r.err and r.err.count("\n") == 1


def test_eval_top5_splits_and_tta(ptrain, tmp_path):
    write_cifar100_python(tmp_path / "c100")
    assert ptrain("train", "--dataset", "cifar100", "--data-dir", tmp_path / "c100", "--model",
                  "cifar-net", "--epochs", "1", "--val-split", "0.2", "--quiet").code == 0
    r = ptrain("eval", "runs/cifar100/model.pth", "--json").json()
    assert 0 <= r["acc"] <= r["top5_acc"] <= 1 and len(r["per_class_acc"]) == 100
    assert r["classes"][99] == "class99"
    assert (
        ptrain("eval", "runs/cifar100/model.pth", "--split", "val", "--json").json()["total"] == 60
    )
    assert (
        ptrain("eval", "runs/cifar100/model.pth", "--split", "train", "--json").json()["total"]
        == 240
    )
    tta = ptrain("eval", "runs/cifar100/model.pth", "--tta", "--json").json()
    assert tta["tta"] and tta["total"] == 100 and tta["loss"] != r["loss"]
    assert ptrain("train", *FAST, "--epochs", "1", "--name", "noval", "--quiet").code == 0
    bad = ptrain("eval", "runs/noval/model.pth", "--split", "val")
    assert bad.code == 2 and "no validation set" in bad.err


def test_corrupt_and_missing_checkpoints_are_one_line(ptrain, tmp_path):
    assert ptrain("train", *FAST, "--epochs", "1", "--quiet").code == 0
    good = (tmp_path / "runs/fake/model.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pth").write_text("hello")
    for name in ("trunc.pth", "junk.pth", "absent.pth"):
        r = ptrain("eval", name)
        assert r.code == 1 and name in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err



def test_crafted_pickle_is_refused_and_its_code_never_runs(ptrain, tmp_path):
    torch.save(
        {"format": "ptrain-model", "state_dict": {}, "meta": Exploit()}, tmp_path / "evil.pth"
    )
    for cmd in (("eval", "evil.pth"), ("resume", "evil.pth")):
        r = ptrain(*cmd)
        assert r.code == 1 and "refused to load" in r.err and "posix.system" in r.err
    assert not (tmp_path / "pwned").exists()


def test_resume_refusals(ptrain, tmp_path):
    assert ptrain("train", *FAST, "--epochs", "1", "--quiet").code == 0
    r = ptrain("resume", "runs/fake")
    assert r.code == 2 and "already finished its 1 epoch;" in r.err
    r = ptrain("resume", "runs/fake", "--epochs", "3", "--model", "resnet18")
    assert r.code == 2 and "--model cannot change it" in r.err
    r = ptrain("resume", "runs/fake/model.pth")
    assert r.code == 2 and "not a training-state checkpoint" in r.err
    assert ptrain("resume", "runs/fake", "--epochs", "2", "--quiet").code == 0
    epochs = [m["epoch"] for m in read_metrics(tmp_path / "runs/fake") if m["kind"] == "epoch"]
    assert epochs == [1, 2]


def _kill_after_a_mid_epoch_checkpoint(proc, path: Path, min_epoch: int, min_batch: int) -> dict:
    """SIGKILL the run once its checkpoint is this far; the position the checkpoint it left
    holds (a later save may have landed between the read and the kill)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            pos = torch.load(path, weights_only=True)["position"]
            if pos["epoch"] >= min_epoch and pos["batch"] >= min_batch:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return torch.load(path, weights_only=True)["position"]
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.01)
    raise AssertionError("the run ended before a mid-epoch checkpoint could be interrupted")


def test_resume_after_sigkill_mid_epoch_is_exact(ptrain, tmp_path):
    """Only the killed run needs a process of its own; the others run in this one. LeNet has
    dropout (the RNG state must come back); 3 epochs leave the kill in epoch 2 time to land."""
    args = ["train", "--dataset", "fake", "--model", "lenet", "--epochs", "3",
            "--batch-size", "16", "--save-interval", "25", "--log-interval", "5", "--deterministic",
            "--quiet"]
    assert ptrain(*args, "--run-dir", "full").code == 0
    proc = Forked([*args, "--run-dir", "cut"], tmp_path)
    pos = _kill_after_a_mid_epoch_checkpoint(proc, tmp_path / "cut/last.pt", 1, 25)
    assert 0 < pos["batch"] < 125 and not (tmp_path / "cut/model.pth").exists()
    out = ptrain("resume", "cut")
    assert out.code == 0, out.err
    assert f"resuming at epoch {pos['epoch'] + 1} after batch {pos['batch']}" in out.out
    full, cut = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    for key, tensor in full["model"].items():
        assert torch.equal(tensor, cut["model"][key]), key
    for pid, state in full["optimizer"]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(tensor, cut["optimizer"]["state"][pid][key]), (pid, key)
    assert full["position"]["step"] == cut["position"]["step"] == 375
    # every record, per interval and per epoch: the ones logged after the checkpoint were
    # trimmed on resume and logged again, once
    records = {d: without_timing(read_metrics(tmp_path / d)) for d in ("full", "cut")}
    assert records["full"] == records["cut"]
    assert len(records["cut"]) == 3 * (125 // 5 + 1)
    starts = read_metrics(tmp_path / "cut", kinds=("start",))  # the resume is logged as such
    assert [s["resume_at"] for s in starts] == [None, [pos["epoch"] + 1, pos["batch"]]]


def test_predict_matches_the_model_and_reports_bad_images(ptrain, tmp_path):
    from PIL import Image
    assert ptrain("train", *FAST, "--epochs", "1", "--quiet").code == 0
    run = tmp_path / "runs" / "fake"
    from pytorch_cli.commands import saved
    from pytorch_cli.data import batches, datasets
    d = datasets.load("fake")
    model = saved.load_model(run / "model.pth").model
    with torch.inference_mode():
        probs = model(batches.normalize(d.test.images[:2], d.spec)).softmax(1)
    Image.fromarray(d.test.images[0, 0].numpy()).save(tmp_path / "exact.png")
    big = (
        Image.fromarray(d.test.images[1, 0].numpy())
        .resize((112, 112), Image.NEAREST)
        .convert("RGB")
    )
    big.save(tmp_path / "big.jpg", quality=95)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    r = ptrain(
        "predict", run / "model.pth", "exact.png", "broken.png", "big.jpg", "--json", "-k", "3"
    )
    assert r.code == 1
    results = {x["image"]: x for x in r.json()["results"]}
    top = results["exact.png"]["top"]
    assert top[0]["index"] == int(probs[0].argmax()) and len(top) == 3
    assert top[0]["prob"] == pytest.approx(float(probs[0].max()), abs=1e-6)
    assert results["big.jpg"]["top"][0]["index"] == int(probs[1].argmax())
    assert "error" in results["broken.png"] and "broken.png" in r.err
    r = ptrain("predict", run, "exact.png")  # a run directory: its model.pth
    assert r.code == 0 and r.out.startswith("exact.png: ")


def test_real_mnist_train_eval_export_agree(ptrain, real_mnist):
    """Train 1 epoch on real MNIST; eval and the onnx/pt2 exports score what train printed."""
    root, r = real_mnist
    trained = re.search(r"epoch 1/1 .*test acc (\S+ \(\d+/10000\))", r.err).group(1)
    model = root / "runs/mnist/model.pth"
    e = ptrain("eval", model)
    assert f"acc {trained}" in e.out
    from pytorch_cli.data import datasets
    d = datasets.load("mnist", data_dir=MNIST_DIR)
    images = d.test.images.float() / 255
    correct = int(trained.split("(")[1].split("/")[0])
    import onnxruntime as ort
    for fmt in ("onnx", "pt2"):
        x = ptrain("export", model, "--format", fmt, "-o", f"model.{fmt}", "--json")
        assert x.code == 0, x.err
        path = x.json()["output"]
        if fmt == "onnx":
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            logits = torch.from_numpy(s.run(None, {"images": images.numpy()})[0])
        else:
            with torch.inference_mode():
                logits = torch.export.load(path).module()(images)
        assert int((logits.argmax(1) == d.test.labels).sum()) == correct, fmt


def _digit_folder(root: Path, per_class: int) -> Path:
    """Real MNIST digits as PNG files, a folder per class (the layout without train/ and test/),
    with two files that are no image."""
    from PIL import Image

    from pytorch_cli.data import datasets
    if not MNIST_DIR:
        pytest.skip("no real MNIST: ../shared/data/mnist is absent")
    d = datasets.load("mnist", data_dir=MNIST_DIR)
    counts = [0] * 10
    for image, label in zip(d.train.images, d.train.labels.tolist()):
        if counts[label] < per_class:
            folder = root / d.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{counts[label]}.png")
            counts[label] += 1
    (root / "README.txt").write_text("digits")
    (root / d.classes[3] / "broken.png").write_bytes(b"not a png")
    return root


def test_a_folder_of_real_digits_trains_evaluates_predicts_exports_and_resumes(ptrain, tmp_path):
    digits = _digit_folder(tmp_path / "digits", per_class=60)
    r = ptrain("train", "--dataset", "folder", "--data-dir", digits, "--epochs", "2",
               "--batch-size", "32", "--lr", "0.05", "--momentum", "0.9", "--run-dir", "run")
    assert r.code == 0, r.err
    assert "skipped 2 files" in r.err and "480 train / 120 test images" in r.out
    run = tmp_path / "run"
    assert (run / "skipped-files.txt").read_text().count("\n") == 2
    final = read_metrics(run, ("epoch",))[-1]
    assert final["test_acc"] > 0.5  # 10 classes: it learns from the folder's images
    ev = ptrain("eval", run, "--json").json()  # the same held-out images, decoded alike
    assert (ev["correct"], ev["total"]) == (final["test_correct"], 120)
    assert list(ev["per_class_acc"]) == ["0 - zero", "1 - one", "2 - two", "3 - three",
                                         "4 - four", "5 - five", "6 - six", "7 - seven",
                                         "8 - eight", "9 - nine"]  # the folders' names
    f1 = [s["f1"] for s in ev["per_class"].values()]
    assert ev["macro"]["f1"] == pytest.approx(sum(f1) / 10) and min(f1) >= 0
    assert sum(s["images"] for s in ev["per_class"].values()) == 120
    table = ptrain("eval", run).out  # a row per folder: accuracy, precision, F1, images
    assert re.search(r"\n  7 - seven +\d+\.\d\d% +\d+\.\d\d% +\d+\.\d\d% +12\n", table), table
    assert re.search(r"\n  macro average +[\d.]+% +[\d.]+% +[\d.]+% +120\n", table), table
    saved = torch.load(run / "model.pth", weights_only=True)["meta"]
    assert (saved["dataset"], saved["in_channels"], saved["image_size"]) == ("folder", 1, 28)
    assert 0.1 < saved["mean"][0] < 0.2 and 0.25 < saved["std"][0] < 0.35  # MNIST's own stats
    first = sorted((digits / "7 - seven").glob("*.png"))[0]
    top = ptrain("predict", run, first, "--json").json()["results"][0]["top"][0]
    assert top["class"] == "7 - seven"
    # a folder: every image under it, one CSV row each (the broken one: its error)
    out = ptrain("predict", run, digits / "3 - three", "--csv", "-k", "2")
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert out.code == 1 and len(rows) == 61 and list(rows[0]) == [
        "image", "class", "prob", "class_2", "prob_2", "error"]
    broken = [r for r in rows if r["error"]]
    assert [r["image"] for r in broken] == [str(digits / "3 - three" / "broken.png")]
    assert sum(r["class"] == "3 - three" for r in rows) > 30
    wide = ptrain("predict", run, first, "--csv", "-k", "50").out.splitlines()[0].split(",")
    assert wide[-3:] == ["class_10", "prob_10", "error"]  # as many as the classes, no more
    from pytorch_cli.store.export import FORMATS
    for fmt, (suffix, _) in FORMATS.items():  # each verified against the model on the images
        done = ptrain("export", run, "-f", fmt)
        assert done.code == 0 and "verified" in done.out, (fmt, done.err)
        assert (run / f"model{suffix}").exists(), fmt
    assert ptrain("resume", run, "--epochs", "3", "--quiet").code == 0
    assert read_metrics(run, ("epoch",))[-1]["epoch"] == 3


def test_a_folder_run_at_height_by_width_trains_evaluates_predicts_and_exports(ptrain, tmp_path):
    """--image-size 24x32: images of several sizes and aspects resized to 24 high, 32 wide, the
    same in training, eval, predict and the exported model."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for c, tint in (("blue", 2), ("red", 0)):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            pixels = torch.randint(0, 90, (30 + i, 40, 3), generator=g, dtype=torch.uint8)
            pixels[..., tint] += 160
            Image.fromarray(pixels.numpy()).save(tmp_path / "imgs" / c / f"{i}.png")
    r = ptrain("train", "--dataset", "folder", "--data-dir", tmp_path / "imgs", "--image-size",
               "24x32", "--epochs", "3", "--batch-size", "8", "--run-dir", "run")
    assert r.code == 0, r.err
    run = tmp_path / "run"
    meta = torch.load(run / "model.pth", weights_only=True)["meta"]
    assert meta["image_size"] == [24, 32] and meta["in_channels"] == 3
    final = read_metrics(run, ("epoch",))[-1]
    ev = ptrain("eval", run, "--json").json()
    assert (ev["correct"], ev["total"]) == (final["test_correct"], final["test_total"])
    Image.new("RGB", (90, 20), (250, 30, 30)).save(tmp_path / "wide.png")  # any size: resized
    top = ptrain("predict", run, tmp_path / "wide.png", "--json").json()["results"][0]["top"][0]
    assert top["class"] == "red"
    done = ptrain("export", run, "-f", "onnx")
    assert done.code == 0 and "verified" in done.out, done.err
    sidecar = json.loads((run / "model.onnx.json").read_text())
    assert sidecar["input_shape"] == ["batch", 3, 24, 32]


def _small_folder(root: Path, classes: tuple[str, ...]) -> Path:
    from PIL import Image
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(12):
            shade = (15 * i + 60 * k) % 256
            Image.fromarray(torch.full((16, 16), shade, dtype=torch.uint8).numpy()).save(
                root / name / f"{i}.png")
    return root


def test_no_picture_is_written_into_a_runs_image_folder_or_the_one_read(ptrain, tmp_path):
    """A picture inside an image folder would be read as one of its images, or replace one (a
    hostile trial: `plot -o` onto a training image changed the run's accuracy, and eval then
    counted activations' new picture): eval, activations, plot and lr-find each refuse in one
    line, before any work, and nothing is written."""
    _small_folder(tmp_path / "imgs", ("cat", "dog"))
    _small_folder(tmp_path / "other", ("cat", "dog"))
    assert ptrain("train", "--dataset", "folder", "--data-dir", "imgs", "--epochs", "1",
                  "--run-dir", "run", "--quiet").code == 0
    before = {p: p.read_bytes() for p in tmp_path.glob("*/**/*") if p.is_file()}
    trained = f"it is inside {tmp_path / 'imgs'}, the image folder the run trained on, whose "
    for args, said in (
            (["activations", "run", "other/dog/0.png", "-o", "imgs/cat/0.png"], trained),
            (["activations", "run", "other/dog/0.png", "-o", "imgs/dog/new.png"], trained),
            (["plot", "run", "-o", "imgs/cat/1.png"], trained),
            (["eval", "run", "--data-dir", "other", "--plot-errors", "imgs/cat/2.png"], trained),
            (["eval", "run", "--data-dir", "other", "--plot-confusion", "other/dog/3.png"],
             "it is inside other, the image folder being read, whose next read would take it "
             "for an image; name a --plot-confusion file outside it"),
            (["lr-find", "--dataset", "folder", "--data-dir", "imgs", "--plot", "imgs/lr.png"],
             "the image folder the run trained on")):
        r = ptrain(*args)
        assert r.code == 2 and said in r.err and r.err.count("\n") == 1, (args, r.err)
    assert {p: p.read_bytes() for p in tmp_path.glob("*/**/*") if p.is_file()} == before
    assert ptrain("plot", "run", "-o", "curves.png").code == 0  # outside it: drawn


def test_eval_writes_nothing_onto_a_labels_file_or_into_the_image_folder_it_reads(ptrain,
                                                                                 tmp_path):
    """A picture inside the image folder being evaluated would be read as one of its images
    (or replace one), and --errors onto a --labels CSV would destroy the run's classes: each is
    one line, before any work, and nothing is written."""
    _small_folder(tmp_path / "imgs", ("cat", "dog"))
    rows = [f"{c}/{i}.png,{c}" for c in ("cat", "dog") for i in range(12)]
    (tmp_path / "imgs/labels.csv").write_text("image,class\n" + "\n".join(rows) + "\n")
    (tmp_path / "other.csv").write_text("image,class\n" + "\n".join(rows[:3]) + "\n")
    assert ptrain("train", "--dataset", "folder", "--data-dir", "imgs", "--labels",
                  "imgs/labels.csv", "--epochs", "1", "--run-dir", "run", "--quiet").code == 0
    before = {p: p.read_bytes() for p in tmp_path.glob("*/**/*") if p.is_file()}
    for args, said in (
            (["--plot-errors", "imgs/cat/0.png"], f"it is inside {tmp_path / 'imgs'}, the "
             "image folder the run trained on, whose next read would take it for an image; "
             "name a --plot-errors file outside it"),  # (the run saved its folder absolute)
            (["--plot-confusion", "imgs/new.png"], "name a --plot-confusion file outside it"),
            (["--errors", "imgs/labels.csv"], "it is a --labels file being read ("),
            (["--labels", "other.csv", "--errors", "other.csv"], "it is a --labels file")):
        r = ptrain("eval", "run", "--split", "all", *args)
        assert r.code == 2 and said in r.err and r.err.count("\n") == 1, r.err
    assert {p: p.read_bytes() for p in tmp_path.glob("*/**/*") if p.is_file()} == before
    assert not (tmp_path / "imgs/new.png").exists()
    shutil.copy(tmp_path / "run/model.pth", tmp_path / "m.png")  # a checkpoint named as a picture
    for args, said in ((["m.png", "--plot-confusion", "m.png"], "refusing to write m.png: it is "
                        "the checkpoint being read; name another output with --plot-confusion"),
                       (["run", "--plot-errors", "x.png", "--plot-confusion", "x.png"],
                        "--plot-errors and --plot-confusion both name x.png: one would replace "
                        "the other; name two files")):
        r = ptrain("eval", *args)
        assert r.code == 2 and r.err == f"ptrain: error: {said}\n", r.err
    assert (tmp_path / "m.png").read_bytes() == (tmp_path / "run/model.pth").read_bytes()
    r = ptrain("eval", "run", "--plot-confusion", "confusion.png", "--json")
    assert r.code == 0 and r.json()["plot_confusion"] == {"file": "confusion.png"}


def test_eval_and_resume_say_when_the_held_out_images_are_drawn_from_other_files(ptrain,
                                                                                 tmp_path):
    """An image added to a folder without test/ (of 12 a class, 3 held out) changes the files
    its held-out split is drawn from: eval and resume say so and how much; unchanged, neither.
    A run saved before drawing by name still draws as it did."""
    _small_folder(tmp_path / "imgs", ("cat", "dog"))
    assert ptrain("train", "--dataset", "folder", "--data-dir", "imgs", "--epochs", "1",
                  "--batch-size", "8", "--run-dir", "run", "--quiet").code == 0
    said = ("imgs: its files are not the ones the run trained on (added, removed or renamed "
            "since): each file added or removed moves at most one other image into or out of "
            "its held-out ones, and one more between training and --val-split's (drawn by name)")
    r = ptrain("eval", "run")
    assert r.code == 0 and "warning" not in r.err, r.err
    from pytorch_cli.commands import saved
    loaded = saved.load_model(tmp_path / "run")
    assert loaded.meta["split"] == "by-name-per-class"
    held = saved._data(loaded).test.images
    loaded.meta.pop("split")  # as runs saved before 2026-12-06: a shuffle of the rows
    assert not torch.equal(saved._data(loaded).test.images, held)
    shutil.copy(tmp_path / "imgs/cat/0.png", tmp_path / "imgs/cat/new.png")
    for command in (["eval", "run"], ["resume", "run", "--epochs", "2", "--quiet"]):
        r = ptrain(*command)
        assert r.code == 0 and said in r.err, r.err
    assert saved.load_model(tmp_path / "run").meta["split"] == "by-name-per-class"  # kept by resume


def test_eval_scores_every_image_of_another_labelled_set_of_some_of_the_runs_classes(ptrain,
                                                                                     tmp_path):
    """`--split all` scores every image (training ones too); --data-dir or --labels may name
    another labelled set holding some of the run's classes, scored against the run's numbering:
    each image counts in the confusion row of its class as it did in the run's own folder."""
    _small_folder(tmp_path / "imgs", ("cat", "dog", "fox"))
    assert ptrain("train", "--dataset", "folder", "--data-dir", "imgs", "--epochs", "1",
                  "--batch-size", "8", "--run-dir", "run", "--quiet").code == 0

    def scored(*args):
        r = ptrain("eval", "run", "--json", *args)
        assert r.code == 0 and "warning" not in r.err, r.err
        return r.json()
    whole = scored("--split", "all", "--errors", "wrong.csv")
    parts = [scored("--split", split) for split in ("train", "test")]
    wrong = list(csv.DictReader((tmp_path / "wrong.csv").open()))  # each misclassified image
    assert wrong  # (1 epoch of 3 shades a class: a third right)
    assert whole["errors"] == {"file": "wrong.csv", "images": len(wrong)} and len(wrong) == (
        whole["total"] - whole["correct"])
    assert [float(w["loss"]) for w in wrong] == sorted((float(w["loss"]) for w in wrong),
                                                       reverse=True)  # worst first
    said = ptrain("predict", "run", *(w["image"] for w in wrong), "--json").json()["results"]
    for w, answer in zip(wrong, said, strict=True):  # named by file: predict agrees
        assert w["true"] == Path(w["image"]).parent.name != w["predicted"]
        assert answer["top"][0]["class"] == w["predicted"]
        assert float(w["prob"]) == pytest.approx(answer["top"][0]["prob"], abs=1e-5)
    for target, said in (("run/model.pth", "it is the checkpoint being read"),
                         ("wrong.txt", "name a .csv file")):
        r = ptrain("eval", "run", "--errors", target)
        assert r.code == 2 and said in r.err and r.err.count("\n") == 1, r.err
    assert whole["total"] == 36 == sum(p["total"] for p in parts)
    assert whole["confusion"] == (torch.tensor(parts[0]["confusion"]) +
                                  torch.tensor(parts[1]["confusion"])).tolist()
    shutil.copytree(tmp_path / "imgs/dog", tmp_path / "dogs/dog")  # a new set: dogs only
    dogs = scored("--data-dir", "dogs", "--split", "all")
    assert dogs["total"] == 12 and dogs["source"] == "dogs" and dogs["classes"] == [
        "cat", "dog", "fox"]
    assert dogs["confusion"] == [[0, 0, 0], whole["confusion"][1], [0, 0, 0]]
    assert dogs["per_class"]["cat"]["recall"] is None and dogs["acc"] == \
        whole["confusion"][1][1] / 12
    r = ptrain("eval", "run", "--data-dir", "dogs", "--split", "all")
    assert r.out.startswith(f"run on folder dogs (all images): loss {dogs['loss']:.4f}"), r.out
    r = ptrain("eval", "run", "--data-dir", "dogs", "--json")  # its held-out part only: said
    assert r.code == 0 and r.err == (
        f"warning: dogs is not the folder the run trained on (its files differ): --split test "
        f"scores the {r.json()['total']} of its 12 images the run's settings hold out; --split "
        "all scores every one\n")
    r = ptrain("eval", "run", "--data-dir", "dogs", "--split", "val")
    assert r.code == 2 and "--split val: dogs has no validation set" in r.err
    rows = "".join(f"{c}/{i}.png,{c}\n" for c in ("fox", "dog") for i in range(12))
    (tmp_path / "some.csv").write_text("image,class\n" + rows)
    listed = scored("--labels", "some.csv", "--split", "all")  # under the run's --data-dir
    assert listed["confusion"] == [[0, 0, 0], *whole["confusion"][1:]]
    (tmp_path / "one.csv").write_text("image,class\nfox/3.png,fox\n")  # nothing to hold out
    one = scored("--labels", "one.csv", "--split", "all")
    assert one["total"] == 1 and sum(one["confusion"][2]) == 1
    (tmp_path / "zebra.csv").write_text("image,class\ncat/0.png,cat\ncat/1.png,zebra\n")
    r = ptrain("eval", "run", "--labels", "zebra.csv", "--split", "all")
    assert r.code == 2 and "zebra.csv: class zebra is not the run's (cat, dog, fox)" in r.err
    r = ptrain("eval", "run", "--labels", "missing.csv")
    assert r.code == 1 and "--labels missing.csv: no such file" in r.err, r.err


def test_a_train_valid_test_folder_trains_with_its_validation_folder(ptrain, tmp_path):
    """Roboflow's export layout: valid/ is the validation set, whose accuracy picks best.pt;
    eval --split val scores it again; test/ stays the test set."""
    _small_folder(tmp_path / "all", ("cat", "dog"))
    for i, split in enumerate(["train"] * 8 + ["valid"] * 2 + ["test"] * 2):
        for c in ("cat", "dog"):
            (tmp_path / "d" / split / c).mkdir(parents=True, exist_ok=True)
            shutil.move(tmp_path / "all" / c / f"{i}.png", tmp_path / "d" / split / c)
    r = ptrain("train", "--dataset", "folder", "--data-dir", "d", "--epochs", "1",
               "--batch-size", "4", "--run-dir", "run", "--json")
    assert r.code == 0 and "16 train / 4 val / 4 test images" in r.err, r.err
    e = ptrain("eval", "run", "--split", "val", "--json").json()
    assert e["total"] == 4 and e["acc"] == r.json()["val_acc"]


def test_a_folder_run_resumes_from_its_moved_folder_and_refuses_other_classes(ptrain, tmp_path,
                                                                             monkeypatch):
    _small_folder(tmp_path / "imgs", ("cat", "dog"))
    assert ptrain("train", "--dataset", "folder", "--data-dir", "imgs", "--epochs", "1",
                  "--batch-size", "8", "--run-dir", "run", "--quiet").code == 0
    (tmp_path / "imgs").rename(tmp_path / "moved")
    r = ptrain("resume", "run", "--epochs", "2")
    assert r.code == 1 and "imgs is not a folder; pass --data-dir DIR" in r.err
    _small_folder(tmp_path / "other", ("cat", "fox"))
    r = ptrain("resume", "run", "--epochs", "2", "--data-dir", "other")
    assert r.code == 2 and r.err.count("\n") == 1 and (
        "other: its classes (cat, fox) are not the run's (cat, dog); resume with --data-dir set "
        "to the folder the run trained on") in r.err, r.err
    assert [m["epoch"] for m in read_metrics(tmp_path / "run", ("epoch",))] == [1]
    _small_folder(tmp_path / "more", ("cat", "dog", "fox"))  # a label the head has no row for
    for folder in ("other", "more"):
        r = ptrain("eval", "run", "--data-dir", folder)
        assert r.code == 2 and r.err.count("\n") == 1 and (
            f"{folder}: class fox is not the run's (cat, dog); evaluate images of the run's "
            "classes (or of some of them)") in r.err, r.err
    assert ptrain("resume", "run", "--epochs", "2", "--data-dir", "moved", "--quiet").code == 0
    assert [m["epoch"] for m in read_metrics(tmp_path / "run", ("epoch",))] == [1, 2]
    assert f'data_dir = "{tmp_path / "moved"}"' in (tmp_path / "run" / "config.toml").read_text()
    assert ptrain("eval", "run").code == 0  # the run's config now names the folder's new place
    (tmp_path / "elsewhere").mkdir()  # the paths saved are absolute: from another folder too
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert ptrain("eval", "../run").code == 0
    again = ptrain("train", "--config", "../run/config.toml", "--run-dir", "again", "--quiet")
    assert again.code == 0, again.err
    monkeypatch.chdir(tmp_path)
    from PIL import Image
    for path in (tmp_path / "moved").rglob("*.png"):  # the same classes, as RGB 40x40 copies
        big = tmp_path / "big" / path.relative_to(tmp_path / "moved")
        big.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").resize((40, 40)).save(big)
    r = ptrain("resume", "run", "--epochs", "3", "--data-dir", "big", "--quiet")
    assert r.code == 0, r.err  # read as the run's gray 16x16, not found anew (and "damaged")
    assert "channels = 0" in (tmp_path / "run" / "config.toml").read_text()  # still auto
