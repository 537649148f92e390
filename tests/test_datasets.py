import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import write_cifar10_binary, write_cifar10_python, write_cifar100_python, write_mnist

from pytorch_cli.data import datasets
from pytorch_cli.platform.errors import PtrainError, UsageError

load = datasets.load


def test_mnist_gz_folder_is_read_with_exact_pixels(tmp_path):
    written = write_mnist(tmp_path / "files", n_train=64, n_test=32)
    d = load("mnist", data_dir=str(tmp_path / "files"))
    assert d.train.images.shape == (64, 1, 28, 28) and d.train.images.dtype == torch.uint8
    assert torch.equal(d.train.images[:, 0], torch.from_numpy(written["train"][0][:, 0]))
    assert torch.equal(d.test.labels, torch.from_numpy(written["t10k"][1]).long())
    assert d.classes[0] == "0 - zero"  # torchvision's class names


def test_torchvision_layout_with_extracted_files_is_found(tmp_path):
    write_mnist(tmp_path / "gz", n_train=16, n_test=8)
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    import gzip
    for gz in (tmp_path / "gz").glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    d = load("fashion-mnist", data_dir=str(tmp_path / "root"))
    assert len(d.train) == 16 and len(d.test) == 8
    assert d.classes[0] == "T-shirt/top"


@pytest.mark.parametrize("writer", [write_cifar10_python, write_cifar10_binary])
def test_cifar10_python_and_binary_layouts(tmp_path, writer):
    written = writer(tmp_path)
    d = load("cifar10", data_dir=str(tmp_path))
    assert d.train.images.shape == (500, 3, 32, 32)
    first = next(iter(written.values()))
    assert torch.equal(d.train.images[:100], torch.from_numpy(first[0]))
    assert torch.equal(d.train.labels[:100], torch.from_numpy(first[1]).long())
    assert len(d.test) == 200 and d.classes[:2] == ["airplane", "automobile"]


def test_cifar10_folder_itself_can_be_the_data_dir(tmp_path):
    write_cifar10_python(tmp_path)
    d = load("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"))
    assert len(d.train) == 500


def test_cifar100_uses_fine_labels(tmp_path):
    written = write_cifar100_python(tmp_path)
    d = load("cifar100", data_dir=str(tmp_path))
    assert torch.equal(d.train.labels, torch.from_numpy(written["train"][1]).long())
    assert int(d.train.labels.max()) > 20 and d.classes[99] == "class99"


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_cifar_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar10_python(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Boom(), "labels": []}, f, protocol=2)
    with pytest.raises(PtrainError, match="unreadable or corrupt.*refusing to load posix.system"):
        load("cifar10", data_dir=str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_corrupt_idx_file_is_one_clear_error(tmp_path):
    write_mnist(tmp_path, n_train=16, n_test=8)
    import gzip
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03garbage")
    with pytest.raises(PtrainError) as e:
        load("mnist", data_dir=str(tmp_path))
    assert str(e.value) == (f"{tmp_path / 'train-images-idx3-ubyte.gz'} is truncated: it ends "
                            "inside its header; replace it with the original file")


def test_missing_dataset_without_download_names_dataset_and_folder(tmp_path):
    with pytest.raises(PtrainError) as e:
        load("cifar100", data_dir=str(tmp_path), download=False)
    assert (
        "cifar100" in str(e.value)
        and str(tmp_path) in str(e.value)
        and "--data-dir" in str(e.value)
    )


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    # The real torchvision downloader, pointed at a port where nothing listens.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(PtrainError, match=r"mnist: not found in .* and the download failed"):
        load("mnist", data_dir=str(tmp_path / "dl"), download=True)
    assert not (tmp_path / "dl").exists()  # no empty dl/MNIST/raw left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("the user's")
    with pytest.raises(PtrainError):
        load("mnist", data_dir=str(tmp_path / "mine"), download=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]


def test_fashion_mnist_default_search_includes_debian_folder(monkeypatch):
    monkeypatch.delenv("PTRAIN_DATA_DIR", raising=False)
    dirs = datasets.search_dirs("fashion-mnist")
    assert dirs == [Path("data"), Path("/usr/share/datasets/fashion-mnist")]
    monkeypatch.setenv("PTRAIN_DATA_DIR", "/somewhere")
    assert datasets.search_dirs("mnist") == [Path("/somewhere")]
    assert datasets.search_dirs("mnist", "given") == [Path("given")]


def test_val_split_is_seeded_and_disjoint():
    a = load("fake", val_split=0.1, seed=3)
    b = load("fake", val_split=0.1, seed=3)
    c = load("fake", val_split=0.1, seed=4)
    assert len(a.val) == 200 and len(a.train) == 1800 and len(a.test) == 500
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    full = load("fake")
    # every training image is in exactly one of the two parts
    assert sorted(torch.cat([a.train.labels, a.val.labels]).tolist()) == sorted(
        full.train.labels.tolist()
    )


def test_val_split_that_leaves_no_training_images_is_a_usage_error():
    with pytest.raises(UsageError, match=r"--val-split 0.9999 leaves no training images"):
        load("fake", val_split=0.9999)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_copy_missing_one_file_names_it(tmp_path, dataset):
    """3 of MNIST's 4 files (or 5 of CIFAR-10's 6): the one missing is named, not "none found"."""
    if dataset == "mnist":
        write_mnist(tmp_path)
        (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
        said = f"mnist: {tmp_path} holds 3 of its 4 files; missing: train-labels-idx1-ubyte(.gz)"
    else:
        write_cifar10_binary(tmp_path)
        (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
        said = (f"cifar10: {tmp_path / 'cifar-10-batches-bin'} holds 5 of its 6 files; "
                "missing: data_batch_3.bin")
    for download in (False, True):  # never a download beside a damaged copy
        with pytest.raises(PtrainError, match=re.escape(said)):
            load(dataset, data_dir=str(tmp_path), download=download)


def test_a_cifar_file_cut_at_a_record_boundary_is_named_in_a_warning(tmp_path, capsys):
    """A whole test file of the original 10,000 images beside training files cut to 100
    records: a warning names them; a subset made on purpose (every file smaller) reads
    quietly."""
    write_cifar10_binary(tmp_path / "subset")
    assert len(load("cifar10", data_dir=str(tmp_path / "subset")).test) == 200
    assert "warning" not in capsys.readouterr().err
    write_cifar10_binary(tmp_path, per_batch=100, n_test=10_000)
    d = load("cifar10", data_dir=str(tmp_path))
    assert len(d.train) == 500 and len(d.test) == 10_000
    assert ("data_batch_1.bin (100), data_batch_2.bin (100), data_batch_3.bin (100), "
            "data_batch_4.bin (100), data_batch_5.bin (100) images, where the original files "
            "hold 10,000 a training file and 10,000 the test file") in capsys.readouterr().err
