"""The decode cache of image folders (data/cache.py): a second load decodes nothing, a changed
folder is decoded again, `ptrain cache --clear` empties it, and a cache it cannot write costs a
warning, never the run."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pytorch_cli.data import cache, catalog, datasets, decode, folders


def _folder(root, n=3):
    for c in ("a", "b"):
        for i in range(n):
            (root / c).mkdir(parents=True, exist_ok=True)
            pixels = np.full((8, 8), (40 * i + (100 if c == "b" else 0)) % 256, np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def _load(root):
    return datasets.load(catalog.FOLDER, str(root), folder=folders.Options(test_split=0.5))


def test_a_second_load_decodes_nothing_and_a_changed_file_is_decoded_again(tmp_path):
    root = _folder(tmp_path / "imgs")
    first = _load(root)
    again = _load(root)  # nothing changed: the cache answers, one entry
    assert all(np.array_equal(getattr(first, s).images, getattr(again, s).images)
               for s in ("train", "test")) and len(cache.entries()) == 1
    victim = root / "a" / "0.png"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)  # the same length, no longer a PNG, and its old
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime, as cp -p leaves it:
    changed = _load(root)  # its ctime moved: decoded again, into a new entry
    assert len(changed.train) + len(changed.test) == 5 and str(victim) in changed.skipped[0]
    assert len(cache.entries()) == 2


def test_another_size_or_a_new_file_is_another_entry(tmp_path):
    root = _folder(tmp_path / "imgs")
    _load(root)
    datasets.load(catalog.FOLDER, str(root), folder=folders.Options(image_size=(4, 4)))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a" / "new.png")
    assert len(_load(root).train) + len(_load(root).test) == 7
    assert len(cache.entries()) == 3


def test_cache_command_says_what_it_holds_and_clears_it(ptrain, tmp_path):
    _load(_folder(tmp_path / "imgs"))
    r = ptrain("cache")
    assert r.code == 0 and r.out.startswith(f"{cache.root()}: 1 entry, ")
    # PTRAIN_CACHE_DIR may name a folder of the user's: only the cache's own entries count
    # and go (a hostile trial's folders/taxes/2025.txt went with --clear)
    mine = [cache.root() / "taxes" / "2025.txt", cache.root() / "notes.txt",
            cache.root() / ("ab" * 16 + "x") / "a.jpg"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    dead = cache.root() / f".{'0' * 32}.{_reaped()}.tmp"  # what a killed writer left (of
    dead.mkdir()  # an older ptrain: no host in the name)
    (dead / "train_x.npy").write_bytes(b"\0" * 2**20)
    live = cache.root() / f".{'1' * 32}.{os.getpid()}@{cache.HOST}.tmp"  # one under way
    live.mkdir()
    r = ptrain("cache")
    assert r.code == 0 and r.out.startswith(f"{cache.root()}: 1 entry, ")
    assert f"; 0.0 MiB being decoded (pid {os.getpid()}); 1.0 MiB left by killed decodes" in r.out
    r = ptrain("cache", "--clear")
    assert r.code == 0 and r.out.startswith("removed 1 entry (1.0 MiB) from ") and \
        r.out.endswith(f"; the decodes under way (pid {os.getpid()}) are left\n")
    assert all(p.read_text() == "precious" for p in mine) and not cache.entries()
    assert sorted(p.name for p in cache.root().iterdir()) == [live.name, "ab" * 16 + "x",
                                                               "notes.txt", "taxes"]


def _reaped() -> int:
    """A pid no process has: a child's, once it is reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_an_entry_made_at_the_images_own_shape_is_found_by_eval_and_resume(tmp_path,
                                                                           monkeypatch):
    """A run leaves --channels and --image-size to the images; eval and resume ask the values
    it found. Each decoded the whole folder again, into a second entry (a hostile trial: 26 s
    and 178 MiB more for CIFAR-10's 50,000 PNGs)."""
    root = _folder(tmp_path / "imgs")
    auto = _load(root)
    assert (auto.spec.channels, auto.spec.size) == (1, (8, 8))
    monkeypatch.setattr(decode, "into", None)  # nothing may be decoded from here on
    asked = datasets.load(catalog.FOLDER, str(root), folder=folders.Options(
        1, (8, 8), test_split=0.5))
    assert np.array_equal(asked.train.images, auto.train.images) and len(cache.entries()) == 1
    assert np.array_equal(_load(root).test.images, auto.test.images)  # auto again: the alias
    [link] = [p for p in cache.root().iterdir() if p.is_symlink()]
    assert os.readlink(link) == cache.entries()[0].name


def test_an_alias_whose_entry_went_is_a_miss_and_goes_too(tmp_path):
    root = _folder(tmp_path / "imgs")
    datasets.load(catalog.FOLDER, str(root), folder=folders.Options(1, (8, 8), test_split=0.5))
    assert not [p for p in cache.root().iterdir() if p.is_symlink()]  # asked = found: no alias
    _load(root)  # the images' own shape asked: found by the shape, linked
    shutil.rmtree(cache.entries()[0])
    again = _load(root)  # decoded again
    assert len(again.train) + len(again.test) == 6 and len(cache.entries()) == 1
    assert [os.readlink(p) for p in cache.root().iterdir() if p.is_symlink()] == [
        cache.entries()[0].name]
    cache._evict(0)
    assert list(cache.root().iterdir()) == []  # the entry, then its dangling alias


def test_a_killed_writers_folder_goes_at_the_next_decode_a_live_ones_stays(tmp_path):
    cache.root().mkdir(parents=True)
    dead = cache.root() / f".{'0' * 32}.{_reaped()}@{cache.HOST}.tmp"
    live = cache.root() / f".{'1' * 32}.{os.getpid()}@{cache.HOST}.tmp"
    elsewhere = cache.root() / f".{'2' * 32}.{_reaped()}@another-host.tmp"  # not judged here
    for folder in (dead, live, elsewhere):
        folder.mkdir()
    _load(_folder(tmp_path / "imgs"))
    assert not dead.exists() and live.exists() and elsewhere.exists()


def test_an_unwritable_cache_is_a_warning_and_the_load_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "file"))
    data = _load(_folder(tmp_path / "imgs"))
    assert len(data.train) + len(data.test) == 6
    assert "cannot write the decode cache" in capsys.readouterr().err


def test_a_damaged_entry_is_decoded_again_and_replaced(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    first = _load(root)
    entry = cache.entries()[0]
    (entry / "train_x.npy").write_bytes(b"damaged")
    again = _load(root)
    assert "unreadable" in capsys.readouterr().err
    assert np.array_equal(first.train.images, again.train.images)
    assert _load(root) is not None and "unreadable" not in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["rows a list", "channels", "labels"])
def test_an_entry_that_disagrees_with_itself_or_the_folder_is_decoded_again(tmp_path, capsys,
                                                                            damage):
    """A meta.json of the wrong shape ended in an 'unexpected' error, one naming other
    channels than its arrays' in a conv error, labels changed in the cache blamed the user's
    folder: each is an unreadable entry, decoded again."""
    root = _folder(tmp_path / "imgs")
    first = _load(root)
    entry = cache.entries()[0]
    meta = json.loads((entry / cache.META).read_text())
    if damage == "rows a list":
        meta["rows"] = [1, 2]
    elif damage == "channels":
        meta["channels"] = 3  # of gray arrays
    else:
        np.save(entry / "train_y.npy", np.full(len(first.train) + len(first.test), 7))
    (entry / cache.META).write_text(json.dumps(meta))
    again = _load(root)
    assert f"the decode cache entry {entry} is unreadable" in capsys.readouterr().err
    assert np.array_equal(first.train.images, again.train.images)
    assert np.array_equal(first.train.labels, again.train.labels)


def test_a_damaged_split_entry_is_made_again(tmp_path, capsys):
    """The entry of a folder's held-out split, its labels changed: an 'unexpected' IndexError
    in training before; now a warning, and the split as it was."""
    root = _folder(tmp_path / "imgs")
    held = _load(root).test.labels.clone()  # (a copy: the entry is memory-mapped)
    [split] = [p for p in cache.entries()[0].iterdir() if p.is_dir()]
    np.save(split / "test_y.npy", np.full(len(held), 99))
    again = _load(root)
    assert f"the decode cache entry {split} is unreadable" in capsys.readouterr().err
    assert np.array_equal(held, again.test.labels)


def _mapped_from(tensor) -> str:
    """The file whose memory map holds the tensor's data ('' if none: it is in memory)."""
    address = tensor.data_ptr()
    for line in open("/proc/self/maps"):
        span, *rest = line.split(maxsplit=5)
        lo, hi = (int(a, 16) for a in span.split("-"))
        if lo <= address < hi:
            name = rest[-1].strip() if len(rest) == 5 else ""
            return name if name.startswith("/") else ""  # [heap], [anon]: memory
    return ""


def test_a_cached_folder_and_its_splits_are_read_from_the_disk_not_copied(tmp_path):
    root = _folder(tmp_path / "imgs", n=10)
    load = lambda: datasets.load(catalog.FOLDER, str(root), val_split=0.25,  # noqa: E731
                                 folder=folders.Options(test_split=0.2))
    first, again = load(), load()
    for split in ("train", "val", "test"):
        a, b = getattr(first, split), getattr(again, split)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert _mapped_from(b.images).startswith(str(cache.root()))
    assert (len(again.train), len(again.val), len(again.test)) == (12, 4, 4)
    assert len(cache.entries()) == 1  # the splits' entry is inside the folder's, evicted with it
    ram = datasets.load(catalog.FOLDER, str(root), val_split=0.25, seed=1,
                        folder=folders.Options(test_split=0.2))
    assert np.array_equal(ram.val.images, again.val.images)  # seed 1 is the default


def test_a_full_cache_disk_decodes_into_memory_with_a_warning(tmp_path, monkeypatch, mounts,
                                                               capsys):
    disk = mounts(tmp_path / "disk", "8k")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(disk))
    data = _load(_folder(tmp_path / "imgs", n=40))  # 80 8x8 images: 5 kB, over 8k with headers
    assert len(data.train) + len(data.test) == 80 and not _mapped_from(data.train.images)
    err = capsys.readouterr().err
    assert "cannot write the decode cache" in err and "No space left" in err
    assert not list(disk.rglob("*.npy"))  # nothing half-written left behind


def test_a_disk_that_fills_at_any_point_of_a_decode_costs_a_warning_never_the_run(
        tmp_path, monkeypatch, mounts, capsys):
    """With room for the arrays but not their meta.json, the run died saying "cannot write
    standard output" (a hostile trial): at each number of free pages around that point, the
    folder's images are still all there, and the warning says what to do."""
    disk = mounts(tmp_path / "disk", "1m")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(disk))
    root = _folder(tmp_path / "imgs", n=300)  # 600 gray 8x8 images: 11 pages of arrays
    expected = _load(root)
    page = os.statvfs(disk).f_frsize
    ends = set()
    for free in range(6, 46, 2):
        shutil.rmtree(disk / "folders")
        (disk / "filler").unlink(missing_ok=True)
        with open(disk / "filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, os.statvfs(disk).f_bavail * page - free * page)
        capsys.readouterr()
        got = _load(root)  # never raises
        assert np.array_equal(got.train.images, expected.train.images)
        err = capsys.readouterr().err
        ends.add("written" if not err else "warned")
        assert not err or err.count("\n") == 1 and "(No space left on device); " in err and \
            err.endswith("; its disk is full (`ptrain cache` says what the cache holds, --clear "
                         "frees it)\n"), err
        assert not list(disk.rglob("*.tmp"))  # nothing half-written left behind
    assert ends == {"written", "warned"}


def test_a_read_only_cache_is_read_as_it_is_and_its_clearing_is_one_line(
        tmp_path, monkeypatch, mounts, capsys, ptrain):
    """A shared cache mounted read-only: its entry is used (its last-used time cannot be set,
    which had made it "unreadable", removed and decoded again); --clear says it cannot."""
    disk = mounts(tmp_path / "disk", "1m")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(disk))
    root = _folder(tmp_path / "imgs", n=10)
    first = _load(root)
    done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
    assert done.returncode == 0, done.stderr
    capsys.readouterr()
    again = _load(root)
    assert capsys.readouterr().err == "" and _mapped_from(again.train.images)
    assert np.array_equal(again.train.images, first.train.images)
    r = ptrain("cache", "--clear")
    assert r.code == 1 and r.err.startswith(f"ptrain: error: cannot clear the decode cache "
                                            f"{disk}/folders: Read-only file system (")
    assert len(cache.entries()) == 1


def test_a_folder_streamed_by_workers_trains_as_it_does_from_memory(ptrain, tmp_path):
    """--workers 2: the training images stay memory-mapped in the cache, and two DataLoader
    workers gather the batches from it; the run ends bit-identical to the first one, which
    decoded the folder (cold) and trained with --workers 0."""
    root = _folder(tmp_path / "imgs", n=40)
    args = ["train", "--dataset", "folder", "--data-dir", str(root), "--epochs", "1",
            "--batch-size", "16", "--model", "lenet", "--image-size", "28"]
    assert ptrain(*args, "--workers", "0", "--run-dir", "w0").code == 0
    r = ptrain(*args, "--workers", "2", "--run-dir", "w2")
    assert r.code == 0, r.err
    import torch
    w0, w2 = (torch.load(tmp_path / d / "model.pth", weights_only=True)["state_dict"]
              for d in ("w0", "w2"))
    assert all(torch.equal(w0[k], w2[k]) for k in w0)


def test_a_cache_folder_that_is_a_file_is_one_line(ptrain, tmp_path, monkeypatch):
    """It had been listed as an empty cache, and --clear had "removed 0 entries" from it."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "file"))
    for args in (["cache"], ["cache", "--clear"]):
        r = ptrain(*args)
        assert r.code == 2 and r.err == (f"ptrain: error: the decode cache {tmp_path}/file is not "
                                         "a folder; point PTRAIN_CACHE_DIR at one\n")
    assert (tmp_path / "file").read_text() == "x"


def test_a_cache_dir_that_is_a_dangling_link_says_so(tmp_path, monkeypatch, capsys):
    """mkdir's "File exists" was all it said (a hostile trial)."""
    (tmp_path / "cache").symlink_to(tmp_path / "gone")
    monkeypatch.setenv("PTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    data = _load(_folder(tmp_path / "imgs"))
    assert len(data.train) + len(data.test) == 6
    assert capsys.readouterr().err.endswith(
        f"; {tmp_path / 'cache'} is a link to {tmp_path / 'gone'}, which is not there: make "
        "that folder, or point PTRAIN_CACHE_DIR at one\n")
