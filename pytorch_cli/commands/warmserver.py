"""The first module the trials' fork server imports (warmstart.PRELOAD), and the only thing it
does: block the stopping signals in that server.

The server lives in the sweep's process group. A Ctrl-C, or SLURM's or systemd's SIGTERM to the
group, would end it: multiprocessing then reads the exit code of every trial it forked as 255
("failed", where the trial had saved and stopped), and no trial could start again (a hostile
trial's EOFError). Blocked, not ignored: the trials forked from it inherit the mask, and a signal
ignored at a run's start stays ignored (signals.stop_on_signals); each trial unblocks them as it
starts (warmstart._main), when one sent since its fork arrives."""

import signal

BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
