"""predicting.run_predict and `ptrain predict` on a real run's model.pth: every image answered
or named, in order, in batches that answer as one image at a time does."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_prepare import tiny_run

from pytorch_cli.commands import predicting, saved
from pytorch_cli.data import datasets


@pytest.fixture(scope="session")  # session: made once per xdist worker
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("predicting"))


def _as_files(split: datasets.Split, folder) -> list:
    """The split's (gray) images as PNG files, in order."""
    paths = [folder / f"{i:03d}.png" for i in range(len(split))]
    for path, image in zip(paths, split.images):
        Image.fromarray(image[0].numpy()).save(path)
    return paths


def test_batches_answer_as_one_image_at_a_time_in_order_with_errors_between(run, tmp_path,
                                                                             monkeypatch):
    """70 images in batches of 32 (the last short), decoded by 2 worker processes, with bad
    files between them: each answer and feature row is the one a batch of 1 gives."""
    images = datasets.load("fake").test.images
    paths = []
    for i in range(70):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(images[i, 0].numpy()).save(paths[-1])
        if i % 25 == 3:
            paths.append(tmp_path / f"{i:02d}-missing.png")
    monkeypatch.setenv("PTRAIN_DECODE_WORKERS", "2")
    features: list = []
    batched = predicting.run_predict(run, paths, 10, "cpu", features=features, batch_size=32)
    monkeypatch.setenv("PTRAIN_DECODE_WORKERS", "0")
    one_by_one: list = []
    single = predicting.run_predict(run, paths, 10, "cpu", features=one_by_one, batch_size=1)
    assert [r["image"] for r in batched] == [str(p) for p in paths]
    assert len(features) == len(one_by_one) == 70
    for a, b in zip(batched, single, strict=True):
        assert ("error" in a) == ("missing" in a["image"]) and a.get("error") == b.get("error")
        if "top" in a:
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]],
                                                                   abs=1e-6)
    assert torch.allclose(torch.stack(features), torch.stack(one_by_one), atol=1e-5)


def test_predict_answers_every_readable_image_and_names_the_others(run, tmp_path):
    images = datasets.load("fake").test.images
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "a.png")
    Image.fromarray(images[1, 0].numpy()).resize((56, 56)).convert("RGB").save(tmp_path / "b.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    os.mkfifo(tmp_path / "fifo.png")  # opened, it would block until a writer came: never opened
    paths = [tmp_path / n for n in ("a.png", "broken.png", "missing.png", "fifo.png", "b.png")]
    results = predicting.run_predict(run, paths, top_k=3, device="cpu")
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert "not a regular file" in results[3]["error"]
    for r in (results[0], results[4]):
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert all(t["class"] == str(t["index"]) for t in r["top"])
    for r in results[1:4]:
        assert "top" not in r and r["image"] in r["error"] and "Error" not in r["error"]
    everything = predicting.run_predict(run, paths[:1], top_k=50, device="cpu")[0]["top"]
    assert len(everything) == 10 and sum(t["prob"] for t in everything) == pytest.approx(1)


def test_predict_on_a_folder_takes_every_image_under_it_in_order(run, tmp_path):
    for name in ("b/2.png", "a/deep/1.PNG", "a/0.png"):
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28)).save(tmp_path / "imgs" / name, "PNG")
    (tmp_path / "imgs" / ".hidden.png").write_bytes(b"")  # left out, as in training
    (tmp_path / "imgs" / "notes.txt").write_text("left out")
    (tmp_path / "empty").mkdir()
    results = predicting.run_predict(run, [tmp_path / "imgs", tmp_path / "empty"], device="cpu")
    assert [r["image"] for r in results] == [str(tmp_path / "imgs" / n) for n in (
        "a/0.png", "a/deep/1.PNG", "b/2.png")] + [str(tmp_path / "empty")]
    assert all("top" in r for r in results[:3]) and "holds no image files" in results[3]["error"]


def test_predict_features_are_what_the_head_turns_into_the_probabilities(run, ptrain, tmp_path):
    """--features: the penultimate layer's output (the model with its last layer deleted),
    one row per answered image: lenet's fc2, applied to a row, gives that image's answer."""
    images = datasets.load("fake").test.images
    for i in range(3):
        Image.fromarray(images[i, 0].numpy()).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = [str(tmp_path / f) for f in ("0.png", "broken.png", "1.png", "2.png")]
    r = ptrain("predict", str(run), *paths, "--json", "-k", "10", "--features",
               str(tmp_path / "f.npy"))
    assert r.code == 1 and "penultimate features of 3 images (50 each)" in r.err
    rows = np.load(tmp_path / "f.npy")
    answered = [x for x in r.json()["results"] if "top" in x]
    fc2 = saved.load_model(run).model.fc2
    for row, answer in zip(rows, answered, strict=True):
        probs = fc2(torch.from_numpy(row)).softmax(0)
        for t in answer["top"]:
            assert probs[t["index"]].item() == pytest.approx(t["prob"], abs=1e-6)


def test_predict_features_never_overwrites_the_run_or_an_image(run, ptrain, tmp_path):
    """--features names a new .npy file: the run's model.pth, an image it reads or a non-.npy
    name is one line, before any work, and the file is untouched; a missing folder is made."""
    Image.fromarray(datasets.load("fake").test.images[0, 0].numpy()).save(tmp_path / "0.png")
    before = {p: p.read_bytes() for p in (run / "model.pth", tmp_path / "0.png")}
    (tmp_path / "0.npy").write_bytes(before[tmp_path / "0.png"])  # an image by any name
    for target, image, said in ((run / "model.pth", "0.png", "it is the checkpoint being read"),
                                (run / "last.pt", "0.png", "it is a file of a run"),
                                (tmp_path / "0.png", "0.png", "it is an image being read"),
                                (tmp_path / "0.npy", "0.npy", "it is an image being read"),
                                (tmp_path / "f.png", "0.png", "name a .npy file")):
        r = ptrain("predict", str(run), image, "--features", str(target))
        assert r.code == 2 and said in r.err and r.err.count("\n") == 1, r.err
    assert all(p.read_bytes() == b for p, b in before.items())
    r = ptrain("predict", str(run), "0.png", "--features", "new/dir/f.npy")
    assert r.code == 0 and "features of 1 image (50 each)" in r.err
    assert (tmp_path / "new/dir/f.npy").is_file()
    r = ptrain("predict", str(run), "missing.png", "--features", "none.npy")
    assert r.code == 1 and "no features written" in r.err and not (tmp_path / "none.npy").exists()


def test_tta_answers_as_eval_tta_scores_and_keeps_the_images_own_features(run, tmp_path):
    """predict --tta takes eval --tta's views: on the 500 test images, as files, it gets right
    exactly the images eval --tta counts; the features stay each image's own."""
    test = datasets.load("fake").test
    paths = _as_files(test, tmp_path)
    plain, tta = [], []
    answers = predicting.run_predict(run, paths, 1, "cpu", features=tta, tta=True)
    right = sum(a["top"][0]["index"] == int(y) for a, y in zip(answers, test.labels))
    assert right == saved.run_eval(run, tta=True)["correct"]
    untouched = predicting.run_predict(run, paths[:70], 1, "cpu", features=plain)
    assert torch.allclose(torch.stack(tta[:70]), torch.stack(plain), atol=1e-5)  # (batching)
    assert all(a["top"][0]["prob"] != b["top"][0]["prob"] for a, b in zip(answers, untouched))
    # a run trained with flips (its config says so) gets mirrored views too, in both commands
    flipped = torch.load(run / "model.pth", weights_only=False)
    assert flipped["config"]["augment"] == "none"  # the fake set's own: gray digits
    flipped["config"]["augment"] = "crop-flip"
    torch.save(flipped, tmp_path / "flipped.pth")
    mirrored = saved.run_eval(tmp_path / "flipped.pth", tta=True)
    assert mirrored["loss"] != saved.run_eval(run, tta=True)["loss"]
    answers = predicting.run_predict(tmp_path / "flipped.pth", paths, 1, "cpu", tta=True)
    assert sum(a["top"][0]["index"] == int(y) for a, y in zip(answers, test.labels)) == \
        mirrored["correct"]


def test_a_bf16_run_predicts_under_its_autocast_as_eval_scores_it(ptrain, tmp_path):
    """A bf16 run's predictions are those of its bf16 evaluation (on this CPU too), not of a
    float32 one; --precision 32 asks for float32."""
    assert ptrain("train", "--dataset", "fake", "--precision", "bf16", "--max-steps", "8",
                  "--run-dir", "bf", "--quiet").code == 0
    test = datasets.load("fake").test
    paths = _as_files(test, tmp_path)
    run = tmp_path / "bf"
    answers = predicting.run_predict(run, paths, 1, "cpu")
    right = sum(a["top"][0]["index"] == int(y) for a, y in zip(answers, test.labels))
    assert right == saved.run_eval(run)["correct"]
    wide = predicting.run_predict(run, paths[:64], 1, "cpu", precision="32")
    assert any(a["top"][0]["prob"] != b["top"][0]["prob"] for a, b in zip(answers, wide))


def test_a_dash_reads_the_image_paths_from_standard_input(run, ptrain, tmp_path, monkeypatch):
    """`find ... | ptrain predict RUN -`: one path a line, blank lines skipped, in order, among
    the paths given."""
    paths = _as_files(datasets.Split(datasets.load("fake").test.images[:3], torch.zeros(3)),
                      tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{paths[2]}\n\n{paths[0]}\r\nmissing.png\n"))
    r = ptrain("predict", str(run), str(paths[1]), "-", "--json")
    assert r.code == 1 and "missing.png" in r.err  # a listed path that is no file: named
    assert [x["image"] for x in r.json()["results"]] == [
        str(paths[1]), str(paths[2]), str(paths[0]), "missing.png"]


def test_a_crop_run_is_decoded_predicted_and_exported_as_it_resized(ptrain, tmp_path):
    """--resize crop is the run's: its images are decoded so (not read from the decode cache of a
    squash run of the same folder), predict and eval fit new images so, the export says so."""
    from test_images import _wide

    from pytorch_cli.data import batches
    from pytorch_cli.data.images import read_image
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            _wide(tmp_path / "imgs" / cls / f"{i}.png", h=int(rng.integers(20, 40)), w=80)
    train = ["train", "--dataset", "folder", "--data-dir", "imgs", "--image-size", "16",
             "--model", "cifar-net", "--epochs", "1", "--quiet"]
    assert ptrain(*train, "--run-dir", "squash").code == 0
    assert ptrain(*train, "--resize", "crop", "--run-dir", "crop").code == 0
    loaded = saved.load_model(tmp_path / "crop")
    data = saved._data(loaded, split="all")
    for name, image in zip(data.names["train"], data.train.images, strict=True):
        assert torch.equal(image, read_image(tmp_path / "imgs" / name, 3, (16, 16), "crop"))
    one = tmp_path / "imgs/a/0.png"
    r = ptrain("predict", "crop", str(one), "--json", "--top-k", "1")
    top = r.json()["results"][0]["top"][0]

    def prob(how: str) -> float:  # the model's answer to the image fitted this way
        x = read_image(one, 3, (16, 16), how)[None].float() / 255
        with torch.inference_mode():
            logits = loaded.model(batches.Normalize(loaded.meta["mean"], loaded.meta["std"])(x))
        return logits.softmax(1)[0, top["index"]].item()
    assert top["prob"] == pytest.approx(prob("crop"), abs=1e-5)
    assert abs(prob("crop") - prob("squash")) > 1e-4  # (so the line above can fail)
    assert ptrain("export", "crop", "--format", "torchscript").code == 0
    assert json.loads((tmp_path / "crop/model.torchscript.pt.json").read_text())["resize"] == "crop"
    # its safetensors export answers as model.pth does (predict had refused it, saying eval's
    # reason: a hostile trial); eval scores a folder with it only whole
    assert ptrain("export", "crop", "--format", "safetensors").code == 0
    weights = ptrain("predict", "crop/model.safetensors", str(one), "--json", "--top-k", "1")
    assert weights.code == 0 and weights.json()["results"][0]["top"][0] == top, weights.err
    r = ptrain("eval", "crop/model.safetensors")
    assert r.code == 2 and "give the run's model.pth, or score every image of a folder with " \
        "--data-dir DIR --split all" in r.err
    whole = [ptrain("eval", given, "--data-dir", "imgs", "--split", "all", "--json").json()
             for given in ("crop", "crop/model.safetensors")]
    assert whole[0]["acc"] == whole[1]["acc"] and whole[0]["loss"] == whole[1]["loss"]


def test_nul_separated_paths_on_standard_input_and_a_closed_one(run, ptrain, tmp_path,
                                                               monkeypatch):
    """`find -print0 | ptrain predict RUN -`: NUL-separated paths (a path holds no NUL) are read
    as such; standard input closed is one line, not a traceback."""
    paths = _as_files(datasets.Split(datasets.load("fake").test.images[:2], torch.zeros(2)),
                      tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{paths[1]}\0{paths[0]}\0"))
    r = ptrain("predict", str(run), "-", "--json")
    assert r.code == 0 and [x["image"] for x in r.json()["results"]] == [str(paths[1]),
                                                                         str(paths[0])]
    monkeypatch.setattr("sys.stdin", None)  # what Python has for a closed one (`<&-`)
    r = ptrain("predict", str(run), "-")
    assert r.code == 2 and r.err == ("ptrain: error: - stands for the image paths on standard "
                                     "input, which is closed\n")


def test_a_file_name_with_a_line_break_is_still_one_error_line(run, ptrain, tmp_path):
    """A path may hold a line break; the error naming it stays one line (written \\n)."""
    bad = tmp_path / "a\nb.png"
    bad.write_bytes(b"")
    r = ptrain("predict", str(run), str(bad), "--csv")
    assert r.code == 1 and r.err == f"ptrain: error: {tmp_path}/a\\nb.png is empty (0 bytes); " \
        "give an image file\n"


def test_a_built_in_sets_images_are_resized_as_eval_resizes_them(ptrain, tmp_path):
    """--image-size 36 on the fake set's 28x28 digits: predict brings each image to 36x36 on the
    device as eval does (batches.resize), not with PIL's resize (a hostile trial: eval and
    predict disagreed on 3 of MNIST's 10,000 test images at --image-size 40)."""
    from pytorch_cli.data import batches
    assert ptrain("train", "--dataset", "fake", "--image-size", "36", "--max-steps", "3",
                  "--run-dir", "r", "--quiet").code == 0
    test = datasets.load("fake").test
    answers = predicting.run_predict(tmp_path / "r", _as_files(test, tmp_path)[:100], 1, "cpu")
    loaded = saved.load_model(tmp_path / "r")
    x = batches.resize(test.images[:100], (36, 36)).float() / 255
    with torch.no_grad():
        probs = loaded.model(batches.Normalize(loaded.meta["mean"], loaded.meta["std"])(x))
    top = probs.softmax(1).max(1)
    assert [a["top"][0]["index"] for a in answers] == top.indices.tolist()
    assert [a["top"][0]["prob"] for a in answers] == pytest.approx(top.values.tolist(), abs=1e-6)
