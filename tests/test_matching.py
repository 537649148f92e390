"""A saved run's classes against the data at hand: the same ones in the same order to resume;
to evaluate, some of them too, renumbered by name; never a class the head has no row for."""

import dataclasses
import re

import pytest
import torch

from pytorch_cli.data import catalog, datasets, matching
from pytorch_cli.platform.errors import UsageError

RUN = {"classes": ["cat", "dog", "fox"]}


def _data(classes, labels):
    labels = torch.tensor(labels)
    split = datasets.Split(torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8), labels)
    spec = catalog.folder_spec(1, (4, 4), len(classes), [0.5], [0.25])
    return datasets.Data(spec, list(classes), split, None, split, "new")


def test_a_set_of_some_of_the_runs_classes_is_numbered_as_the_run_numbers_them():
    data = _data(["dog", "fox"], [0, 1, 1, 0])  # dog is 0 here, 1 to the run
    got = matching.onto_run_classes(RUN, data)
    assert got.classes == RUN["classes"] and got.spec.num_classes == 3
    assert got.train.labels.tolist() == got.test.labels.tolist() == [1, 2, 2, 1]
    assert got.val is None and got.train.images is data.train.images  # the images untouched
    assert dataclasses.replace(got.spec, num_classes=2) == data.spec


def test_the_runs_own_classes_are_left_as_they_are():
    data = _data(RUN["classes"], [0, 2, 1])
    assert matching.onto_run_classes(RUN, data) is data


@pytest.mark.parametrize("classes, said", [
    (["cat", "emu"], "new: class emu is not the run's (cat, dog, fox)"),
    (["ant", "cat", "emu"], "new: classes ant, emu are not the run's (cat, dog, fox)")])
def test_a_class_the_run_never_learnt_is_one_line(classes, said):
    with pytest.raises(UsageError, match="^" + re.escape(said + "; evaluate images of the run's")):
        matching.onto_run_classes(RUN, _data(classes, [0, 1]))


def test_resuming_takes_the_runs_classes_only_in_its_order():
    with pytest.raises(UsageError, match=r"^new: its classes \(dog, fox\) are not the run's "
                                         r"\(cat, dog, fox\); resume with --data-dir"):
        matching.same_as_trained(RUN, _data(["dog", "fox"], [0, 1]), "resume")
    matching.same_as_trained(RUN, _data(RUN["classes"], [0, 1]), "resume")


def test_another_folder_held_out_is_said_also_for_a_run_whose_folder_drew_nothing(capsys):
    """A run trained on train/ + test/ keeps no listing: `eval --data-dir NEW` of a folder
    without test/ scored its held-out part only, unsaid (a hostile trial: 8 of 40 images)."""
    new = dataclasses.replace(_data(RUN["classes"], [0, 1, 2, 0, 1]), listing="abc")
    matching.moved_warning(RUN, new, "test", other=True)  # RUN: no listing
    assert capsys.readouterr().err == (
        "warning: new is not the folder the run trained on (its files differ): --split test "
        "scores the 5 of its 10 images the run's settings hold out; --split all scores every "
        "one\n")
    matching.moved_warning(RUN, new, "test", other=False)  # its own folder, given again
    matching.moved_warning(RUN, dataclasses.replace(new, listing=""), "test", other=True)
    assert capsys.readouterr().err == ""  # (a folder with test/: nothing held out)
