"""Small datasets written in the real on-disk formats, and a way to run the CLI in-process."""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores, each with torch's two threads (the numbers
    # the tests compare were made that way): passive OpenMP threads sleep rather than spin
    # while the other worker's threads run; read once, as torch starts (also by every process
    # the tests start)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# The decode cache of folder datasets (data/cache.py): the session's own, removed at its end;
# each test then gets one of its own (_no_outside_influence)
os.environ["PTRAIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptrain-test-cache-")
atexit.register(shutil.rmtree, os.environ["PTRAIN_CACHE_DIR"], ignore_errors=True)

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # started in the background by a shell without job control (`make test &`): SIGINT comes
    # ignored, and ptrain leaves an ignored signal ignored, as nohup asks; the Ctrl-C tests
    # need it live, here and in the processes they start
    signal.signal(signal.SIGINT, signal.default_int_handler)

from pytorch_cli.commands.cli import main  # noqa: E402


def pytest_itemcollected(item):
    """Tests that share a session-wide fixture (a trained run) go to one xdist worker
    (`--dist loadgroup`), so it is made once. Here, as each test is collected: xdist reads the
    groups in its own pytest_collection_modifyitems."""
    info = getattr(item, "_fixtureinfo", None)
    shared = sorted(f"{defs[-1].baseid}::{name}"
                    for name, defs in (info.name2fixturedefs if info else {}).items()
                    if defs[-1].scope in ("module", "session") and name in item.fixturenames
                    and defs[-1].baseid)  # made here, not pytest's own (tmp_path_factory)
    if shared:
        item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_collection_modifyitems(config, items):
    """Tests marked cuda skip, saying why, on machines without a CUDA GPU (CI has none)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def _machine_settings() -> list[str]:
    """The PTRAIN_* variables set where the tests run (PTRAIN_TEST_* point the tests at data)."""
    return [n for n in os.environ if n.startswith("PTRAIN_") and not n.startswith("PTRAIN_TEST_")
            and n != "PTRAIN_CACHE_DIR"]  # (set for the tests, below)


def _exit_code(args: list) -> int:
    """Run `ptrain ARGS` in this process; its exit code."""
    try:
        main([str(a) for a in args])
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


@pytest.fixture(autouse=True)
def _no_outside_influence(monkeypatch, tmp_path):
    """No test depends on where pytest was started (README's main job may have left runs/ there)
    or on the PTRAIN_* settings of the machine running it."""
    for name in _machine_settings():
        monkeypatch.delenv(name)
    # a decode cache of its own (beside the test's folder, not in it): never ~/.cache/ptrain
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    # pretrained weights: torch's and Hugging Face's caches of its own, empty (no download lands)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path.parent / f"{tmp_path.name}-torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path.parent / f"{tmp_path.name}-hf"))
    monkeypatch.chdir(tmp_path)


def _tmpfs(path: Path, size: str, options: str = "") -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")


@pytest.fixture
def mounts():
    """mount(path, size): a real tmpfs of that size at path (a full disk), unmounted after."""
    made: list[Path] = []

    def mount(path: Path, size: str = "1m", options: str = "") -> Path:
        _tmpfs(path, size, options)
        made.append(path)
        return path
    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _real_data(variable: str, default: Path) -> str:
    """Real data for the end-to-end tests: the variable's folder, else the usual place if it is
    there (shared/ beside the checkout; Debian's package folder), else "" (those tests skip).
    Absolute, since the tests run from temporary folders."""
    given = os.environ.get(variable)
    if given:
        return os.path.abspath(given)
    return str(default) if default.is_dir() else ""


MNIST_DIR = _real_data(
    "PTRAIN_TEST_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared/data/mnist"
)


def learnable_images(n: int, channels: int, size: int, classes: int, seed: int):
    """uint8 images whose class is visible (a bright block at a class-specific place)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, channels, size, size)).astype(np.uint8)
    block = size // 4
    for i, c in enumerate(labels):
        r, col = divmod(int(c) % 16, 4)
        images[i, :, r * block:(r + 1) * block, col * block:(col + 1) * block] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") format, gzipped, as the original MNIST files."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, n_train: int = 512, n_test: int = 256) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = learnable_images(n, 1, 28, 10, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images[:, 0])
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
        data[split] = (images, labels)
    return data


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def _cifar10_batches(per_batch: int, n_test: int, suffix: str):
    """(file name, images, labels) for the five training batches and the test batch."""
    names = [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]
    for k, name in enumerate(names):
        n = n_test if name.startswith("test") else per_batch
        yield name, *learnable_images(n, 3, 32, 10, k)


def write_cifar10_python(root: Path, per_batch: int = 100, n_test: int = 200) -> dict:
    """cifar-10-batches-py: five pickled training batches, a test batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for name, images, labels in _cifar10_batches(per_batch, n_test, ""):
        batch = {"batch_label": name, "labels": labels.tolist(), "data": images.reshape(-1, 3072),
                 "filenames": [f"{i}.png" for i in range(len(labels))]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        data[name] = (images, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_NAMES, "num_vis": 3072}, f, protocol=2)
    return data


def write_cifar10_binary(root: Path, per_batch: int = 100, n_test: int = 200) -> dict:
    """cifar-10-batches-bin: records of one label byte and 3072 pixel bytes."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for name, images, labels in _cifar10_batches(per_batch, n_test, ".bin"):
        np.concatenate([labels[:, None], images.reshape(-1, 3072)], axis=1).tofile(folder / name)
        data[name] = (images, labels)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n")
    return data


def write_cifar100_python(root: Path, n_train: int = 300, n_test: int = 100) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for k, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = learnable_images(n, 3, 32, 100, k)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(n, 3072), "fine_labels": labels.tolist(),
                         "coarse_labels": (labels // 5).tolist()}, f, protocol=2)
        data[name] = (images, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f, protocol=2)
    return data


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    write_mnist(tmp_path / "mnist-files")
    return tmp_path / "mnist-files"


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ptrain(capsys, monkeypatch, tmp_path):
    """Run `ptrain ARGS...` in-process from tmp_path; returns exit code, stdout, stderr."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PTRAIN_DATA_DIR", str(tmp_path / "no-data-here"))

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = _exit_code(args)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_cli(args: list, cwd: Path) -> Result:
    """`ptrain ARGS` in-process from `cwd`, for fixtures shared by several tests (capsys and
    monkeypatch are per test), with the machine's PTRAIN_* settings left out as for every test."""
    out, err, saved_env, old_cwd = io.StringIO(), io.StringIO(), dict(os.environ), os.getcwd()
    for name in _machine_settings():
        del os.environ[name]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _exit_code(args)
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> tuple[Path, Result]:
    """README's main job (1 epoch of LeNet on real MNIST) once, for every test that checks it:
    (the folder it ran in, its result; --json: the summary on stdout, progress on stderr)."""
    if not MNIST_DIR:
        pytest.skip("no real MNIST: ../shared/data/mnist is absent and PTRAIN_TEST_MNIST_DIR is "
                    "unset")
    root = tmp_path_factory.mktemp("real-mnist")
    r = run_cli(["train", "--data-dir", MNIST_DIR, "--epochs", "1", "--log-interval", "200",
                 "--json"], root)
    assert r.code == 0, r.err
    return root, r


@pytest.fixture
def without(monkeypatch):
    """without("onnxruntime"): the package cannot be imported for the rest of the test, as if
    its optional extra were not installed (the same `sys.modules[name] = None` Python itself
    honours; undone after the test)."""
    def hide(package: str) -> None:
        monkeypatch.setitem(sys.modules, package, None)  # its submodules go with it
    return hide


def read_metrics(run_dir: Path, kinds=("train", "epoch")) -> list[dict]:
    """metrics.jsonl's records of these kinds (start and compile records carry paths and times)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] in kinds]
