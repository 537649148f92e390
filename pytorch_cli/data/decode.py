"""Many image files at once: read in worker processes, in order, with a progress bar.

A folder run opens every file twice before its first step: once for its header (the run's
channels and size depend on all of them), once to decode it at that shape. Both passes are
the same map over the file list, done here by torch's DataLoader (forked workers, results in
the list's order) in chunks, so each worker hands back a chunk, not an image. A file that
fails gives its error line in place of a result, never an exception. Between chunks, a stop
signal ends the run (signals.check_stop), and where no terminal shows the bar (a log, a
scheduler's output file) a line says how far it got every PLAIN_SECONDS."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pytorch_cli.data import images
from pytorch_cli.data.catalog import SQUASH
from pytorch_cli.platform import distributed, signals
from pytorch_cli.platform.errors import PtrainError, UsageError

CHUNK = 256  # files per worker hand-off: a 32x32 RGB chunk is 0.8 MB through the pipe
SERIAL_BELOW = 2 * CHUNK  # fewer files than this: workers cost more to start than they save
PLAIN_SECONDS = 30.0  # as training's plain lines (report.py): a log is never silent longer


def workers(n: int) -> int:
    """Worker processes for n files: one per core this process may use (at most 8), none for
    a small folder or a one-core machine. PTRAIN_DECODE_WORKERS sets it (0: in-process)."""
    text = os.environ.get("PTRAIN_DECODE_WORKERS", "").strip()
    if text:
        if not text.isdigit() or int(text) > 64:
            raise UsageError(f"PTRAIN_DECODE_WORKERS must be a number of processes from 0 to 64, "
                             f"got {text!r}")
        return int(text)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if n < SERIAL_BELOW or (cores or 1) < 2 else min(cores or 1, 8)


class _Map(torch.utils.data.Dataset):
    def __init__(self, fn: Callable[[Path], Any], paths: list[Path]):
        self.fn, self.paths = fn, paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        try:
            return self.fn(self.paths[i]), ""
        except PtrainError as e:  # it names the file
            return None, str(e)


def _chunk(items: list) -> list:
    return items  # as they come: no tensor collation


def _bar(total: int, what: str):
    """A transient bar on a terminal's stderr; None where nobody would see it."""
    if not sys.stderr.isatty() or total < SERIAL_BELOW:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    bar = Progress("  " + what, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    bar.add_task(what, total=total)
    return bar


@contextlib.contextmanager
def status(what: str) -> Iterator[None]:
    """A transient spinner on a terminal's stderr while `what` runs: the steps that have no
    count to show (listing a folder, reading its files' dates: 2.8 s for 60,000 PNGs here)."""
    if not sys.stderr.isatty() or not distributed.world().main:
        yield
        return
    from rich.console import Console
    with Console(stderr=True).status("  " + what):
        yield


def _progress(total: int, what: str) -> Callable[[int], None]:
    """advance(n files done): the bar, or a plain line on stderr every PLAIN_SECONDS (rank 0)."""
    if not distributed.world().main:
        return lambda n: None
    bar = _bar(total, what)
    if bar is not None:
        bar.start()
        return lambda n: bar.update(bar.task_ids[0], completed=n) if n < total else bar.stop()
    started, said = time.monotonic(), [time.monotonic()]

    def line(n: int) -> None:
        if n < total and time.monotonic() - said[0] >= PLAIN_SECONDS:
            said[0] = time.monotonic()
            print(f"  {what}: {n:,} done ({n / total:.0%}) in {said[0] - started:.0f}s",
                  file=sys.stderr, flush=True)
    return line


def each(fn: Callable[[Path], Any], paths: list[Path], what: str) -> Iterator[tuple[Any, str]]:
    """(fn(path), "") or (None, error line) for each path, in order; `what` labels the
    progress. A stop signal between chunks raises signals.StoppedEarly."""
    # a generator of its own: the loader draws its workers' base seed from it, and from the
    # global one (which then inits the model) without it: a cold run would train unlike a cached
    loader = torch.utils.data.DataLoader(_Map(fn, paths), batch_size=CHUNK,
                                         num_workers=workers(len(paths)), collate_fn=_chunk,
                                         generator=torch.Generator(), worker_init_fn=functools
                                         .partial(signals.worker_init, os.getpid()))
    advance, done = _progress(len(paths), what), 0
    try:
        for chunk in loader:
            yield from chunk
            done += len(chunk)
            advance(done)
            signals.check_stop(what)
    finally:
        advance(len(paths))  # (a bar ends there, and a plain line has nothing more to say)


def _read(path: Path, channels: int, size: tuple[int, int], resize: str) -> np.ndarray:
    return images.read_image(path, channels, size, resize).numpy()


def read_all(paths: list[Path], channels: int, size: tuple[int, int], resize: str = SQUASH
             ) -> Iterator[tuple[np.ndarray | None, str]]:
    """(the image as (C, H, W) uint8 at these channels and size, fitted as `resize` says, "")
    or (None, error line) for each path, in order."""
    return each(functools.partial(_read, channels=channels, size=size, resize=resize), paths,
                f"decoding {len(paths):,} images")


def into(out: np.ndarray, files: list[tuple[Path, int]], skipped: list[str],
         resize: str = SQUASH) -> tuple[np.ndarray, list[int]]:
    """Decode the files into `out` ((N, C, H, W) uint8, in memory or a memory map of the
    cache), row after row at out's channels and size: (the labels of the rows filled, the index
    in `files` of each). A file that fails to decode is skipped (its error line added to
    `skipped`): the rows filled are the first len(labels)."""
    channels, size = out.shape[1], tuple(out.shape[2:])
    labels, kept = [], []
    decoded = read_all([p for p, _ in files], channels, size, resize)
    for i, ((_, label), (image, error)) in enumerate(zip(files, decoded)):
        if error:
            skipped.append(error)
            continue
        out[len(labels)] = image
        labels.append(label)
        kept.append(i)
    return np.array(labels, dtype=np.int64), kept


def headers(paths: list[Path]) -> Iterator[tuple[tuple[str, tuple[int, int]] | None, str]]:
    """((PIL mode, (width, height)), "") or (None, error line) for each path, in order."""
    return each(images.image_header, paths, f"reading {len(paths):,} image headers")
