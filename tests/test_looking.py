"""`ptrain runs DIR` and `ptrain plot` as a user calls them, on a real run and on wrong paths."""

import pytest


def test_runs_of_a_folder_lists_the_runs_under_it(ptrain, tmp_path):
    assert ptrain("train", "--dataset", "fake", "--epochs", "1", "--max-steps", "2", "--quiet",
                  "--run-dir", "sweep/lr-0.01").code == 0
    r = ptrain("runs", "sweep", "--json")
    assert r.code == 0, r.err
    [run] = r.json()
    assert (run["run"], run["status"], run["dataset"], run["model"]) == (
        "lr-0.01", "finished", "fake", "lenet")
    assert run["epochs_done"] == 0.06 and not run["resumable"]  # 2 of 32 steps
    (tmp_path / "empty").mkdir()
    r = ptrain("runs", "empty")
    assert r.code == 0 and r.out == "no runs under empty/ (start one with `ptrain train`)\n"


def test_runs_of_a_file_is_a_one_line_usage_error(ptrain, tmp_path):
    (tmp_path / "notes.txt").write_text("not runs")
    r = ptrain("runs", "notes.txt", "--json")
    assert r.code == 2 and r.out == ""
    assert r.err == ("ptrain: error: notes.txt is not a folder; "
                     "name the folder the runs are in\n")


def test_runs_in_a_runs_dir_that_is_missing_says_so_but_a_missing_runs_is_none_yet(
        ptrain, monkeypatch):
    """PTRAIN_RUNS_DIR named is the folder named, as `ptrain runs DIR` (a typo exited 0 with
    "no runs"); runs/, the default, may not exist before the first run."""
    monkeypatch.setenv("PTRAIN_RUNS_DIR", "/nonexistent/runs")
    r = ptrain("runs")
    assert r.code == 2 and r.err == ("ptrain: error: PTRAIN_RUNS_DIR=/nonexistent/runs does not "
                                     "exist; name the folder the runs are in\n")
    monkeypatch.delenv("PTRAIN_RUNS_DIR")
    r = ptrain("runs")
    assert r.code == 0 and r.out.startswith("no runs under runs/")


def test_plot_of_a_run_without_records_names_metrics_jsonl(ptrain, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "cut").mkdir()  # killed in the middle of its first append
    (tmp_path / "cut" / "metrics.jsonl").write_text('{"kind": "start", "step"')
    for target in ("cut", "missing"):
        r = ptrain("plot", target)
        assert r.code == 2 and r.err.count("\n") == 1
        assert f"{target} has no metrics.jsonl with records" in r.err
    assert not (tmp_path / "curves.png").exists()
