"""The one exception type users see (its message is printed as a single line, no traceback),
and the wording helper every message uses."""


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


class UsageError(PtrainError):
    """A bad flag or config value (exit code 2, like argparse and click)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def plural(n: float, word: str, many: str = "") -> str:
    """'1 epoch', '2 epochs', '9.9 epochs'; plural(3, "batch", "batches")."""
    return f"{n:g} {word if n == 1 else many or word + 's'}"
