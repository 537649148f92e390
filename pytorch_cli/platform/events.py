"""The one event stream a run reports through. The loop calls `emit(record)`; sinks (the progress
printer, metrics.jsonl, TensorBoard, MLflow, W&B) each take what they need from it.

Records are plain dicts with a "kind":
  start  device, dataset, sizes, model, params, epochs, batches (per process), batch_size (per
         process), world_size (processes), left_out (images per epoch no process trains on),
         least_batch (2: a last batch of one is left out, which its BatchNorm cannot take),
         run_dir, dry_run, resume_at, step (where it starts),
         setup_s and data_s (of it, reading the data), time (wall clock, Unix seconds)
  compile  after the first step with --compile: mode (and backend, where not inductor),
           seconds (kept out of images/s)
  sample the run's first training batch, as the model sees it: images (a CPU tensor), step
  train  every --log-interval batches: epoch, batch, step, lr (the head's, in that step),
         train_loss, images_per_s, elapsed_s
  epoch  every epoch: batch (its batches trained, of batches: fewer where the run's end cut it),
         lr (of its last step), train_loss, test_loss, test_acc (+ val_*), tta, images_per_s,
         train_s,
         eval_s, elapsed_s (since training started: setup is not in it)
  stop   the run was asked to stop (a signal) and saved its exact position: reason (SIGINT,
         SIGTERM, SIGUSR1, SIGHUP), epoch, batch, step, run_dir
  profile  with --profile: steps, first_step, trace (path), table (the top operators)
  end    the final summary (stopped: the signal's name when a stop came first)
  abort  the run failed: reason (nan, interrupted, error), error (its first line); sinks give
         the terminal back
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from pytorch_cli.platform.errors import warn

Emit = Callable[[dict], None]

# The curves a tracker draws (TensorBoard, MLflow, W&B): record kind -> (record key, its name
# there, against the record's step); "/" groups them into sections in each tracker
SCALARS = {
    "train": (("train_loss", "Loss/train"), ("lr", "LR"),
              ("images_per_s", "Throughput/images_per_s")),
    "epoch": (("train_loss", "Loss/train_epoch"), ("test_loss", "Loss/test"),
              ("test_acc", "Accuracy/test"), ("val_loss", "Loss/val"), ("val_acc", "Accuracy/val"),
              ("images_per_s", "Throughput/images_per_s_epoch")),
}


def fanout(*sinks: Optional[Emit]) -> Emit:
    """One emit that feeds every sink, in order (None sinks are left out)."""
    live = [s for s in sinks if s is not None]

    def emit(record: dict) -> None:
        for sink in live:
            sink(record)
    return emit


def best_effort(log: Emit, failed: Callable[[Exception], str]) -> Emit:
    """A tracker's sink (MLflow, W&B): the run matters more than its mirror. Its first failure
    is one warning, failed(error)'s line, and the sink goes quiet; metrics.jsonl has it all."""
    live = True

    def emit(record: dict) -> None:
        nonlocal live
        if not live:
            return
        try:
            log(record)
        except Exception as e:  # the tracker's own, its database's, its HTTP client's
            live = False
            warn(f"{failed(e)}; the run goes on without it (metrics.jsonl has every record)")
    return emit


def epochs_at(record: dict) -> float:
    """Where a train or epoch record falls, in epochs: 1.5 is half-way through the second (the
    end of a run of --epochs 1.5; 0.05 that of one --max-steps cut early in its first)."""
    if isinstance(record.get("batch"), int) and record.get("batches"):
        return record["epoch"] - 1 + record["batch"] / record["batches"]
    return float(min(record["epoch"], record.get("epochs") or math.inf))  # older epoch records


def json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite floats become null (at any depth), so every line
    of metrics.jsonl and every --json output is valid JSON, even from a diverged run."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
