"""The one exception type users see (its message is printed as a single line, no traceback),
the one-line warning for what ptrain skips and goes on without, and the wording helper every
message uses."""

import sys


class PtrainError(Exception):
    """A problem the user can fix. The message says what is wrong and what to do."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # pickled whole (type, message, code): ranks hand errors to each other
        return _restore, (type(self), str(self), self.exit_code)


def _restore(cls: type, message: str, exit_code: int) -> PtrainError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.exit_code = exit_code
    return error


class DamagedFile(PtrainError):
    """A file ptrain reads holds something it never writes: name the file and the field."""

    def __init__(self, path, problem: str, advice: str = "use another checkpoint of the run "
                 "(last.pt, best.pt, model.pth)"):
        super().__init__(f"{path}: {problem}: the file is damaged or was not written by ptrain; "
                         f"{advice}")


class UsageError(PtrainError):
    """A bad flag or config value (exit code 2, like argparse and click)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one line of a message: its first line, else its type's name; a long one
    cut between words (gloo's "bugs in the applic" ended a hostile trial's line)."""
    return clip((str(error).strip().splitlines() or [type(error).__name__])[0], limit)


def clip(text: str, limit: int, mark: str = "...") -> str:
    """text in at most `limit` characters, cut after a whole word with `mark`: a cut inside a
    number changes it (a hostile trial read "--lr (now 203" for 203199)."""
    if len(text) <= limit:
        return text
    cut = text[:limit - len(mark)]
    space = cut.rfind(" ") if text[len(cut)] != " " else len(cut)  # (a word cut in two?)
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:([") + mark


def plural(n: float, word: str, many: str = "") -> str:
    """'1 epoch', '2 epochs', '9.9 epochs'; plural(3, "batch", "batches")."""
    return f"{n:g} {word if n == 1 else many or word + 's'}"


def one_line(message: str) -> str:
    """A message as the one line it must be: a file name may hold a line break (a path is any
    bytes but NUL and /), which is written as \\n, as `ls` quotes it."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def warn(message: str) -> None:
    """One line on stderr for something skipped that the user should know of (a bad record, a
    bad image); the command goes on. Never fails, even with stderr closed."""
    try:
        print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # closed, gone or None: nothing to tell
        pass
