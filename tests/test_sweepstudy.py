"""The study a sweep opens (commands/sweepstudy.py): it keeps the metric and the spec it was
made with, and its sampler draws new settings in a continued study."""

import pytest
from test_sweep import _spec, _study

pytest.importorskip("optuna")


def test_a_study_keeps_its_metric_another_is_refused_and_show_ranks_by_its_own(ptrain, tmp_path):
    """Made with --metric loss (no trial: --timeout), continued with the default acc: refused in
    one line naming both; --show ranks by the study's loss, lowest first."""
    import optuna
    spec = _spec(tmp_path, 'epochs = 1\n[search]\nlr = {low = 0.001, high = 0.1}\n')
    made = ptrain("sweep", spec, "--trials", "1", "--metric", "loss", "--timeout", "0.001")
    assert made.code == 0, made.err
    study = _study(tmp_path)
    for loss in (2.5, 0.5):  # two trials as a worker elsewhere would have told them
        study.add_trial(optuna.trial.create_trial(
            value=loss, params={"lr": 0.01}, user_attrs={"run_dir": f"trial-{loss}"},
            distributions={"lr": optuna.distributions.FloatDistribution(0.001, 0.1)}))
    other = ptrain("sweep", spec, "--trials", "3")
    assert other.code == 2 and other.err.count("\n") == 1, other.err
    assert "--metric loss" in other.err and "--metric acc" in other.err
    assert len(_study(tmp_path).trials) == 2  # nothing ran
    shown = ptrain("sweep", "runs/spec", "--show").out.splitlines()
    assert [line.split()[2] for line in shown] == ["loss", "0.5000", "2.5000"]


@pytest.mark.slow
def test_a_continued_sweep_draws_new_settings_not_the_first_ones_again(ptrain, tmp_path):
    spec = _spec(tmp_path, 'epochs = 0.1\n[search]\nlr = {low = 0.001, high = 0.05, log = true}\n')
    for trials, start in (("1", "warm"), ("2", "fresh")):  # the second trial a new interpreter
        result = ptrain("sweep", spec, "--trials", trials, "--sampler", "random", "--pruner",
                        "none", "--trial-start", start)
        assert result.code == 0, result.err
    first, second = _study(tmp_path).trials
    assert [t.state.name for t in (first, second)] == ["COMPLETE"] * 2
    assert first.params["lr"] != second.params["lr"]


def test_a_changed_spec_is_refused_and_best_toml_is_the_trial_as_it_ran(ptrain, tmp_path):
    """A hostile trial changed the spec's batch between two sweeps of one study: best.toml named
    trial 0 with the new batch, which trial 0 never ran; a range turned from log to linear
    raised in a worker thread, exit 0. Both are refused in one line; nothing runs."""
    search = '[search]\nlr = {low = 0.001, high = 0.05, log = true}\n'
    spec = _spec(tmp_path, f'epochs = 1\nmax_steps = 3\nbatch_size = 32\n{search}')
    assert ptrain("sweep", spec, "--trials", "1", "--pruner", "none").code == 0
    best = (tmp_path / "runs/spec/best.toml").read_text()
    assert "batch_size = 32" in best and "max_steps = 3" in best
    linear = search.replace("true", "false")
    for changed in (f'epochs = 1\nmax_steps = 3\nbatch_size = 8\n{search}',
                    f'epochs = 1\nmax_steps = 3\nbatch_size = 32\n{linear}'):
        _spec(tmp_path, changed)
        r = ptrain("sweep", spec, "--trials", "2", "--pruner", "none")
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert "was made with another spec (" in r.err and "give the spec it was made" in r.err
        assert ("batch_size" if "= 8" in changed else "lr") in r.err
    assert len(_study(tmp_path).trials) == 1
    assert (tmp_path / "runs/spec/best.toml").read_text() == best
    # the same spec spelt otherwise (a default written out: seed 1) continues the same study
    # (`max_steps = 0`, no cap, against none was "another spec": a hostile trial)
    _spec(tmp_path, f'epochs = 1\nmax_steps = 3\nbatch_size = 32\nseed = 1\n{search}')
    r = ptrain("sweep", spec, "--trials", "2", "--pruner", "none")
    assert r.code == 0 and len(_study(tmp_path).trials) == 2, r.err
