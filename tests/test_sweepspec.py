import pytest

from pytorch_cli.platform.errors import UsageError
from pytorch_cli.settings import sweepspec

BASE = 'dataset = "fake"\nepochs = 1\n'


def _spec(tmp_path, search: str, base: str = BASE):
    path = tmp_path / "spec.toml"
    path.write_text(base + "[search]\n" + search)
    return sweepspec.load(path)


def test_ranges_and_choices_are_typed_as_their_settings(tmp_path):
    spec = _spec(tmp_path, 'lr = {low = 1e-4, high = 0.3, log = true}\noptimizer = ["sgd", '
                 '"adam"]\nbatch_size = [64, 128]\nweight_decay = {low = 0, high = 1e-3}\n',
                 BASE + 'model = "lenet"\n')
    lr, optimizer, batch, decay = spec.search
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-4, 0.3, True, False)
    assert optimizer.choices == ("sgd", "adam") and batch.choices == (64, 128)
    assert decay.low == 0.0 and decay.high == 0.001  # an integer bound of a float setting
    assert spec.base == {"dataset": "fake", "model": "lenet", "epochs": 1}


@pytest.mark.parametrize("search, base, message", [
    ("lrr = [0.1]\n", BASE, "unknown key 'lrr'"),
    ("lr = {low = 0.3, high = 0.1}\n", BASE, "range is empty"),
    ("optimizer = []\n", BASE, "nothing to choose"),
    ("epochs = [1, 2]\n", BASE, "epochs is both fixed in the base config and searched"),
    ("lr = {low = 0, high = 0.1, log = true}\n", BASE, "log range must start above 0"),
    ("optimizer = ['sgd', 'lion']\n", BASE, "optimizer"),
    ("lr = {low = 0.1, high = 2e6}\n", BASE, "lr"),
    ("lr = {low = 0.1, hi = 2}\n", BASE, "takes low, high"),
    ("", BASE, "its [search] table is empty"),
    ("lr = [0.1]\n", BASE + "lrr = 1\n", "unknown key 'lrr'"),
    # a step that misses high: Optuna ran 112 for 16..100 (a hostile trial), or low alone
    ("batch_size = {low = 16, high = 100, step = 32}\n", BASE, "batch_size's step 32 must "
     "divide high - low .100 - 16.: the values are low, low . step"),
    ("lr = {low = 1e-3, high = 0.1, step = 0.5}\n", BASE, "lr's step 0.5 must divide"),
    # one setting twice: Optuna's "dynamic value space" error, a trial left running (a trial)
    ("norm_lr_scale = [1.0, 2.0]\nbias_lr_scale = [2.0, 4.0]\n", BASE, "[search] "
     "'norm_lr_scale' and 'bias_lr_scale' are the same setting; keep one of them"),
    ("max-steps = [1, 2]\nmax_steps = [3, 4]\n", BASE, "'max-steps' and 'max_steps' are the same"),
])
def test_bad_specs_are_one_line_naming_the_key(tmp_path, search, base, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        _spec(tmp_path, search, base)


@pytest.mark.parametrize("text, message", [(BASE, "no [search] table"),
                                           (f"search = 3\n{BASE}", "search must be a [search]")])
def test_a_spec_without_a_search_table_says_which_way(tmp_path, text, message):
    (tmp_path / "spec.toml").write_text(text)
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        sweepspec.load(tmp_path / "spec.toml")


def test_a_grid_needs_choices_or_steps_and_lists_every_point(tmp_path):
    spec = _spec(tmp_path, "batch_size = {low = 32, high = 128, step = 32}\nlr = [0.1, 0.2]\n")
    assert sweepspec.grid_space(spec) == {"batch_size": [32, 64, 96, 128], "lr": [0.1, 0.2]}
    spec = _spec(tmp_path, "lr = {low = 0.1, high = 0.3, step = 0.1}\n")  # floats' rounding
    assert sweepspec.grid_space(spec) == {"lr": pytest.approx([0.1, 0.2, 0.3])}
    with pytest.raises(UsageError, match="needs a list or a step for lr"):
        sweepspec.grid_space(_spec(tmp_path, "lr = {low = 0.1, high = 0.2}\n"))


def test_a_search_some_of_whose_values_the_base_refuses_loads_and_one_none_fits_is_refused(
        tmp_path):
    """Nesterov fixed in the base: optimizer = sgd or adam goes on (adam's trials fail, each
    recorded so); adam alone could never run, and is one line before any trial."""
    nesterov = BASE + "nesterov = true\nmomentum = 0.9\n"
    spec = _spec(tmp_path, 'optimizer = ["sgd", "adam"]\n', nesterov)
    assert spec.search[0].choices == ("sgd", "adam")
    with pytest.raises(UsageError, match=r"\[search\] optimizer: no value of it works with the "
                       "base config: --nesterov needs --optimizer sgd"):
        _spec(tmp_path, 'optimizer = ["adam", "rmsprop"]\n', nesterov)
    with pytest.raises(UsageError, match="lr"):  # a value its own rule refuses, as before
        _spec(tmp_path, 'optimizer = ["sgd", "adam"]\nlr = {low = 0.1, high = 2e6}\n', nesterov)


def test_a_base_setting_a_trials_choice_leaves_unused_is_put_back_to_its_default(tmp_path):
    """momentum = 0.9 in the base, optimizer searched: sgd's trials take it, adam's (which has
    none, and a command line would refuse) run with the default."""
    spec = _spec(tmp_path, 'optimizer = ["sgd", "adam"]\n', BASE + "momentum = 0.9\n")
    assert spec.config({"optimizer": "sgd"}).momentum == 0.9
    assert spec.config({"optimizer": "adam"}).momentum == 0.5


def test_a_search_of_a_setting_no_trial_uses_is_refused(tmp_path):
    """momentum searched with adam fixed: every trial would run the default, while --show
    listed the values drawn; with optimizer searched too, sgd's trials use it."""
    with pytest.raises(UsageError, match=r"\[search\] momentum does nothing in any trial: "
                                         r"--momentum is --optimizer sgd's and rmsprop's"):
        _spec(tmp_path, "momentum = {low = 0.1, high = 0.9}\n", BASE + 'optimizer = "adam"\n')
    _spec(tmp_path, 'momentum = {low = 0.1, high = 0.9}\noptimizer = ["sgd", "adam"]\n')
