"""`python -m tests.preempt EPOCH ARGS...`: ptv2-train that gets SIGTERM right after its epoch-EPOCH checkpoint.

The signal goes through the real handler (ptv2.checkpoint.stop_on_signals), as a Slurm preemption would;
only the moment is chosen here, so the package carries no test hook.
"""

from __future__ import annotations

import os
import signal
import sys

from ptv2 import checkpoint, cli

EPOCH = int(sys.argv.pop(1))
_save = checkpoint.save


def _save_then_preempt(run_directory, model, optimizer, scheduler, loop) -> None:
    _save(run_directory, model, optimizer, scheduler, loop)
    if loop["step"] == 0 and loop["epoch"] - 1 == EPOCH:  # the end-of-epoch checkpoint of EPOCH
        os.kill(os.getpid(), signal.SIGTERM)


checkpoint.save = _save_then_preempt
cli.main()
