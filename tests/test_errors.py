"""PtrainError and UsageError: exit codes, pickling between ranks, and plural()."""

import pickle

import pytest

from pytorch_cli.platform.errors import PtrainError, UsageError, plural


class MissingFile(PtrainError):
    """A subclass whose __init__ takes other arguments than the message."""

    def __init__(self, path):
        super().__init__(f"{path} is missing: run `ptrain fetch` first", exit_code=3)


def test_exit_codes():
    assert PtrainError("bad").exit_code == 1
    assert PtrainError("bad", exit_code=7).exit_code == 7
    usage = UsageError("--epochs must be positive")
    assert usage.exit_code == 2 and isinstance(usage, PtrainError)
    assert str(usage) == "--epochs must be positive"


@pytest.mark.parametrize("error", [PtrainError("disk full"), PtrainError("killed", exit_code=137),
                                   UsageError("--lr: not a number"), MissingFile("data/mnist")],
                         ids=["ptrain", "ptrain-code", "usage", "subclass"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_keeps_type_message_and_exit_code(error, protocol):
    back = pickle.loads(pickle.dumps(error, protocol=protocol))
    assert type(back) is type(error)
    assert str(back) == str(error) and back.args == error.args
    assert back.exit_code == error.exit_code
    with pytest.raises(PtrainError) as caught:
        raise back
    assert caught.value is back


@pytest.mark.parametrize("args, text", [
    ((1, "epoch"), "1 epoch"), ((1.0, "epoch"), "1 epoch"), ((2, "epoch"), "2 epochs"),
    ((0, "epoch"), "0 epochs"), ((9.9, "epoch"), "9.9 epochs"), ((2.50, "epoch"), "2.5 epochs"),
    ((1, "batch", "batches"), "1 batch"), ((3, "batch", "batches"), "3 batches"),
])
def test_plural(args, text):
    assert plural(*args) == text


def test_a_long_first_line_is_cut_between_words():
    from pytorch_cli.platform.errors import clip, first_line
    assert first_line(ValueError("short\nsecond")) == "short"
    assert clip("the job ends, and the last checkpoint is intact", 40) == \
        "the job ends, and the last checkpoint..."
    assert clip("x" * 50, 20) == "x" * 17 + "..."  # no space to cut at: at the limit
