"""The options of one train/resume session, declared as settings are (declare.py): how it runs,
not what it trains, so they are not saved with the run."""

from __future__ import annotations

from dataclasses import dataclass

from pytorch_cli.settings.declare import setting

# processes on one machine: one per GPU (8-16 a node) or per core with gloo; each imports
# torch (~300 MB), and torchrun hangs on a typo such as 10**30
MAX_NPROC = 128
# None: not given (the default run directory); given, a name must say something
NOT_BLANK = (lambda v: v.strip() != "", "non-blank (leave it out for the default run directory)")


@dataclass
class RunOptions:
    no_accel: bool = setting(
        False, "Train on the CPU (as --device cpu; the MNIST example's flags).",
        flags=("--no-accel", "--no-cuda"))
    no_mps: bool = setting(False, "Never pick Apple's MPS for --device auto.", flags=("--no-mps",))
    profile: int = setting(
        0, "Profile N steps after a 5-step warm-up: Chrome trace in the run directory, top "
        "operators printed.", metavar="N", min=0,
        resume_help="Profile N steps after a 5-step warm-up (as train --profile).")
    dry_run: bool = setting(False, "Run one training and one test batch, write no run (a "
                            "folder's decoded images are cached, as for the real run).")
    name: str | None = setting(None, "Run name: the run directory is runs/NAME.",
                               rule=NOT_BLANK)
    run_dir: str | None = setting(None, "Run directory (overrides --name).", rule=NOT_BLANK)
    overwrite: bool = setting(False, "Replace the files of an existing run directory.")
    resume: str = setting(
        "never", "auto: continue the named run if its last.pt has these settings, else start it "
        "(torchrun restarts do this).", choices=("never", "auto"), flags=("--resume",))
    requeue: bool = setting(
        True, "Under SLURM: after SIGUSR1 (sbatch --signal=USR1@N), save, then `scontrol "
        "requeue` the job.",
        resume_help="Under SLURM: after SIGUSR1, save, then `scontrol requeue` the job.")
    nproc: int = setting(
        0, "Train with N processes on this machine (DDP): hands the job to torchrun. "
        "--batch-size is per process.",
        rule=(lambda v: v >= 0, "0 (no torchrun) or more"),
        limit=(MAX_NPROC, "processes on one machine"),
        resume_help="Continue with N processes on this machine (DDP): hands the job to "
        "torchrun. The global batch is kept.")
    max_restarts: int = setting(
        0, "With --nproc: restart failed workers up to K times; they continue from last.pt.",
        rule=(lambda v: v >= 0, "0 or more"),
        resume_help="With --nproc: restart failed workers up to K times; they continue from "
        "last.pt.")
    json: bool = setting(
        False, "Print the final summary as one JSON object on stdout (logs go to stderr).",
        flags=("--json",),
        resume_help="Print the final summary as one JSON object on stdout.")
    quiet: bool = setting(False, "Only epoch results and the summary.", flags=("--quiet", "-q"),
                          resume_help="Only epoch results and the summary.")
