"""--wandb (optional extra `wandb`): the run in Weights & Biases, from rank 0.

- Offline unless logged in (WANDB_API_KEY, or `wandb login`'s ~/.netrc entry): W&B's files go
  to RUN_DIR/wandb/, and `wandb sync RUN_DIR/wandb/offline-run-*` uploads them later. WANDB_MODE
  decides where it is set; WANDB_PROJECT names the project (else "ptrain").
- The config is the resolved config; every log record's and epoch's numbers (events.SCALARS)
  are logged against the optimizer step, the final figures in the run's summary.
- A resumed run continues its W&B run (its id in RUN_DIR/trackers.json). A sweep's trials share
  one group, the study's name (WANDB_RUN_GROUP, set by `ptrain sweep`).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from urllib.parse import urlsplit

from pytorch_cli.platform.errors import PtrainError, UsageError, first_line
from pytorch_cli.platform.events import SCALARS, Emit, best_effort
from pytorch_cli.store.rundir import RunDir

EXIT = {"end": 0, "stop": 143, "abort": 1}  # a stop is marked preempting: it will resume
SUMMARY = ("test_acc", "test_loss", "best_acc", "best_epoch", "train_s_total")


def require() -> None:
    if importlib.util.find_spec("wandb") is None:
        raise UsageError("--wandb needs the wandb package: pip install 'pytorch-cli[wandb]'")


def logged_in() -> bool:
    """An API key in the environment or in ~/.netrc for W&B's host (what `wandb login` writes);
    read here rather than through W&B, whose internals move between releases."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _init(run_dir: RunDir, config: dict, resumed: bool):
    import wandb
    saved = run_dir.tracker_id("wandb") if resumed else None
    mode = os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")
    return wandb.init(project=os.environ.get("WANDB_PROJECT") or "ptrain",
                      name=run_dir.path.name, id=saved, resume="allow" if saved else None,
                      config=config, dir=str(run_dir.path.resolve()), mode=mode,
                      settings=wandb.Settings(console="off", silent=True))


def sink(run_dir: RunDir, config: dict, resumed: bool) -> Emit:
    """The W&B run starts now, so a failure to start stops the run before it trains."""
    try:
        run = _init(run_dir, config, resumed)
    except Exception as e:  # W&B's own errors (a bad key, a server that does not answer...)
        raise PtrainError(f"--wandb: cannot start the W&B run: {first_line(e)}; set "
                          "WANDB_MODE=offline, or leave --wandb out") from None

    def log(r: dict) -> None:
        kind = r["kind"]
        if kind == "start":
            run_dir.remember_tracker("wandb", run.id)
        values = {name: r[key] for key, name in SCALARS.get(kind, ()) if r.get(key) is not None}
        if values:
            run.log(values, step=r["step"])
        if kind == "end":
            run.summary.update({k: r[k] for k in SUMMARY if r.get(k) is not None})
        if kind == "stop":  # W&B's word for a run that will be resumed
            run.mark_preempting()
        if kind in EXIT and not (kind == "end" and r.get("stopped")):
            run.finish(exit_code=EXIT[kind])
    return best_effort(log, lambda e: f"--wandb: {first_line(e)}")
