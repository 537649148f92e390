"""--tensorboard (optional extra `tensorboard`): the run's events as TensorBoard data in
RUN_DIR/tensorboard: scalars against the optimizer step, a grid of the first training batch,
and the hyperparameters with the final metrics. Only rank 0 gets this sink."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.platform.events import SCALARS, Emit
from pytorch_cli.store.rundir import TENSORBOARD


def require() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError("--tensorboard needs the tensorboard package: "
                         "pip install 'pytorch-cli[tensorboard]'")


def _hparams(config: dict) -> dict:
    """add_hparams takes numbers, strings and bools only: None (e.g. no --max-steps) shows as ''."""
    return {k: ("" if v is None else v) for k, v in config.items()
            if v is None or isinstance(v, (int, float, str, bool))}


def sink(run_dir: Path, config: dict) -> Emit:
    """The writer opens at the "start" record: a resumed run purges what was logged after its
    checkpoint (it is logged again), as metrics.jsonl is trimmed."""
    from torch.utils.tensorboard import SummaryWriter
    folder = run_dir / TENSORBOARD
    if folder.is_symlink():  # its event files would be written wherever the link points
        raise PtrainError(f"cannot write {folder}: it is a symbolic link, and ptrain does not "
                          "write through links in a run directory; remove it")
    writer = None

    def emit(r: dict) -> None:
        nonlocal writer
        kind = r["kind"]
        if kind == "start":
            resumed = r.get("resume_at") is not None
            writer = SummaryWriter(str(folder),
                                   purge_step=r.get("step", 0) + 1 if resumed else None)
        if writer is None:
            return
        for key, tag in SCALARS.get(kind, ()):
            if r.get(key) is not None:
                writer.add_scalar(tag, r[key], r["step"])
        if kind == "sample":
            from torchvision.utils import make_grid
            writer.add_image("Images/first_batch", make_grid(r["images"], nrow=8, normalize=True,
                                                             scale_each=True), r["step"])
        if kind == "end" and not r.get("stopped") and not r.get("dry_run") and "test_acc" in r:
            metrics = {"hparam/test_acc": r["test_acc"], "hparam/best_acc": r["best_acc"],
                       "hparam/test_loss": r["test_loss"]}
            writer.add_hparams(_hparams(config), metrics, run_name=".", global_step=r["step"])
        if kind in ("end", "stop", "abort"):
            writer.close()
            writer = None
        elif kind == "epoch":
            writer.flush()  # a run watched live shows each epoch as it ends
    return emit
