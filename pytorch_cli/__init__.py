"""ptrain: train, evaluate, resume and export PyTorch image classifiers.

The subpackages are layers; a module imports only from its own layer or those before it in
LAYERS (tests/test_layers.py checks every import, README's Layout shows them in this order)."""

__version__ = "0.1.0"

LAYERS = (
    "platform",  # errors, files, devices, processes, signals: what everything stands on
    "data",  # datasets: finding and reading them, batches on the device
    "models",  # the model zoo and its nets
    "store",  # what is written to disk: run directories, checkpoints, exports
    "training",  # the job, the loop, one epoch, one step, evaluation, stopping
    "output",  # what a person sees: progress, tables, plots, TensorBoard
    "settings",  # every setting, declared once: CLI options, TOML, help
    "commands",  # the command line and the sessions it runs
)
