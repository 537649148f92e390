"""The event stream: fanout feeds every sink in order, json_safe makes records valid JSON."""

import json
import math

import pytest

from pytorch_cli.platform.events import epochs_at, fanout, json_safe

NAN, INF = float("nan"), float("inf")


def test_fanout_feeds_every_sink_in_order_and_skips_none():
    seen = []
    emit = fanout(lambda r: seen.append(("a", r)), None, lambda r: seen.append(("b", r)), None)
    first, second = {"kind": "start"}, {"kind": "end"}
    emit(first)
    emit(second)
    assert seen == [("a", first), ("b", first), ("a", second), ("b", second)]
    assert seen[0][1] is first  # every sink gets the record itself


def test_fanout_without_live_sinks_does_nothing():
    fanout()({"kind": "start"})
    fanout(None, None)({"kind": "start"})


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_floats_become_none(bad):
    assert json_safe(bad) is None


def test_non_finite_floats_become_none_at_any_depth():
    record = {"kind": "epoch", "train_loss": NAN, "lrs": [0.1, INF, (-INF, 2.0)],
              "val": {"inner": {"loss": NAN, "acc": 0.5}}, "rows": [{"x": INF}]}
    assert json_safe(record) == {"kind": "epoch", "train_loss": None,
                                 "lrs": [0.1, None, [None, 2.0]],
                                 "val": {"inner": {"loss": None, "acc": 0.5}},
                                 "rows": [{"x": None}]}
    assert math.isnan(record["train_loss"])  # the caller's record is not changed


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, 1e308, 3, True, None, "nan", "inf", b"x"])
def test_other_values_are_left_alone(value):
    assert json_safe(value) is value


def test_output_is_strict_json():
    record = {"kind": "abort", "loss": NAN, "history": [INF, {"a": (-INF, NAN)}], "step": 7}
    text = json.dumps(json_safe(record), allow_nan=False)
    assert json.loads(text) == {"kind": "abort", "loss": None,
                                "history": [None, {"a": [None, None]}], "step": 7}


def test_an_epoch_cut_short_is_placed_where_it_ended():
    """Where plot draws a record and the epoch line says it is. A hostile trial: a --max-steps
    run's only test point sat at epoch 1, its train curve ending at 0.05; --epochs 1.5's at 2."""
    assert epochs_at({"kind": "epoch", "epoch": 1, "batch": 5, "batches": 100}) == 0.05
    assert epochs_at({"kind": "epoch", "epoch": 2, "batch": 16, "batches": 32}) == 1.5
    assert epochs_at({"kind": "epoch", "epoch": 2, "epochs": 1.5}) == 1.5  # an older record
    assert epochs_at({"kind": "epoch", "epoch": 2, "epochs": 3}) == 2.0
    assert epochs_at({"kind": "train", "epoch": 2, "batch": 25, "batches": 100}) == 1.25
