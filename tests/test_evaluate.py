"""evaluate(): loss, accuracy, top-5 and the confusion matrix against plain PyTorch."""

import re

import pytest
import torch
import torch.nn.functional as F

from pytorch_cli.data import catalog, datasets
from pytorch_cli.models import zoo
from pytorch_cli.training.evaluate import class_scores, evaluate, merged

CPU = torch.device("cpu")


@pytest.fixture(scope="session")  # session: made once per xdist worker
def fake():
    return datasets.load("fake")


def _model(channels=1, classes=10, size=28, seed=0):
    torch.manual_seed(seed)
    return zoo.build("lenet", channels, classes, size)


def _plain_logits(model, split, spec):
    """The logits by hand: ToTensor() then Normalize(), the whole split at once."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model.eval()((split.images.float() / 255 - mean) / std)


def test_figures_match_a_plain_pytorch_evaluation(fake):
    model = _model().train()  # evaluate switches to eval mode itself: no dropout
    got = evaluate(model, fake.test, fake.spec, 250, CPU)
    assert not model.training
    logits = _plain_logits(model, fake.test, fake.spec)
    correct = int((logits.argmax(1) == fake.test.labels).sum())
    assert got["total"] == len(fake.test) == 500
    assert got["correct"] == correct and got["acc"] == correct / 500
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, fake.test.labels).item(), rel=1e-5)
    assert "top5_acc" not in got  # 10 classes: top-5 would say little


def test_confusion_matrix_rows_are_true_classes_and_its_diagonal_the_correct(fake):
    model = _model()
    got = evaluate(model, fake.test, fake.spec, 100, CPU)
    confusion = got["confusion"]
    assert confusion.shape == (10, 10)
    assert int(confusion.sum()) == got["total"] and int(confusion.trace()) == got["correct"]
    assert confusion.sum(1).tolist() == torch.bincount(fake.test.labels, minlength=10).tolist()
    predicted = _plain_logits(model, fake.test, fake.spec).argmax(1)
    assert confusion.sum(0).tolist() == torch.bincount(predicted, minlength=10).tolist()


def test_batch_size_does_not_change_the_figures(fake):
    model = _model()
    a = evaluate(model, fake.test, fake.spec, 500, CPU)
    b = evaluate(model, fake.test, fake.spec, 96, CPU)  # a short last batch too
    assert torch.equal(a["confusion"], b["confusion"])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def _cifar100_noise(n: int, seed: int) -> tuple[catalog.Spec, datasets.Split]:
    g = torch.Generator().manual_seed(seed)
    return catalog.SPECS["cifar100"], datasets.Split(
        torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 100, (n,), generator=g))


def test_top5_accuracy_is_reported_with_more_than_ten_classes():
    spec, split = _cifar100_noise(60, seed=0)
    model = _model(3, 100, 32)
    got = evaluate(model, split, spec, 25, CPU)
    top5 = _plain_logits(model, split, spec).topk(5, 1).indices
    want = (top5 == split.labels[:, None]).any(1).float().mean().item()
    assert got["top5_acc"] == pytest.approx(want) and got["top5_acc"] >= got["acc"]
    assert got["confusion"].shape == (100, 100) and got["total"] == 60


def test_splits_evaluated_in_turn_and_merged_score_as_their_union():
    """eval --split all: each split evaluated alone, the sums added, equal one evaluation of
    every image (loss, confusion, top-5), without a copy of the whole dataset."""
    spec, split = _cifar100_noise(90, seed=1)
    model = _model(3, 100, 32)
    whole = evaluate(model, split, spec, 32, CPU)
    parts = [evaluate(model, datasets.Split(split.images[a:b], split.labels[a:b]), spec, 32, CPU)
             for a, b in ((0, 50), (50, 61), (61, 90))]
    got = merged(parts)
    assert torch.equal(got["confusion"], whole["confusion"])
    assert (got["correct"], got["total"], got["acc"]) == (whole["correct"], 90, whole["acc"])
    assert got["top5_acc"] == whole["top5_acc"]
    assert got["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert merged(parts[:1]) is parts[0]


def test_max_batches_limits_the_images_evaluated(fake):
    model = _model()
    got = evaluate(model, fake.test, fake.spec, 64, CPU, max_batches=3)
    assert got["total"] == int(got["confusion"].sum()) == 3 * 64
    first = datasets.Split(fake.test.images[:192], fake.test.labels[:192])
    assert torch.equal(got["confusion"], evaluate(model, first, fake.spec, 64, CPU)["confusion"])


def test_tta_still_evaluates_every_image_once(fake):
    part = datasets.Split(fake.test.images[:200], fake.test.labels[:200])
    got = evaluate(_model(), part, fake.spec, 100, CPU, tta="shift")
    assert got["total"] == int(got["confusion"].sum()) == 200
    assert got["correct"] == int(got["confusion"].trace()) and 0 <= got["acc"] <= 1
    assert torch.isfinite(torch.tensor(got["loss"])) and got["loss"] > 0


def test_confusion_matrix_equals_one_counted_by_hand(fake):
    model = _model(seed=3)
    got = evaluate(model, fake.test, fake.spec, 64, CPU)["confusion"]  # a short last batch
    predicted = _plain_logits(model, fake.test, fake.spec).argmax(1)
    want = [[0] * 10 for _ in range(10)]
    for true, guess in zip(fake.test.labels.tolist(), predicted.tolist()):
        want[true][guess] += 1
    assert got.dtype == torch.int64 and got.tolist() == want


@pytest.mark.cuda
def test_cuda_evaluation_reads_back_only_its_final_figures(fake):
    """No sync per batch: over 10 batches, the only synchronizing calls are the reads at the
    end (the confusion matrix and the loss)."""
    import warnings
    device = torch.device("cuda", 0)
    model, split = _model().to(device), fake.test.to(device)
    # --deterministic picks other scatter kernels; earlier tests in this process may leave it on
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(False)
    try:
        evaluate(model, split, fake.spec, 50, device)  # warm-up: cuDNN's choices, allocations
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                got = evaluate(model, split, fake.spec, 50, device)
            finally:
                torch.cuda.set_sync_debug_mode(0)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
    assert len(syncs) == 2, [str(w.message) for w in syncs]
    assert got["total"] == int(got["confusion"].sum()) == 500


def test_class_scores_are_precision_recall_and_f1_with_macro_means():
    confusion = torch.tensor([[8, 2, 0], [1, 4, 0], [0, 1, 4]])  # rows: true, columns: predicted
    s = class_scores(confusion, ["cat", "dog", "bird"])
    cat, dog = s["per_class"]["cat"], s["per_class"]["dog"]
    assert (cat["precision"], cat["recall"], cat["images"]) == (8 / 9, 0.8, 10)
    assert cat["f1"] == pytest.approx(2 * (8 / 9) * 0.8 / (8 / 9 + 0.8))
    assert dog["precision"] == pytest.approx(4 / 7) and s["per_class"]["bird"]["precision"] == 1
    assert s["macro"]["recall"] == pytest.approx((0.8 + 0.8 + 0.8) / 3)
    never = class_scores(torch.tensor([[3, 0], [2, 0]]), ["a", "b"])["per_class"]["b"]
    assert never == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "images": 2}  # never predicted


def test_most_confused_are_the_largest_off_diagonal_cells_ties_in_matrix_order():
    confusion = torch.zeros(7, 7, dtype=torch.int64)
    for (true, predicted), n in {(0, 1): 3, (6, 0): 9, (2, 3): 3, (5, 4): 3, (1, 0): 4,
                                 (3, 2): 3, (4, 4): 50, (6, 5): 1}.items():
        confusion[true, predicted] = n
    names = list("abcdefg")
    got = class_scores(confusion, names)["most_confused"]
    assert [(m["true"], m["predicted"], m["images"]) for m in got] == [
        ("g", "a", 9), ("b", "a", 4), ("a", "b", 3), ("c", "d", 3), ("d", "c", 3)]
    assert class_scores(torch.eye(3, dtype=torch.int64) * 5, names[:3])["most_confused"] == []


def test_a_class_with_no_test_image_and_never_predicted_has_no_scores_and_no_weight(tmp_path):
    """A one-image class held out nothing: its row is -, and the macro means are over the 2
    classes that are there (it pulled them to 2/3 of their value before)."""
    from pytorch_cli.output import tables
    confusion = torch.tensor([[4, 1, 0], [0, 5, 0], [0, 0, 0]])
    s = class_scores(confusion, ["a", "b", "one"])
    assert s["per_class"]["one"] == {"precision": None, "recall": None, "f1": None, "images": 0}
    assert s["macro"]["recall"] == pytest.approx((0.8 + 1.0) / 2)
    called = class_scores(torch.tensor([[4, 0, 1], [0, 5, 0], [0, 0, 0]]), ["a", "b", "one"])
    assert called["per_class"]["one"] == {"precision": 0.0, "recall": None, "f1": None,
                                          "images": 0}  # called it, never right: no accuracy
    # (a hostile trial: "0.00%" of no image, and a macro recall of 16% for a set scored at 65%)
    assert called["macro"]["recall"] == pytest.approx((0.8 + 1.0) / 2)  # balanced accuracy
    assert called["macro"]["precision"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    out = tmp_path / "table.txt"
    with out.open("w") as f:
        tables.print_eval({"checkpoint": "m", "dataset": "folder", "split": "test", "tta": False,
                           "loss": 0.1, "acc": 0.9, "correct": 9, "total": 10,
                           "classes": ["a", "b", "one"], "confusion": confusion.tolist(), **s}, f)
    assert re.search(r"\n  one +- +- +- +0\n", out.read_text()), out.read_text()
    with out.open("w") as f:  # a class named in wide characters: the columns still line up
        tables.print_eval({"checkpoint": "m", "dataset": "folder", "split": "test", "tta": False,
                           "loss": 0.1, "acc": 0.9, "correct": 9, "total": 10,
                           "classes": ["a", "日本", "one"], "confusion": confusion.tolist(),
                           **class_scores(confusion, ["a", "日本", "one"])}, f)
    rows = out.read_text().splitlines()[1:6]
    assert len({tables._columns(row) for row in rows}) == 1, rows
