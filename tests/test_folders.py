"""--dataset folder (folders.py): the user's own images in torchvision ImageFolder's layout, written
here with PIL as real files; bad files are skipped and listed, bad folders are one line."""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytorch_cli.data import catalog, datasets, folders, splits
from pytorch_cli.platform.errors import PtrainError, UsageError


def noise(seed: int, size=(8, 8), channels: int = 3) -> np.ndarray:
    """A distinct uint8 image (H, W, C) or (H, W) for channels == 1."""
    w, h = size
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path: Path, image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path)
    return path


def as_chw(array: np.ndarray) -> bytes:
    """A written (H, W[, C]) image as read_image gives it, (C, H, W), to compare by bytes."""
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).tobytes()


def write_classes(root: Path, counts: dict, channels: int = 3, size=(8, 8), start: int = 0
                  ) -> dict[bytes, str]:
    """root/<class>/<i>.png of distinct noise; (C, H, W) bytes of each image -> its class."""
    written, seed = {}, start
    for name, n in counts.items():
        for i in range(n):
            image = noise(seed, size, channels)
            save(root / name / f"{i}.png", image)
            written[as_chw(image)] = name
            seed += 1
    return written


def pairs(split: datasets.Split, classes: list[str]) -> dict[bytes, str]:
    return {split.images[i].numpy().tobytes(): classes[int(split.labels[i])]
            for i in range(len(split))}


def load(root: Path, seed: int = 1, **options) -> datasets.Data:
    return datasets.load(catalog.FOLDER, str(root), seed=seed, folder=folders.Options(**options))


def one_line_error(kind: type, root, *fragments: str, **options) -> str:
    with pytest.raises(kind) as e:
        datasets.load(catalog.FOLDER, str(root) if root is not None else "",
                      folder=folders.Options(**options))
    message = str(e.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- layout A: train/ and test/

@pytest.mark.parametrize("test_name", ["test", "val"])
def test_train_and_test_folders_give_sorted_classes_and_the_test_folders_images(tmp_path,
                                                                               test_name):
    train = write_classes(tmp_path / "train", {"dog": 3, "cat": 2, "ant": 2})
    deep = save(tmp_path / "train/cat/sub/deeper/nested.png", noise(100))  # nested: counts
    train[as_chw(noise(100))] = "cat"
    test = write_classes(tmp_path / test_name, {"dog": 2, "ant": 1, "cat": 1}, start=200)
    d = load(tmp_path)
    assert d.classes == ["ant", "cat", "dog"]
    assert pairs(d.train, d.classes) == train and pairs(d.test, d.classes) == test
    assert d.spec.channels == 3 and d.spec.size == (8, 8) and d.spec.num_classes == 3
    assert d.spec.name == catalog.FOLDER and not d.skipped and deep.is_file()


def test_known_pixels_come_back_exactly_in_rgb_and_gray(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2, 5] = (10, 200, 30)
    save(tmp_path / "rgb/train/a/known.png", rgb)
    save(tmp_path / "rgb/train/b/other.png", noise(1))
    save(tmp_path / "rgb/test/a/t.png", noise(2))
    d = load(tmp_path / "rgb")
    known = d.train.images[d.train.labels == 0][0]
    assert known.dtype == torch.uint8 and known.shape == (3, 8, 8)
    assert known[:, 2, 5].tolist() == [10, 200, 30] and int(known.sum()) == 240

    gray = np.full((8, 8), 7, np.uint8)
    gray[6, 1] = 250
    save(tmp_path / "gray/train/a/known.png", gray)
    save(tmp_path / "gray/train/b/other.png", noise(1, channels=1))
    save(tmp_path / "gray/test/b/t.png", noise(2, channels=1))
    d = load(tmp_path / "gray")
    assert d.spec.channels == 1 and d.train.images.shape == (2, 1, 8, 8)
    assert torch.equal(d.train.images[d.train.labels == 0][0, 0], torch.from_numpy(gray))


def test_a_train_folder_alone_holds_the_classes_and_a_test_split_is_held_out(tmp_path):
    write_classes(tmp_path / "train", {"a": 5, "b": 5})  # no test/ or val/ beside it
    d = load(tmp_path)
    assert d.classes == ["a", "b"] and len(d.test) == 2 and len(d.train) == 8


def test_a_class_named_train_is_a_class_and_train_beside_classes_is_refused(tmp_path, capsys):
    """train/ is a layout only beside test/ or val/ (or alone); among other class folders it
    is a class; with test/ and other folders too, one of the readings would drop images."""
    write_classes(tmp_path / "flat", {"bus": 3, "car": 3, "train": 3})
    d = load(tmp_path / "flat")
    assert d.classes == ["bus", "car", "train"] and len(d.train) + len(d.test) == 9
    write_classes(tmp_path / "both", {"train/a": 3, "train/b": 3, "test/a": 1, "bus": 2})
    one_line_error(PtrainError, tmp_path / "both", "holds train/ and test/ beside other folders "
                   "(bus): put every class folder inside train/ and test/")
    write_classes(tmp_path / "four", {"train/a": 3, "test/a": 1, "val/a": 1, "valid/a": 1})
    one_line_error(PtrainError, tmp_path / "four", "holds train/ and test/ beside other "
                   "folders (valid)")


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_a_validation_folder_beside_train_and_test_is_the_validation_set(tmp_path, capsys,
                                                                        val_name):
    """ImageNet's train/val/test, Roboflow's train/valid/test, Keras' validation/: the third
    folder is the validation set (best.pt, --patience), every image of it, decoded cold or read
    from the cache; --val-split has nothing to draw then, and says so."""
    train = write_classes(tmp_path / "train", {"a": 3, "b": 3})
    test = write_classes(tmp_path / "test", {"a": 1, "b": 2}, start=100)
    val = write_classes(tmp_path / val_name, {"b": 2}, start=200)  # some classes suffice
    for _ in ("cold", "cached"):
        d = datasets.load(catalog.FOLDER, str(tmp_path), val_split=0.25)
        assert [pairs(p, d.classes) for p in (d.train, d.test, d.val)] == [train, test, val]
        assert d.names["val"] == [f"{val_name}/b/0.png", f"{val_name}/b/1.png"]
        assert "--val-split 0.25 is not used" in capsys.readouterr().err
    whole = datasets.load(catalog.FOLDER, str(tmp_path), folder=folders.Options(hold_out=False))
    assert pairs(whole.val, whole.classes) == val  # eval --split all counts it too
    write_classes(tmp_path / val_name, {"c": 1}, start=300)
    one_line_error(PtrainError, tmp_path, f"{val_name}: class folder 'c' is not in "
                   f"{tmp_path / 'train'}; a {val_name} class must be one the model learns")


def test_a_test_split_beside_a_test_folder_is_named_as_unused(tmp_path, capsys):
    write_classes(tmp_path, {"train/a": 3, "train/b": 3, "test/a": 1, "test/b": 1})
    assert len(load(tmp_path, test_split=0.5).test) == 2  # the test folder's, all of it
    assert "--test-split 0.5 is not used: " in capsys.readouterr().err
    load(tmp_path)  # the default: nothing to say
    assert "test-split" not in capsys.readouterr().err


def test_a_link_back_up_is_read_once_not_looped(tmp_path):
    written = write_classes(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "up").symlink_to(tmp_path)  # would walk a, a/up/a, a/up/a/up/a...
    d = load(tmp_path, test_split=0.5)
    assert len(d.train) + len(d.test) == len(written) == 4
    assert any("a link to a folder read already" in s for s in d.skipped)


@pytest.mark.parametrize("train_name,test_name", [("Train", "Test"), ("Training", "Test"),
                                                   ("train", "testing")])
def test_split_folders_are_known_in_any_case(tmp_path, train_name, test_name):
    """GTSRB ships Train/ and Test/, Fruits-360 Training/ and Test/: read as train/ and test/,
    not as two classes called so (a classifier of splits at 100%)."""
    train = write_classes(tmp_path / train_name, {"cat": 2, "dog": 2})
    test = write_classes(tmp_path / test_name, {"cat": 1, "dog": 1}, start=100)
    d = load(tmp_path)
    assert d.classes == ["cat", "dog"]
    assert pairs(d.train, d.classes) == train and pairs(d.test, d.classes) == test


def test_a_split_folder_among_the_classes_is_refused_a_class_of_that_name_is_not(tmp_path):
    write_classes(tmp_path / "misplaced", {"cat": 2, "dog": 2, "test/cat": 1, "test/dog": 1})
    one_line_error(PtrainError, tmp_path / "misplaced", "misplaced/test holds folders named as "
                   "the classes beside it (cat, dog): it is a split, not a class")
    write_classes(tmp_path / "flat", {"cat": 2, "dog": 2, "test": 2})  # images: a class
    assert load(tmp_path / "flat").classes == ["cat", "dog", "test"]


def test_a_folder_or_image_linked_into_two_classes_is_refused_one_class_is_fine(tmp_path):
    """A link would label the same images as two classes: one line, as a CSV listing an image
    under two classes is."""
    write_classes(tmp_path / "dirs", {"a": 2, "b": 2})
    (tmp_path / "dirs/b/more").symlink_to(tmp_path / "dirs/a")
    one_line_error(PtrainError, tmp_path / "dirs", "dirs/b/more: class folder", "reads it too "
                   "(through a link), so its images would be labelled 'a' and 'b'")
    write_classes(tmp_path / "files", {"a": 2, "b": 2})
    (tmp_path / "files/a/x.png").symlink_to(tmp_path / "files/b/0.png")
    one_line_error(PtrainError, tmp_path / "files", "files/a/x.png: a link to", "so it would be "
                   "labelled 'b' and 'a'")
    write_classes(tmp_path / "same", {"a": 2, "b": 2})
    (tmp_path / "same/a/again.png").symlink_to(tmp_path / "same/a/0.png")  # one class: kept
    d = load(tmp_path / "same", test_split=0.5)
    assert len(d.train) + len(d.test) == 5


# ---------------------------------------------------------------- layout B: held out per class

def test_class_folders_in_dir_hold_out_a_stratified_disjoint_test_set(tmp_path):
    written = write_classes(tmp_path, {"a": 10, "b": 5, "c": 3})
    d = load(tmp_path)
    assert d.classes == ["a", "b", "c"]
    # round(0.2 x n), at least 1: 2 of 10, 1 of 5, 1 of 3
    assert torch.bincount(d.test.labels, minlength=3).tolist() == [2, 1, 1]
    assert torch.bincount(d.train.labels, minlength=3).tolist() == [8, 4, 2]
    train, test = pairs(d.train, d.classes), pairs(d.test, d.classes)
    assert not set(train) & set(test) and {**train, **test} == written

    half = load(tmp_path, test_split=0.5)
    assert torch.bincount(half.test.labels, minlength=3).tolist() == [5, 2, 2]  # 3 -> 2: not all
    assert len(half.train) == 18 - 9


def test_the_held_out_split_is_seeded(tmp_path):
    write_classes(tmp_path, {"a": 10, "b": 5, "c": 3})
    first, again, other = load(tmp_path, seed=3), load(tmp_path, seed=3), load(tmp_path, seed=4)
    assert torch.equal(first.test.images, again.test.images)
    assert torch.equal(first.train.images, again.train.images)
    assert set(pairs(first.test, first.classes)) != set(pairs(other.test, other.classes))


def test_held_out_and_val_images_keep_their_side_as_files_come_and_go(tmp_path):
    """Drawn by file name, one image added to a class and one removed from another move at
    most one other image each, held out or in --val-split's; drawn as runs saved before
    2026-12-06 were (a shuffle of the rows), many move."""
    write_classes(tmp_path, {"a": 30, "b": 20})
    def read(split):
        return datasets.load(catalog.FOLDER, str(tmp_path), val_split=0.2,
                             folder=folders.Options(split=split))
    before = {split: read(split) for split in ("by-name-per-class", "by-name", "")}
    save(tmp_path / "a" / "new.png", noise(999))
    (tmp_path / "b" / "3.png").unlink()
    for split, old in before.items():
        new = read(split)
        held, trained = pairs(old.test, old.classes), pairs(old.train, old.classes)
        now_held = pairs(new.test, new.classes)
        moved = (now_held.keys() & trained.keys()) | (pairs(new.train, new.classes).keys()
                                                      & held.keys())
        val_moved = pairs(new.val, new.classes).keys() ^ pairs(old.val, old.classes).keys()
        if split:
            assert len(now_held) == len(held) == 10 and len(moved) <= 2, len(moved)
            assert len(val_moved) <= 4  # (the new and the removed file among them)
        else:
            assert len(moved) > 6 and len(val_moved) > 6  # a reshuffle (13 and 8 here)


def test_a_skipped_file_mended_changes_the_listing_a_run_compares(tmp_path):
    """A truncated PNG (its header reads, its pixels do not) is skipped; mended, it is a new
    row the split may hold out: the listing changes, so eval and resume say so."""
    write_classes(tmp_path, {"a": 6, "b": 6})
    whole = (tmp_path / "a" / "1.png").read_bytes()
    (tmp_path / "a" / "1.png").write_bytes(whole[:-30])
    cut = load(tmp_path)
    assert len(cut.skipped) == 1 and len(cut.train) + len(cut.test) == 11
    (tmp_path / "a" / "1.png").write_bytes(whole)
    assert load(tmp_path).listing != cut.listing


def test_val_split_is_per_class_and_a_run_saved_before_keeps_its_rows(tmp_path):
    """A hostile trial's 53 + 12 images at --val-split 0.1, seed 2: class b had no validation
    image, so val accuracy (which picks best.pt) was 100% for a model that never said b (here,
    seed 0 does that). Now round(0.1 x n) of each class, as the test split; runs saved before
    draw as they did."""
    write_classes(tmp_path, {"a": 53, "b": 12})

    def read(split):
        return datasets.load(catalog.FOLDER, str(tmp_path), val_split=0.1, seed=0,
                             folder=folders.Options(split=split))
    new = read(splits.PER_CLASS)
    # held out for testing: round(0.2 x 53) = 11 and round(0.2 x 12) = 2, leaving 42 and 10
    assert torch.bincount(new.test.labels, minlength=2).tolist() == [11, 2]
    assert torch.bincount(new.val.labels, minlength=2).tolist() == [4, 1]  # 4.2 and 1.0
    assert torch.bincount(new.train.labels, minlength=2).tolist() == [38, 9]
    assert datasets.load(catalog.FOLDER, str(tmp_path), val_split=0.1, seed=0).val.labels \
        .tolist() == new.val.labels.tolist()  # (a new run's default)
    old = read(splits.BY_NAME)
    assert len(old.val) == 5 and torch.bincount(old.val.labels, minlength=2).tolist() == [5, 0]
    assert pairs(old.test, old.classes) == pairs(new.test, new.classes)  # the test rows alike
    with pytest.raises(UsageError, match=r"each class has a single training image"):
        splits.val_rows(2, 0.5, 0, ["x", "y"], torch.tensor([0, 1]))


def test_held_out_counts_per_class_and_a_single_image_stays_in_train():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1 + [3] * 2 + [4] * 3)
    mask = splits.held_out(labels, 0.2, seed=0)
    assert mask.dtype == torch.bool and mask.shape == labels.shape
    assert torch.bincount(labels[mask], minlength=5).tolist() == [2, 1, 0, 1, 1]
    assert torch.equal(mask, splits.held_out(labels, 0.2, seed=0))
    assert not torch.equal(mask, splits.held_out(labels, 0.2, seed=1))
    # never all of a class, at least 1 of one with 2 or more
    most = splits.held_out(labels, 0.99, seed=0)
    assert torch.bincount(labels[most], minlength=5).tolist() == [9, 4, 0, 1, 2]
    least = splits.held_out(labels, 0.01, seed=0)
    assert torch.bincount(labels[least], minlength=5).tolist() == [1, 1, 0, 1, 1]


# ---------------------------------------------------------------- extensions

def test_image_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS
    assert folders.IMAGE_EXTENSIONS == IMG_EXTENSIONS


def test_every_torchvision_extension_counts_in_any_case(tmp_path):
    names = ["a.PNG", "b.Jpg", "c.webp", "d.JPEG", "e.Tif", "f.tiff", "g.BMP", "h.ppm", "i.pgm"]
    for i, name in enumerate(names):
        image = noise(i, channels=1)
        save(tmp_path / "x" / name, image)
        save(tmp_path / "y" / name, image)
    d = load(tmp_path, test_split=0.2)
    assert not d.skipped and len(d.train) + len(d.test) == 2 * len(names)
    assert d.spec.channels == 3  # WebP holds no gray: PIL writes and reads it back as RGB
    (tmp_path / "x/c.webp").unlink()
    (tmp_path / "y/c.webp").unlink()
    assert load(tmp_path).spec.channels == 1  # every other file was written gray


# ---------------------------------------------------------------- bad files

@contextlib.contextmanager
def no_blocking(seconds: int = 20):
    """Fail the test, rather than hang the suite, if something blocks (a FIFO opened to read)."""
    def hung(*_):
        raise AssertionError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_bad_files_are_skipped_listed_and_counted_in_one_warning(tmp_path, capsys):
    write_classes(tmp_path, {"a": 3, "b": 3})
    bad = {
        tmp_path / "a/.DS_Store": b"\0\0\0\1Bud1",
        tmp_path / "a/.x.png": b"",
        tmp_path / "a/notes.txt": b"my notes",
        tmp_path / "a/empty.png": b"",
        tmp_path / "b/fake.jpg": b"this is not a JPEG",
        tmp_path / "stray.png": b"",
        tmp_path / "README.txt": b"about these images",
    }
    for path, raw in bad.items():
        path.write_bytes(raw)
    buf = io.BytesIO()
    Image.fromarray(noise(99)).save(buf, "PNG")  # 8x8, as the others
    whole = buf.getvalue()
    (tmp_path / "b/cut.png").write_bytes(whole[:len(whole) // 2])
    save(tmp_path / "a/.ipynb_checkpoints/0-checkpoint.png", noise(0))
    save(tmp_path / ".ipynb_checkpoints/a/0.png", noise(0))
    os.mkfifo(tmp_path / "b/x.png")
    bad_paths = [*bad, tmp_path / "b/cut.png", tmp_path / "a/.ipynb_checkpoints",
                 tmp_path / ".ipynb_checkpoints", tmp_path / "b/x.png"]

    capsys.readouterr()
    with no_blocking():
        d = load(tmp_path)
    assert len(d.train) + len(d.test) == 6 and d.classes == ["a", "b"]
    assert len(d.skipped) == len(bad_paths) == 11
    for path in bad_paths:  # each named once, with why
        assert sum(entry.startswith(f"{path}: ") or entry.startswith(f"{path} ")
                   for entry in d.skipped) == 1, (path, d.skipped)
    assert not any("checkpoint.png" in entry or "/.ipynb_checkpoints/a" in entry
                   for entry in d.skipped)  # a hidden folder is one entry, not walked
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "skipped 11 files" in lines[0]
    assert all(entry in lines[0] for entry in d.skipped[:3]) and d.skipped[3] not in lines[0]
    assert "skipped-files.txt" in lines[0]


def test_skipped_files_say_why(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a/notes.txt").write_text("x")
    (tmp_path / "a/empty.png").write_bytes(b"")
    (tmp_path / "b/fake.jpg").write_text("not a jpeg")
    os.mkfifo(tmp_path / "b/pipe.png")
    buf = io.BytesIO()
    Image.fromarray(noise(99)).save(buf, "PNG")
    (tmp_path / "b/cut.png").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    with no_blocking():
        why = {Path(e.split(":")[0].split(" ")[0]).name: e for e in load(tmp_path).skipped}
    assert "not an image file" in why["notes.txt"]
    assert "empty (0 bytes)" in why["empty.png"]
    assert "not an image file PIL can read" in why["fake.jpg"]
    assert "not a regular file (a FIFO)" in why["pipe.png"]
    assert "could not be decoded" in why["cut.png"] and "truncated" in why["cut.png"]


# ---------------------------------------------------------------- bad folders

def test_fewer_than_two_classes_is_one_error(tmp_path):
    (tmp_path / "none").mkdir()
    one_line_error(PtrainError, tmp_path / "none", "0 class folders found", "at least 2")
    write_classes(tmp_path / "one", {"only": 3})
    one_line_error(PtrainError, tmp_path / "one", "1 class folder found", "at least 2")
    write_classes(tmp_path / "ab/train", {"only": 3})
    write_classes(tmp_path / "ab/test", {"only": 1})
    one_line_error(PtrainError, tmp_path / "ab", str(tmp_path / "ab/train"), "1 class folder")


def test_a_set_to_evaluate_may_hold_one_class_and_read_whole_holds_nothing_out(tmp_path):
    """eval --split all: every image (a test/ folder's as the test split), none held out, of
    one class too; a class of one image, which leaves none to hold out, is no error then."""
    one = write_classes(tmp_path / "one", {"only": 1})
    d = load(tmp_path / "one", least_classes=1, hold_out=False)
    assert d.classes == ["only"] and pairs(d.train, d.classes) == one and len(d.test) == 0
    assert d.val is None and d.listing == ""
    one_line_error(PtrainError, tmp_path / "one", "no usable test image", least_classes=1)
    train = write_classes(tmp_path / "ab/train", {"a": 3, "b": 2})
    test = write_classes(tmp_path / "ab/test", {"b": 2}, start=100)
    d = load(tmp_path / "ab", hold_out=False)
    assert pairs(d.train, d.classes) == train and pairs(d.test, d.classes) == test
    (tmp_path / "none").mkdir()
    one_line_error(PtrainError, tmp_path / "none", "0 class folders found; images go in a "
                   "subfolder named for their class", least_classes=1)


@pytest.mark.parametrize("layout", ["held out", "test folder"])
def test_every_rows_file_is_named_in_each_split_cold_and_cached(tmp_path, monkeypatch, layout):
    """eval --errors names each image by its file: the names follow the rows of every split,
    held out or from test/, decoded or read back from the cache."""
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "imgs"
    if layout == "held out":
        pixels = write_classes(root, {"a": 5, "b": 4})
    else:
        pixels = {**write_classes(root / "train", {"a": 3, "b": 3}),
                  **write_classes(root / "test", {"a": 2, "b": 1}, start=50)}
    for _ in ("cold", "cached"):
        d = datasets.load(catalog.FOLDER, str(root), val_split=0.25)
        for split in ("train", "val", "test"):
            part = getattr(d, split)
            if part is None:
                continue
            names = d.names[split]
            assert len(names) == len(part) and len(part)
            for name, image in zip(names, part.images):
                assert pixels[as_chw(np.asarray(Image.open(root / name)))] == name.split("/")[-2]
                assert as_chw(np.asarray(Image.open(root / name))) == image.numpy().tobytes()


def test_a_file_name_that_is_no_utf8_is_read_cached_named_and_listed_by_its_bytes(tmp_path,
                                                                                  monkeypatch):
    """A name from another encoding (Latin-1's cafe + e-acute): Python holds its byte 0xE9 as a
    surrogate, which UTF-8 refuses; it is decoded, keyed in the cache, named in the split and
    in skipped-files.txt, and --errors writes it as its own bytes (a path open() takes)."""
    from pytorch_cli.commands import misclassified
    from pytorch_cli.store.rundir import RunDir
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    pixels = write_classes(tmp_path / "imgs", {"a": 3, "b": 3})
    odd = Path(os.fsdecode(os.fsencode(tmp_path / "imgs/a") + b"/caf\xe9.png"))
    image = noise(99, (8, 8), 3)
    save(odd, image)
    Path(os.fsdecode(os.fsencode(tmp_path / "imgs/b") + b"/empty\xe9.png")).write_bytes(b"")
    for _ in ("cold", "cached"):
        d = datasets.load(catalog.FOLDER, str(tmp_path / "imgs"),
                          folder=folders.Options(hold_out=False))
        row = d.names["train"].index("a/caf\udce9.png")
        assert d.train.images[row].numpy().tobytes() == as_chw(image)
        assert pairs(d.train, d.classes) == {**pixels, as_chw(image): "a"}
    run = RunDir(tmp_path / "run")
    run.create({"dataset": "folder"}, skipped=d.skipped)
    assert b"empty\xe9.png is empty" in (tmp_path / "run/skipped-files.txt").read_bytes()
    wrong = misclassified.Wrong(str(odd), "a", "b", 0.9, 0.1, 2.3, d.train.images[row])
    misclassified.write(tmp_path / "wrong.csv", [wrong])
    listed = (tmp_path / "wrong.csv").read_bytes().splitlines()[1].split(b",")[0]
    assert Path(os.fsdecode(listed)).read_bytes() == odd.read_bytes()


def test_a_folder_it_may_not_read_is_one_line_saying_so(tmp_path):
    """A class folder (or the folder itself) without read permission is "Permission denied",
    not "holds no usable image"; predict's folder gets a row for a subfolder it may not list.
    Root reads anything: as root, setpriv drops the capabilities that let it (a real process,
    not a mock: one, which locks each folder in turn, as the files' owner may)."""
    drop = "-dac_override,-dac_read_search,-fowner"
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("as root this needs setpriv (util-linux) to drop root's file permissions")
    as_user = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 \
        else []
    code = ("import sys; from pathlib import Path; from pytorch_cli.data import folders\n"
            "from pytorch_cli.platform.errors import PtrainError\n"
            "root = Path(sys.argv[1]); deep = root / 'a/deep'\n"
            "deep.chmod(0); print(*folders.images_in(root / 'a')); deep.chmod(0o755)\n"
            "for locked in (root / 'b', root):\n"
            "    locked.chmod(0)\n"
            "    try: folders.find(root)\n"
            "    except PtrainError as e: print(e)\n"
            "    finally: locked.chmod(0o755)\n")
    write_classes(tmp_path / "imgs", {"a": 2, "b": 2, "a/deep": 1})
    imgs, deep = tmp_path / "imgs", tmp_path / "imgs/a/deep"
    try:
        said = subprocess.run([*as_user, sys.executable, "-c", code, str(imgs)],
                              capture_output=True, text=True, timeout=120)
        if said.returncode and said.stderr.startswith("setpriv"):  # a container that
            pytest.skip(f"setpriv cannot drop capabilities here: {said.stderr.strip()}")
        assert said.stdout.splitlines() == [
            f"{[imgs / 'a/0.png', imgs / 'a/1.png']} "
            f"[(PosixPath('{deep}'), 'cannot read {deep}: Permission denied')]",
            f"cannot read {imgs / 'b'}: Permission denied",
            f"cannot read {imgs}: Permission denied"], said
    finally:
        for locked in (imgs, imgs / "b", deep):
            locked.chmod(0o755)


def test_files_beside_train_and_test_are_skipped_and_named(tmp_path):
    write_classes(tmp_path / "train", {"a": 2, "b": 2})
    write_classes(tmp_path / "test", {"a": 1, "b": 1}, start=10)
    (tmp_path / "notes.txt").write_text("x")
    save(tmp_path / "stray.png", noise(99))
    found = folders.find(tmp_path)
    assert found.skipped == [f"{tmp_path}/notes.txt: a file beside train/ and test/",
                             f"{tmp_path}/stray.png: a file beside train/ and test/"]
    assert len(found.train) == 4 and len(found.test) == 2


def test_a_class_of_only_bad_files_is_one_error_naming_it(tmp_path):
    write_classes(tmp_path, {"a": 3})
    (tmp_path / "b").mkdir()
    (tmp_path / "b/notes.txt").write_text("x")
    (tmp_path / "b/empty.png").write_bytes(b"")
    one_line_error(PtrainError, tmp_path, "class folder 'b' holds no usable image")
    (tmp_path / "c").mkdir()  # an empty folder is as empty
    (tmp_path / "b/empty.png").unlink()
    save(tmp_path / "b/ok.png", noise(50))
    one_line_error(PtrainError, tmp_path, "class folder 'c' holds no usable image")


def test_a_test_class_unknown_to_train_is_one_error(tmp_path):
    write_classes(tmp_path / "train", {"a": 2, "b": 2})
    write_classes(tmp_path / "test", {"a": 1, "zebra": 1})
    one_line_error(PtrainError, tmp_path, "'zebra'", str(tmp_path / "train"))


def test_no_images_at_all_is_one_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("x")
    (tmp_path / "b/empty.png").write_bytes(b"")
    one_line_error(PtrainError, tmp_path, "no readable images")


def test_a_test_folder_of_only_bad_images_is_one_error(tmp_path):
    write_classes(tmp_path / "train", {"a": 2, "b": 2})
    (tmp_path / "test/a").mkdir(parents=True)
    (tmp_path / "test/a/empty.png").write_bytes(b"")
    one_line_error(PtrainError, tmp_path, "no usable test image")


def test_dir_that_is_no_folder_or_missing_is_one_error(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    for root in (tmp_path / "file.png", tmp_path / "missing"):
        with pytest.raises(PtrainError) as e:
            load(root)
        assert e.value.exit_code == 1 and "\n" not in str(e.value)
        assert f"{root} is not a folder" in str(e.value) and "--data-dir" in str(e.value)


def test_folder_without_data_dir_is_a_usage_error():
    message = one_line_error(UsageError, None, "--data-dir")
    assert "--dataset folder" in message
    with pytest.raises(UsageError) as e:
        datasets.load(catalog.FOLDER, "")
    assert e.value.exit_code == 2


# ---------------------------------------------------------------- modes and channels

def mode_image(mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16))
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (8, 8), dtype=np.uint8) * 255).convert("1")
    return Image.fromarray(noise(seed)).convert(mode)


CHANNELS = {"L": 1, "LA": 1, "I;16": 1, "1": 1, "RGB": 3, "RGBA": 3, "P": 3, "CMYK": 3}


@pytest.mark.parametrize("mode", CHANNELS)
def test_auto_channels_is_one_only_when_every_image_is_gray(tmp_path, mode):
    ext = ".tif" if mode == "CMYK" else ".png"  # PNG holds no CMYK
    for i in range(4):
        image = mode_image(mode, i)
        save(tmp_path / "only" / "ab"[i % 2] / f"{i}{ext}", image)
        save(tmp_path / "mixed" / "ab"[i % 2] / f"{i}{ext}", image)
    assert Image.open(tmp_path / f"only/a/0{ext}").mode == mode  # as written, so as read
    d = load(tmp_path / "only", test_split=0.5)
    assert d.spec.channels == CHANNELS[mode] and d.train.images.shape[1:] == (CHANNELS[mode], 8, 8)
    assert not d.skipped
    # one image of the other kind decides it: gray only when all are
    other = "RGB" if CHANNELS[mode] == 1 else "L"
    save(tmp_path / "mixed/a/other.png", mode_image(other, 9))
    assert load(tmp_path / "mixed", test_split=0.5).spec.channels == 3


def test_channels_given_convert_gray_to_three_equal_and_rgb_to_one(tmp_path):
    write_classes(tmp_path / "gray", {"a": 2, "b": 2}, channels=1)
    d = load(tmp_path / "gray", channels=3)
    assert d.spec.channels == 3 and d.train.images.shape[1] == 3
    x = d.train.images
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert d.spec.augment == "crop-flip"  # a 3-channel folder is treated as colour

    for cls in "ab":
        save(tmp_path / "rgb" / cls / "red.png", Image.new("RGB", (8, 8), (255, 0, 0)))
        save(tmp_path / "rgb" / cls / "blue.png", Image.new("RGB", (8, 8), (0, 0, 255)))
    d = load(tmp_path / "rgb", channels=1, test_split=0.5)
    assert d.spec.channels == 1 and d.spec.augment == "none"
    values = set(torch.cat([d.train.images, d.test.images]).flatten().tolist())
    assert values == {76, 29}  # ITU-R 601 luma of pure red and pure blue


def test_sixteen_bit_gray_is_scaled_to_eight_bits_not_clipped(tmp_path):
    a = np.zeros((8, 8), np.uint16)
    a[0, 0], a[0, 1], a[0, 2] = 65535, 32896, 1000
    for cls in "ab":
        save(tmp_path / "train" / cls / "x.png", Image.fromarray(a))
    save(tmp_path / "test/a/x.png", Image.fromarray(a))
    d = load(tmp_path)
    assert d.spec.channels == 1
    assert d.train.images[0, 0, 0, :4].tolist() == [255, 128, 4, 0]  # 1000 -> 4, not 255


# ---------------------------------------------------------------- size

def test_default_size_is_the_images_own(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2}, size=(12, 12))
    d = load(tmp_path)
    assert d.spec.size == (12, 12) and d.train.images.shape[2:] == (12, 12)


def test_mixed_sizes_need_image_size(tmp_path):
    write_classes(tmp_path, {"a": 2}, size=(8, 8))
    write_classes(tmp_path, {"b": 2}, size=(12, 12), start=10)
    one_line_error(UsageError, tmp_path, "8x8", "12x12", "--image-size")


def test_non_square_images_of_one_size_keep_it(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2}, size=(12, 8))  # PIL's (width, height)
    d = load(tmp_path)
    assert d.spec.size == (8, 12) and d.train.images.shape[2:] == (8, 12)  # height x width
    write_classes(tmp_path, {"c": 2}, size=(8, 12), start=10)
    one_line_error(UsageError, tmp_path, "8x12", "12x8", "(height x width)", "N or HxW")


def test_image_size_h_by_w_resizes_to_that_height_and_width(tmp_path):
    write_classes(tmp_path, {"a": 2, "b": 2}, size=(12, 8))
    d = load(tmp_path, image_size=(10, 20), test_split=0.5)
    assert d.spec.size == (10, 20) and d.train.images.shape[1:] == (3, 10, 20)


def test_image_size_resizes_every_image(tmp_path):
    write_classes(tmp_path, {"a": 2}, size=(8, 8))
    write_classes(tmp_path, {"b": 2}, size=(12, 20), start=10)
    save(tmp_path / "b/flat.png", Image.new("RGB", (30, 10), (40, 80, 120)))
    d = load(tmp_path, image_size=(16, 16), test_split=0.4)
    assert d.spec.size == (16, 16)
    x = torch.cat([d.train.images, d.test.images])
    assert x.shape == (5, 3, 16, 16)
    flat = [img for img in x if int(img.max()) == 120 and int(img.min()) == 40]
    assert len(flat) == 1 and flat[0][:, 7, 7].tolist() == [40, 80, 120]


def test_images_over_max_image_size_are_a_usage_error(tmp_path):
    write_classes(tmp_path / "small", {"a": 2, "b": 2})
    most = catalog.MAX_IMAGE_SIZE
    one_line_error(UsageError, tmp_path / "small", f"{most + 1}x{most + 1}", f"at most {most}",
                   image_size=(most + 1, most + 1))
    assert load(tmp_path / "small", image_size=(most, most)).spec.size == (most, most)

    for cls in "ab":
        save(tmp_path / "big" / cls / "x.png", Image.new("L", (most + 1, most + 1)))
        save(tmp_path / "big" / cls / "y.png", Image.new("L", (most + 1, most + 1)))
    one_line_error(UsageError, tmp_path / "big", "--image-size")


# ---------------------------------------------------------------- mean and std

def test_mean_and_std_are_the_training_images(tmp_path):
    write_classes(tmp_path / "train", {"a": 3, "b": 3})
    for cls in "ab":  # white test images: counted, they would move the mean
        save(tmp_path / "test" / cls / "white.png", Image.new("RGB", (8, 8), (255, 255, 255)))
    d = load(tmp_path)
    x = d.train.images.numpy().astype(np.float64) / 255
    mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    assert len(d.spec.mean) == len(d.spec.std) == 3
    assert np.abs(np.array(d.spec.mean) - mean).max() <= 5.01e-5
    assert np.abs(np.array(d.spec.std) - std).max() <= 5.01e-5
    assert all(v == round(v, 4) for v in (*d.spec.mean, *d.spec.std))

    given = ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    kept = load(tmp_path, stats=given)
    assert kept.spec.mean == (0.1, 0.2, 0.3) and kept.spec.std == (0.4, 0.5, 0.6)


def test_a_flat_folder_has_std_of_one_level_not_zero(tmp_path):
    for cls in "ab":
        for i in range(2):
            save(tmp_path / cls / f"{i}.png", Image.new("L", (8, 8), 100))
    d = load(tmp_path)
    assert d.spec.mean == (round(100 / 255, 4),) and d.spec.std == (round(1 / 255, 4),)
    assert d.spec.std[0] > 0
