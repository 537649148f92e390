"""What eval prints: the head names the folder and the split read, then the classes' scores
and the most confused pairs, in plain text when not on a terminal."""

import io

import torch

from pytorch_cli.output import tables
from pytorch_cli.training.evaluate import class_scores


def _result(classes, confusion, **kw):
    confusion = torch.tensor(confusion)
    return {"checkpoint": "run/model.pth", "dataset": "folder", "source": "new", "split": "all",
            "tta": False, "loss": 0.5, "acc": float(confusion.trace() / confusion.sum()),
            "correct": int(confusion.trace()), "total": int(confusion.sum()),
            "classes": classes, "confusion": confusion.tolist(), **class_scores(confusion, classes),
            **kw}


def test_eval_prints_the_folder_read_and_the_most_confused_pairs():
    out = io.StringIO()
    tables.print_eval(_result(["cat", "dog", "fox"], [[5, 2, 0], [1, 6, 0], [0, 0, 0]]), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "run/model.pth on folder new (all images): loss 0.5000 acc 78.57% (11/14)"
    assert "most confused (true -> predicted, images): cat -> dog 2, dog -> cat 1" in lines
    out = io.StringIO()  # a built-in dataset's split, and nothing confused: no such line
    tables.print_eval(_result(["0", "1"], [[3, 0], [0, 4]], dataset="mnist", split="test"), out)
    assert out.getvalue().startswith("run/model.pth on mnist test: loss 0.5000 acc 100.00% (7/7)")
    assert "most confused" not in out.getvalue()
