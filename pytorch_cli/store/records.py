"""metrics.jsonl's records: what each field must be, and reading them so that one bad line (binary,
torn, not an object, a field of the wrong type) costs that line, never the run's other records.
Torch-free: `ptrain runs` reads every run's."""

from __future__ import annotations

import json
import math

# What each field of a metrics.jsonl record must be, where a record has it: every reader (the
# runs table, the curves, the resume's trim) may then use it as such. null stands for a value
# that does not apply, or a non-finite one (json_safe writes NaN as null).
_NUMBER, _NULL = (int, float), type(None)
_MAYBE = (int, float, _NULL)
FIELDS = {"kind": (str,), "step": (int,), "epoch": _NUMBER, "batch": (int,), "batches": (int,),
          "epochs": _NUMBER, "time": _NUMBER, "elapsed_s": _MAYBE, "train_loss": _MAYBE,
          "test_loss": _MAYBE, "test_acc": _MAYBE, "val_loss": _MAYBE, "val_acc": _MAYBE,
          "reason": (str, _NULL), "error": (str, _NULL), "stopped": (str, _NULL),
          "early_stop": (int, _NULL), "best_epoch": (int,), "epochs_trained": _NUMBER,
          "best_acc": _MAYBE}
# Only "kind" is required: a field a reader needs and a record lacks, the reader does without.
FRACTIONS = ("test_acc", "val_acc", "best_acc")  # 0 to 1: an edited -5 listed as -500.00%


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: json.dumps writes null instead


def fits(value, kinds: tuple) -> bool:
    """Of one of these types, and finite if a number (JSON and TOML can say 1e999, nan)."""
    if isinstance(value, bool) or not isinstance(value, kinds):  # (True is an int to Python)
        return False
    try:
        return not isinstance(value, (int, float)) or math.isfinite(value)  # 1e999 is inf
    except OverflowError:  # an int too large for a float: no real count or time
        return False


def valid(record) -> bool:
    """A record every reader can use: an object with a kind, its FIELDS of their types."""
    return isinstance(record, dict) and "kind" in record and all(
        fits(record[k], kinds) for k, kinds in FIELDS.items() if k in record) and all(
        record[k] is None or 0 <= record[k] <= 1 for k in FRACTIONS if k in record)


def parse(data: bytes) -> tuple[list[dict], list[int]]:
    """(the valid records, the numbers of the lines that are not). A last line without its
    newline that is not JSON is not reported: it is a record a live run is appending, or one a
    kill (SIGKILL, OOM, power) cut short, both expected; the records before it still count."""
    records, bad = [], []
    lines = data.split(b"\n")  # not str.splitlines: it also splits at \x1c, \u2028...
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue  # a blank line holds nothing to lose
        try:
            record = json.loads(line.decode(), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):  # binary, torn, not JSON
            if number < len(lines):  # (the last one, unterminated: cut short by a kill)
                bad.append(number)
            continue
        if valid(record):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def lines(n: int) -> str:
    return "1 unreadable line" if n == 1 else f"{n} unreadable lines"
