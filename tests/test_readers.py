"""Each kind of bad file is one PtrainError line that names the user's file and the fault, found
as the dataset is read (datasets.load, what train, eval and export call) or as predict reads an
image; real files written in tmp_path."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    MNIST_DIR,
    write_cifar10_binary,
    write_cifar10_python,
    write_cifar100_python,
    write_mnist,
)

from pytorch_cli.data import datasets
from pytorch_cli.platform.errors import PtrainError


def fails(name, root, *fragments) -> str:
    """load(name) from root fails with exit code 1 and one line holding every fragment."""
    with pytest.raises(PtrainError) as e:
        datasets.load(name, data_dir=str(root), download=False)
    message = str(e.value)
    assert e.value.exit_code == 1 and "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def raw_idx(path, header: bytes, data: bytes = b"") -> None:
    path.unlink(missing_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def edit_pickle(path, protocol=2, **changes) -> None:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch.update(changes)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

@pytest.mark.parametrize("header, data, fault", [
    (b"", b"", "is empty"),
    (b"\x00\x00\x08", b"", "is not an IDX file"),
    (b"PK\x03\x04", b"zip", "is not an IDX file (it starts with 0x504b0304"),
    (b"\x00\x00\x0d\x03", b"", "type 0x0d, not unsigned bytes"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 16), bytes(16), "1-dimensional data, not 3"),
    (b"\x00\x00\x08\x03garbage", b"", "ends inside its header"),
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 16, 28, 28), bytes(100),
     "is truncated: its header says 16x28x28 (12544 bytes) but it holds 100"),
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 16, 28, 28), bytes(12545), "has bytes after"),
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 0, 28, 28), b"", "holds no images"),
])
def test_bad_idx_header_or_length_names_the_file(tmp_path, header, data, fault):
    write_mnist(tmp_path, n_train=16, n_test=8)
    raw_idx(tmp_path / "train-images-idx3-ubyte.gz", header, data)
    fails("mnist", tmp_path, tmp_path / "train-images-idx3-ubyte.gz", fault, "original file")


def test_damaged_gzip_is_reported_by_the_users_path(tmp_path):
    write_mnist(tmp_path, n_train=16, n_test=8)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # cut off the end of the stream
    message = fails("mnist", tmp_path, path, "damaged or incomplete gzip file")
    assert "ptrain-" not in message  # no temporary staging folder


def test_gzipped_file_without_gz_suffix_is_still_read(tmp_path):
    written = write_mnist(tmp_path, n_train=16, n_test=8)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.rename(tmp_path / "train-images-idx3-ubyte")
    d = datasets.load("mnist", data_dir=str(tmp_path))
    assert d.train.images[:, 0].numpy().tolist() == written["train"][0][:, 0].tolist()


@pytest.mark.parametrize("split, n_images, n_labels", [("train", 256, 200), ("t10k", 64, 10)])
def test_idx_images_and_labels_of_different_counts(tmp_path, split, n_images, n_labels):
    write_mnist(tmp_path, n_train=256, n_test=64)
    labels = tmp_path / f"{split}-labels-idx1-ubyte.gz"
    raw_idx(labels, b"\x00\x00\x08\x01" + struct.pack(">I", n_labels), bytes(n_labels))
    fails("mnist", tmp_path, f"{tmp_path / f'{split}-images-idx3-ubyte.gz'} holds {n_images} "
          f"images but {labels} {n_labels} labels; replace them with the original files")


@pytest.mark.parametrize("size", [(32, 32), (2000, 2000), (1, 1), (28, 27)])
def test_idx_images_of_the_wrong_size(tmp_path, size):
    write_mnist(tmp_path, n_train=2, n_test=8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw_idx(path, b"\x00\x00\x08\x03" + struct.pack(">3I", 2, *size), bytes(2 * size[0] * size[1]))
    fails("fashion-mnist", tmp_path, path, f"holds {size[0]}x{size[1]} images",
          "fashion-mnist's are 28x28")


@pytest.mark.parametrize("value", [10, 255])
def test_idx_label_out_of_range(tmp_path, value):
    write_mnist(tmp_path, n_train=16, n_test=8)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw_idx(path, b"\x00\x00\x08\x01" + struct.pack(">I", 8), bytes(5) + bytes([value, 0, 0]))
    fails("mnist", tmp_path, path, f"label {value} (record 5) is out of range 0-9")


# ---------------------------------------------------------------- CIFAR batches

def test_cifar_pickle_with_fewer_labels_than_images(tmp_path):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    edit_pickle(path, labels=list(range(10)))
    fails("cifar10", tmp_path, f'{path} holds 100 images but 10 "labels"')


@pytest.mark.parametrize("changes, fault", [
    ({"data": None}, 'its "data" is a NoneType, not rows of 3072 pixel bytes'),
    ({"data": np.zeros((100, 3000), np.uint8)}, '"data" rows are 3000 values wide, not 3072'),
    ({"data": np.zeros((100, 3072), np.float32)}, "a float32 array of shape (100, 3072)"),
    ({"data": np.full((100, 3072), 256)}, "values outside 0-255"),
    ({"labels": "cat"}, 'its "labels" is a str, not a list of whole numbers'),
    ({"labels": [0.5] * 100}, 'its "labels" is a list of float'),
])
def test_cifar_pickle_with_a_bad_entry(tmp_path, changes, fault):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    edit_pickle(path, **changes)
    fails("cifar10", tmp_path, path, fault, "original file")


def test_cifar_pickle_with_no_records(tmp_path):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    # protocol 4: protocol 2 stores an empty array's bytes with a call the reader refuses
    edit_pickle(path, protocol=4, data=np.zeros((0, 3072), np.uint8), labels=[])
    fails("cifar10", tmp_path, path, "holds no images")


def test_cifar_pickle_missing_an_entry_or_not_a_dict(tmp_path):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    fails("cifar10", tmp_path, path, 'has no "labels" entry')
    with open(path, "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    fails("cifar10", tmp_path, path, "holds a pickled list, not a CIFAR dict")
    path.write_bytes(path.read_bytes()[:5])
    fails("cifar10", tmp_path, path, "unreadable or corrupt")


@pytest.mark.parametrize("name", ["test_batch.bin", "data_batch_4.bin"])
def test_zero_byte_cifar_binary_batch_fails_at_read_time(tmp_path, ptrain, name):
    write_cifar10_binary(tmp_path / "d")
    path = tmp_path / "d" / "cifar-10-batches-bin" / name
    path.write_bytes(b"")
    r = ptrain("train", "--dataset", "cifar10", "--data-dir", tmp_path / "d", "--epochs", "1",
               "--dry-run", "--device", "cpu", "--no-download")
    assert r.code == 1 and f"{path} is empty" in r.err and "ZeroDivision" not in r.err
    path.write_bytes(bytes(3073 * 3 - 7))  # two whole records and a cut one
    fails("cifar10", tmp_path / "d", path, "is 9212 bytes, not a whole number of 3073-byte")


@pytest.mark.parametrize("value", [10, -1])
def test_cifar10_pickle_label_out_of_range(tmp_path, value):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    edit_pickle(path, labels=[0] * 99 + [value])
    fails("cifar10", tmp_path, path, f"label {value} (record 99) is out of range 0-9")


def test_cifar_binary_label_out_of_range(tmp_path):
    write_cifar10_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin"
    raw = bytearray(path.read_bytes())
    raw[3073 * 2] = 10  # the third record's label byte
    path.write_bytes(bytes(raw))
    fails("cifar10", tmp_path, path, "label 10 (record 2) is out of range 0-9")


def test_cifar100_binary_labels_out_of_range(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    record = bytes(3074)
    (folder / "train.bin").write_bytes(record * 3)
    (folder / "test.bin").write_bytes(record + bytes([0, 100]) + bytes(3072))
    fails("cifar100", tmp_path, folder / "test.bin", "label 100 (record 1) is out of range 0-99")
    (folder / "test.bin").write_bytes(bytes([20, 5]) + bytes(3072))
    fails("cifar100", tmp_path, folder / "test.bin", "coarse label 20 (record 0)", "0-19")


def test_cifar100_pickle_labels_out_of_range(tmp_path):
    write_cifar100_python(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    edit_pickle(path, fine_labels=[-1] + [0] * 299)
    fails("cifar100", tmp_path, path, "label -1 (record 0) is out of range 0-99")
    edit_pickle(path, fine_labels=[0] * 300, coarse_labels=[0] * 299)
    fails("cifar100", tmp_path, path, 'holds 300 images but 299 "coarse_labels"')


# ---------------------------------------------------------------- class-name (meta) files

def test_meta_txt_with_too_few_names(tmp_path):
    write_cifar10_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "batches.meta.txt"
    path.write_text("airplane\nautomobile\n")
    fails("cifar10", tmp_path, path, "names 2 classes but cifar10 has 10")
    path.write_bytes(b"\xff\xfe\x00garbage")
    fails("cifar10", tmp_path, path, "is not a text file of class names")


@pytest.mark.parametrize("names, fault", [
    (["a", "b"], "names 2 classes but cifar10 has 10"),
    (list(range(10)), "the class names are not a list of text"),
    ("airplane", "the class names are not a list of text"),
    (["cat"] * 10, 'names the class "cat" twice'),
])
def test_cifar10_meta_pickle_with_bad_names(tmp_path, names, fault):
    write_cifar10_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "batches.meta"
    edit_pickle(path, label_names=names)
    fails("cifar10", tmp_path, path, fault)


def test_cifar100_meta_pickle_with_missing_or_short_names(tmp_path):
    write_cifar100_python(tmp_path)
    path = tmp_path / "cifar-100-python" / "meta"
    edit_pickle(path, fine_label_names=[f"c{i}" for i in range(99)])
    fails("cifar100", tmp_path, path, "names 99 classes but cifar100 has 100")
    with open(path, "wb") as f:
        pickle.dump({"coarse_label_names": []}, f, protocol=2)
    fails("cifar100", tmp_path, path, 'has no "fine_label_names" entry')


# ---------------------------------------------------------------- images for predict


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@pytest.mark.skipif(not (MNIST_DIR and FASHION_DIR.is_dir()),
                    reason="needs real MNIST (../shared/data/mnist) and Debian's "
                    "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_mnists_and_fashion_mnists_files_are_told_apart():
    """Same names, sizes and headers: a hostile trial's fashion-mnist run read MNIST's digits
    and called a 7 a Sneaker. Each set is known by its first 1,000 images."""
    with pytest.raises(PtrainError, match=r"train-images-idx3-ubyte.gz holds mnist's images, "
                       r"not fashion-mnist's: pass --data-dir the folder of fashion-mnist's "
                       r"files \(or --dataset mnist\)$"):
        datasets.load("fashion-mnist", str(MNIST_DIR), download=False)
    with pytest.raises(PtrainError, match="holds fashion-mnist's images, not mnist's"):
        datasets.load("mnist", str(FASHION_DIR), download=False)
    assert datasets.load("fashion-mnist", str(FASHION_DIR), download=False).classes[7] == "Sneaker"
