"""`ptrain runs`' table: plain text with one field per column (for awk and grep), or on a
terminal a rich table that fits 80 columns, wrapping words rather than cutting them."""

from __future__ import annotations

import time
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from pytorch_cli.platform.errors import plural


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


RUNS_COLUMNS = ("run", "dataset", "model", "epochs", "best", "last", "time", "status", "modified")
TERMINAL_COLUMNS = ("run", "dataset model", "epochs", "best", "last", "time", "status", "age")
STATUS_STYLES = {"running": "bold cyan", "finished": "green", "interrupted": "yellow",
                 "pruned": "magenta", "failed": "red"}


def _runs_rows(runs: list[dict], terminal: bool) -> list[list[str]]:
    """Plain text keeps one field per column for awk; a terminal gets "mnist lenet" in one
    column and the age instead of the date, so that 8 columns fit 80 characters."""
    pct = lambda v: "" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = []
    for r in runs:
        what = [r["dataset"] or "?", r["model"] or "?"]
        when = (_age(time.time() - r["modified"]) if terminal
                else time.strftime("%Y-%m-%d %H:%M", time.localtime(r["modified"])))
        epochs = f"{r['epochs_done']:g}" + (f"/{r['epochs']:g}" if r["epochs"] is not None else "")
        on_val = r["best_on"] == "val" and r["best_acc"] is not None
        best = pct(r["best_acc"]) + (" (val)" if on_val else "")
        status = r["status"] + (f" ({_short(r['detail'])})" if r["detail"] else "")
        rows.append([_cell(x) for x in [r["run"], *([" ".join(what)] if terminal else what),
                                        epochs, best, pct(r["last_acc"]),
                                        _duration(r["train_s"]), status, when]])
    return rows


def _short(detail: str, most: int = 60) -> str:
    """A failed run's error within `most` characters: its start (what failed) and its end (why,
    "No space left on device"), cut in the middle; --json and metrics.jsonl keep all of it."""
    if len(detail) <= most:
        return detail
    head = most // 3
    return detail[:head].rstrip() + "..." + detail[-(most - head - 3):].lstrip()


def _cell(text: str) -> str:
    """One printable line: a newline or escape code in a folder name would break the table."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _fit(rows: list[list[str]], width: int) -> tuple[list[int], int]:
    """(column widths, gap): every cell on one line if the terminal is wide enough; else wrapped
    at spaces, never a word cut ("interru…"), the room left going to status and best first; the
    gap between columns shrinks from 2 to 1 before anything breaks mid-word."""
    cols = list(zip(TERMINAL_COLUMNS, *rows))
    full = [max(map(len, col)) for col in cols]
    widths = [max(len(w) for cell in col for w in cell.split() or [""]) for col in cols]
    gap = 2 if sum(widths) + 2 * (len(cols) - 1) <= width else 1
    room = width - gap * (len(cols) - 1) - sum(widths)
    for i in (6, 3, 1, 0, 2, 4, 5, 7):
        grow = max(min(room, full[i] - widths[i]), 0)
        widths[i], room = widths[i] + grow, room - grow
    return widths, gap


def print_runs(runs: list[dict], stream: TextIO) -> None:
    """A rich table on a terminal, aligned plain text otherwise (for grep and awk)."""
    terminal = stream.isatty()
    rows = _runs_rows(runs, terminal)
    if terminal:
        from rich import box
        from rich.table import Table
        console = Console(file=stream)
        widths, gap = _fit(rows, console.width)
        table = Table(title=plural(len(runs), "run"), box=box.SIMPLE_HEAD, padding=(0, gap - 1),
                      pad_edge=False, show_edge=False, collapse_padding=True)
        for i, (name, width) in enumerate(zip(TERMINAL_COLUMNS, widths)):
            table.add_column(name, width=width, overflow="fold",  # too narrow: break, never hide
                             justify="right" if 2 <= i <= 5 or i == 7 else "left")
        for r, row in zip(runs, rows):  # Text: a name like "[/]" is no markup to rich
            table.add_row(*map(Text, row), style=STATUS_STYLES.get(r["status"]))
        console.print(table)
        resumable = [r["path"] for r in runs if r["resumable"]]
        if resumable:
            console.print(f"continue an interrupted run with `ptrain resume {resumable[0]}`",
                          highlight=False, markup=False)
        return
    # padded by terminal cells: a wide character (a run named 名前) takes two
    widths = [max(map(cell_len, col)) for col in zip(RUNS_COLUMNS, *rows)]
    for row in [list(RUNS_COLUMNS), *rows]:
        print("  ".join(x + " " * (w - cell_len(x)) for x, w in zip(row, widths)).rstrip(),
              file=stream)


def print_trials(rows: list[dict], out: TextIO, metric: str = "acc") -> None:
    """`ptrain sweep DIR --show`: a header, then one line per trial, best first: number, state,
    metric, epochs, run directory, settings, and why it failed."""
    if not rows:
        print("no trials yet", file=out)
        return
    print(f"{'trial':>5} {'state':<8} {metric:>8} {'epochs':>6} {'run':<10} settings", file=out)
    for r in rows:
        print(trial_line(r), file=out)


def trial_line(r: dict) -> str:
    """One trial of `sweep --show` (a row of sweep.show), as the sweep also says each one ends."""
    value = "" if r["value"] is None else f"{r['value']:.4f}"
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in r["params"].items())
    note = f"  ({r['note']})" if r["note"] else ""
    return (f"{r['trial']:>5} {r['state']:<8} {value:>8} {r['epochs'] or '':>6} "
            f"{r['run_dir']:<10} {params}{note}")
