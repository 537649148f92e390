"""Decoding many files at once (data/decode.py): worker processes give what one process gives,
in the same order, with the same skipped files; a terminal sees a progress bar, a pipe none."""

import os
import pty
import re
import signal
import sys

import numpy as np
import pytest
from PIL import Image

from pytorch_cli.data import decode
from pytorch_cli.platform import signals
from pytorch_cli.platform.errors import UsageError


def _files(root, n):
    """n 8x8 RGB PNGs in two classes, every 100th one damaged (a PNG cut short)."""
    files = []
    g = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        path = root / f"{i}.png"
        Image.fromarray(g.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        if i % 100 == 7:
            path.write_bytes(path.read_bytes()[:-30])
        files.append((path, i % 2))
    return files


def _decode(files, workers, monkeypatch):
    monkeypatch.setenv("PTRAIN_DECODE_WORKERS", str(workers))
    out, skipped = np.zeros((len(files), 3, 8, 8), np.uint8), []
    labels, kept = decode.into(out, files, skipped)
    assert [files[i][1] for i in kept] == labels.tolist()  # the file of each row
    return out[:len(labels)], labels, skipped, kept


def test_workers_decode_what_one_process_decodes_in_the_same_order(tmp_path, monkeypatch):
    files = _files(tmp_path / "imgs", 2 * decode.CHUNK + 50)  # three chunks, the last short
    one = _decode(files, 0, monkeypatch)
    two = _decode(files, 2, monkeypatch)
    assert len(one[1]) == len(files) - 6 and one[0].any()
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    assert one[2] == two[2] and len(two[2]) == 6 and "7.png could not be decoded" in two[2][0]
    assert one[3] == two[3] and 7 not in two[3] and two[3][7] == 8  # file 7 skipped
    first = np.asarray(Image.open(files[0][0])).transpose(2, 0, 1)
    assert np.array_equal(two[0][0], first)  # row 0 is file 0, as PIL reads it


def test_a_small_folder_or_one_core_decodes_in_process(monkeypatch):
    assert decode.workers(decode.SERIAL_BELOW - 1) == 0
    cores = len(os.sched_getaffinity(0))
    assert decode.workers(10**6) == (min(cores, 8) if cores > 1 else 0)
    monkeypatch.setenv("PTRAIN_DECODE_WORKERS", "3")
    assert decode.workers(1) == 3
    for bad in ("abc", "-1", "65", "2.5"):
        monkeypatch.setenv("PTRAIN_DECODE_WORKERS", bad)
        with pytest.raises(UsageError, match="^PTRAIN_DECODE_WORKERS must be a number of "):
            decode.workers(1)


def _drained(fd: int) -> bytes:
    """Everything written to the other end of a pty or pipe, which is closed."""
    os.set_blocking(fd, False)
    seen = b""
    try:
        while chunk := os.read(fd, 65536):
            seen += chunk
    except (BlockingIOError, OSError):  # drained (a pty's end reads EIO once closed)
        pass
    os.close(fd)
    return seen


@pytest.mark.parametrize("terminal", [True, False])
def test_a_terminal_sees_a_bar_and_a_short_decode_says_nothing_to_a_pipe(tmp_path, monkeypatch,
                                                                          terminal):
    files = _files(tmp_path / "imgs", decode.SERIAL_BELOW)
    main, other = pty.openpty() if terminal else os.pipe()
    with os.fdopen(other, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        _decode(files, 0, monkeypatch)
    seen = _drained(main)
    if terminal:
        assert b"decoding 512 images" in seen and b"/512" in seen  # then cleared: transient
    else:
        assert seen == b""


@pytest.mark.parametrize("terminal", [True, False])
def test_a_terminal_sees_what_a_step_with_no_count_is_doing(monkeypatch, terminal):
    """Listing 60,000 PNGs and reading their dates took 2.8-3.5 s with nothing on the screen
    before the header pass's bar (a hostile trial): a spinner names the step; a pipe gets
    nothing."""
    main, other = pty.openpty() if terminal else os.pipe()
    with os.fdopen(other, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        with decode.status("listing /data/pets"):
            pass
    seen = _drained(main)
    assert (b"listing /data/pets" in seen) == terminal


def test_a_log_gets_a_plain_line_as_a_long_decode_goes(tmp_path, monkeypatch, capsys):
    """Where no terminal shows the bar (a scheduler's output file), a 42 s decode of 50,000
    PNGs said nothing (a hostile trial): a line every PLAIN_SECONDS (here 0: every chunk)."""
    monkeypatch.setattr(decode, "PLAIN_SECONDS", 0.0)
    _decode(_files(tmp_path / "imgs", 2 * decode.CHUNK + 50), 0, monkeypatch)
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"in \d+s$", "in Ns", line) for line in lines] == [
        "  decoding 562 images: 256 done (46%) in Ns",
        "  decoding 562 images: 512 done (91%) in Ns"]


def test_a_stop_signal_ends_a_decode_at_the_end_of_its_chunk(tmp_path, monkeypatch):
    """A SIGTERM while a large folder decodes: the run ends within a chunk, not after minutes
    of decoding (a scheduler's grace period is often 30 s)."""
    paths = [p for p, _ in _files(tmp_path / "imgs", 2 * decode.CHUNK + 50)]
    monkeypatch.setenv("PTRAIN_DECODE_WORKERS", "0")
    read = []

    def fn(path):
        read.append(path)
        if len(read) == 10:
            signal.raise_signal(signal.SIGTERM)  # to this thread: its handler runs at once
        return 0
    with signals.stop_on_signals(lambda reason: None), pytest.raises(
            signals.StoppedEarly, match=r"^stopped \(SIGTERM\) while decoding 562 images, before"
            r" the first step: nothing was trained or saved; run the same command again$") as e:
        list(decode.each(fn, paths, "decoding 562 images"))
    assert e.value.exit_code == 143 and len(read) == decode.CHUNK
    assert list(decode.each(fn, paths[:3], "three")) == [(0, "")] * 3  # no stop asked outside
