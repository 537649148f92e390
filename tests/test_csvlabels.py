"""--labels FILE.csv: a folder's classes from a CSV file (Kaggle's train.csv), with real PNG files
read by the real decoders; each image lands in its listed class, bad rows are one line, listed
files that are not there are skipped and counted as unreadable ones are."""

import pytest
import torch
from conftest import read_metrics, run_cli
from test_folders import as_chw, noise, one_line_error, pairs, save

from pytorch_cli.data import catalog, csvlabels, datasets, folders
from pytorch_cli.platform.errors import PtrainError


def write_flat(root, labels: dict[str, str], suffix: str = ".png") -> dict[bytes, str]:
    """root/<id><suffix> for each id of labels (id -> class), flat as Kaggle's train/; written
    (C, H, W) bytes -> class."""
    written = {}
    for seed, (name, label) in enumerate(labels.items()):
        image = noise(seed)
        save(root / f"{name}{suffix}", image)
        written[as_chw(image)] = label
    return written


def write_csv(path, rows, header="id,label") -> str:
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return str(path)


def load(root, labels, **options) -> datasets.Data:
    return datasets.load(catalog.FOLDER, str(root), folder=folders.Options(labels=labels,
                                                                           **options))


def test_every_image_lands_in_its_listed_class_and_ids_need_no_extension(tmp_path):
    listed = {f"img{i:03d}": ("cat", "dog", "owl")[i % 3] for i in range(30)}
    written = write_flat(tmp_path / "train", listed)
    csv = write_csv(tmp_path / "train.csv", listed.items())
    data = load(tmp_path / "train", csv)
    assert data.classes == ["cat", "dog", "owl"]
    got = {**pairs(data.train, data.classes), **pairs(data.test, data.classes)}
    assert got == written  # every image once, in its listed class, none left out
    assert [int(n) for n in torch.bincount(data.test.labels)] == [2, 2, 2]  # 0.2 of each 10


def test_integer_classes_sort_as_numbers_and_row_order_changes_nothing(tmp_path):
    listed = {f"{i}.png": str((2, 10, 1)[i % 3]) for i in range(15)}
    write_flat(tmp_path / "imgs", {k[:-4]: v for k, v in listed.items()})
    one = load(tmp_path / "imgs", write_csv(tmp_path / "a.csv", listed.items()))
    two = load(tmp_path / "imgs", write_csv(tmp_path / "b.csv", reversed(listed.items()),
                                            header="\ufefffile,digit,extra"))  # BOM, a 3rd column
    assert one.classes == two.classes == ["1", "2", "10"]
    assert torch.equal(one.train.images, two.train.images)  # the same rows in the same order


def test_listed_files_that_are_not_there_are_skipped_and_counted(tmp_path, capsys):
    listed = {f"a{i}": "x" if i < 5 else "y" for i in range(10)}
    write_flat(tmp_path / "d", listed)
    rows = [*listed.items(), ("gone", "x"), ("sub/missing.png", "y"), ("anim.gif", "x"),
            ("sub", "y")]
    (tmp_path / "d/twin.png").write_bytes(b"")
    (tmp_path / "d/twin.jpg").write_bytes(b"")
    (tmp_path / "d/anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "d/sub").mkdir()
    data = load(tmp_path / "d", write_csv(tmp_path / "l.csv", [*rows, ("twin", "x")]))
    assert len(data.train) + len(data.test) == 10
    assert len(data.skipped) == 5
    assert any("anim.gif: listed, but not an image file (.jpg" in s for s in data.skipped)
    assert any("sub: listed, but a folder (.jpg" in s for s in data.skipped)
    assert any("gone: listed, no image files of that name" in s for s in data.skipped)
    assert any("missing.png: listed, but not there" in s for s in data.skipped)
    assert any("twin: listed, 2 (twin.jpg, twin.png)" in s for s in data.skipped)
    assert "skipped 5 files" in capsys.readouterr().err


@pytest.mark.parametrize("rows, header, says", [
    ([("a", "x"), ("a", "y")], "id,label", "'a' is 'x' on line 2 and 'y' on line 3"),
    ([("../b", "x")], "id,label", "line 2: '../b' is not inside --data-dir"),
    ([("/etc/passwd", "x")], "id,label", "is not inside --data-dir"),
    ([("a",)], "id,label", "line 2: ['a'] is not an image and its class"),
    ([], "id", "its first row must name two columns"),
    ([("a", "x"), ("b", "x")], "id,label", "1 class among the images found (2 rows)"),
    ([("imgs\\a", "x"), ("imgs\\b", "y")], "id,label", "none of its 2 files is under "),
    ([("elsewhere/a", "x"), ("b/b", "y")], "id,label", "(line 2: 'elsewhere/a'); pass --data-dir, "
                                                       "the folder its paths are relative to"),
    ([("x", "a"), ("y", "b")], "label,id", "its columns are the other way round (line 2: 'x', "
                                           "'a'): the image's path goes first, its class second"),
])
def test_a_bad_labels_file_is_one_line(tmp_path, rows, header, says):
    write_flat(tmp_path / "d", {"a": "x", "b": "y"})
    one_line_error(PtrainError, tmp_path / "d", says,
                   labels=write_csv(tmp_path / "l.csv", rows, header))


def test_a_csv_without_a_header_is_warned_of_as_its_first_image_is_left_out(tmp_path, capsys):
    """The first row is the header: a CSV without one lost its first image, unsaid (a hostile
    trial)."""
    listed = {f"a{i}": "x" if i < 5 else "y" for i in range(10)}
    write_flat(tmp_path / "d", listed)
    rows = [*listed.items()]
    data = load(tmp_path / "d", write_csv(tmp_path / "l.csv", rows[1:], header="a0,x"))
    assert len(data.train) + len(data.test) == 9
    assert capsys.readouterr().err == (
        f"warning: --labels {tmp_path / 'l.csv'}: its first row, read as the header, names an "
        "image ('a0'), which is left out; give the CSV a header row (image,class) to train on "
        "it\n")
    load(tmp_path / "d", write_csv(tmp_path / "h.csv", rows))  # a header: nothing to say
    assert capsys.readouterr().err == ""


def test_an_unreadable_labels_file_is_one_line(tmp_path):
    write_flat(tmp_path / "d", {"a": "x", "b": "y"})
    (tmp_path / "bin.csv").write_bytes(b"id,label\n\xff\xfe,x\n")
    one_line_error(PtrainError, tmp_path / "d", "not UTF-8 text", labels=str(tmp_path / "bin.csv"))
    one_line_error(PtrainError, tmp_path / "d", "no such file", labels=str(tmp_path / "no.csv"))
    one_line_error(PtrainError, tmp_path / "d", "not a regular file", labels=str(tmp_path))


def test_classes_sort_as_text_unless_all_are_integers():
    assert csvlabels.sort_classes({"10", "9", "-1"}) == ["-1", "9", "10"]
    assert csvlabels.sort_classes({"10", "9", "b"}) == ["10", "9", "b"]
    assert csvlabels.sort_classes({"1", "01", "001"}) == ["001", "01", "1"]  # however hashed


def test_a_csv_run_trains_evaluates_on_the_same_images_and_resumes(tmp_path):
    listed = {f"id{i}": ("no", "yes")[i % 2] for i in range(40)}
    write_flat(tmp_path / "train", listed)
    write_csv(tmp_path / "train.csv", listed.items())
    common = ["--dataset", "folder", "--data-dir", "train", "--labels", "train.csv",
              "--model", "fast-cnn", "--quiet"]
    trained = run_cli(["train", *common, "--epochs", "1", "--run-dir", "r", "--json"], tmp_path)
    assert trained.code == 0, trained.err
    final = trained.json()
    result = run_cli(["eval", "r", "--json"], tmp_path).json()
    assert (result["correct"], result["total"]) == (final["test_correct"], 8)
    assert list(result["per_class"]) == ["no", "yes"]
    for name, label in listed.items():  # the same images as class folders: --labels '' reads
        (tmp_path / "byclass" / label).mkdir(parents=True, exist_ok=True)  # them so
        (tmp_path / "byclass" / label / f"{name}.png").hardlink_to(tmp_path / "train" /
                                                                  f"{name}.png")
    every = run_cli(["eval", "r", "--split", "all", "--json"], tmp_path).json()
    folders_ = run_cli(["eval", "r", "--split", "all", "--json", "--data-dir", "byclass",
                        "--labels", ""], tmp_path).json()
    assert (folders_["correct"], folders_["total"]) == (every["correct"], every["total"]) \
        == (every["correct"], 40)
    (tmp_path / "train").rename(tmp_path / "moved")  # both moved: resume says where, once
    (tmp_path / "train.csv").rename(tmp_path / "moved.csv")
    resumed = run_cli(["resume", "r", "--epochs", "2", "--data-dir", "moved", "--labels",
                       "moved.csv"], tmp_path)
    assert resumed.code == 0 and "warning" not in resumed.err, resumed.err  # the same listing
    last = read_metrics(tmp_path / "r", kinds=("epoch",))[-1]
    assert (last["epoch"], last["test_total"]) == (2, 8)
    shown = run_cli(["summary", "--dataset", "folder", "--data-dir", "moved", "--labels",
                     "moved.csv", "--model", "fast-cnn", "--json"], tmp_path).json()
    of_run = run_cli(["summary", "r", "--json"], tmp_path).json()
    assert shown["params"] == of_run["params"]  # the model the CSV's 2 classes make


def test_labels_without_a_folder_dataset_is_refused(tmp_path):
    r = run_cli(["train", "--dataset", "fake", "--labels", "x.csv", "--dry-run"], tmp_path)
    assert r.code == 2 and "--labels names a folder's classes" in r.err
