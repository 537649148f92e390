"""`ptrain runs`' table: plain text for awk, and 80 columns of a terminal."""

import io
import re
import time

from pytorch_cli.output import runs_table


def test_runs_table_as_plain_text():
    run = {"run": "mnist", "dataset": "mnist", "model": "lenet", "epochs_done": 3, "epochs": 10,
           "last_acc": 0.97, "best_acc": 0.98, "best_on": "val", "elapsed_s": 3725.0,
           "train_s": 3725.0, "status": "interrupted", "detail": "SIGTERM", "modified": 0.0}
    out = io.StringIO()
    runs_table.print_runs([run], out)
    head, row = out.getvalue().splitlines()
    assert head.startswith("run    dataset  model  epochs  best          last")
    assert row.split()[:4] == ["mnist", "mnist", "lenet", "3/10"]
    for cell in ("3/10", "98.00% (val)", "97.00%", "1h02m", "interrupted (SIGTERM)"):
        assert cell in row


def test_a_wide_characters_name_keeps_the_plain_columns_aligned():
    """名前 takes four terminal columns, not two: the columns after it had shifted by two."""
    runs = [{"run": name, "dataset": "mnist", "model": "lenet", "epochs_done": 1, "epochs": 1,
             "last_acc": 0.5, "best_acc": 0.5, "best_on": "test", "elapsed_s": 1.0, "train_s": 1.0,
             "status": "finished", "detail": "", "modified": 0.0} for name in ("名前", "abcd")]
    out = io.StringIO()
    runs_table.print_runs(runs, out)
    _, wide, narrow = out.getvalue().splitlines()
    assert wide.index("mnist") + 2 == narrow.index("mnist")  # 2 characters, 4 columns


def test_a_long_error_keeps_what_failed_and_why_in_the_table():
    error = ("cannot write /data/runs/cifar10-resnet18-long-name/last.pt: No space left on "
             "device")
    run = {"run": "r", "dataset": "cifar10", "model": "resnet18", "epochs_done": 1,
           "epochs": 2, "last_acc": None, "best_acc": None, "best_on": "test",
           "elapsed_s": 5.0, "train_s": 5.0, "status": "failed", "detail": error, "modified": 0.0}
    out = io.StringIO()
    runs_table.print_runs([run], out)
    assert "failed (cannot write /data/r...name/last.pt: No space left on device)" \
        in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_runs_table_on_an_80_column_terminal_wraps_words_never_cuts_them(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    run = {"run": "cifar10-fast-seed3", "dataset": "fashion-mnist", "model": "resnet18",
           "epochs_done": 3, "epochs": 9.9, "last_acc": 0.97, "best_acc": 0.98, "best_on": "val",
           "elapsed_s": 65.0, "train_s": 65.0, "status": "interrupted", "detail": "SIGTERM",
           "modified": time.time() - 7200, "path": "runs/cifar10-fast-seed3", "resumable": True}
    out = _Terminal()
    runs_table.print_runs(
        [run, {**run, "run": "mnist", "status": "failed", "detail": "nan", "resumable": False}], out
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # bold headers stay without colour
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text
    for word in ("cifar10-fast-seed3", "fashion-mnist", "resnet18", "3/9.9", "98.00%", "1m05s",
                 "interrupted", "(SIGTERM)", "2h"):
        assert word in text
    assert lines[-1] == "continue an interrupted run with `ptrain resume runs/cifar10-fast-seed3`"
