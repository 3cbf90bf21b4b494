"""Stop a run whose loss explodes, finite or not (the rule is stated in docs/metrics.md).

A NaN or infinite step loss stops the run at once. A finite one stops it when the mean loss of the last
`WINDOW` steps (fewer at the start) exceeds `FACTOR` x max(the first step's loss, `FLOOR`). The first
step's loss is measured before any update, so a diverging run cannot inflate its own yardstick; the 1-nat
floor keeps a resumed or warm-started run, whose first loss can be tiny, clear of ordinary noise. A healthy
cross-entropy never averages 100 nats (e^-100 on the gold label): batch noise, early-epoch spikes and the
larger token and span losses stay far below it, while a learning rate that blows the weights up (lr=1e10)
crosses it within a few steps. The values come from the loop's one-step-late read: no extra GPU sync.
"""

from __future__ import annotations

import math
from collections import deque

from ptv2.errors import UserError

WINDOW = 20
FACTOR = 100.0
FLOOR = 1.0


class LossWatch:
    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.first: float | None = None
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def check(self, loss: float, epoch: int, step: int) -> None:
        """UserError (the run fails, exit 2) when the loss is not finite or has diverged."""
        if not math.isfinite(loss):
            raise UserError(f"loss became {loss} at epoch {epoch} step {step}: lower train.lr={self.lr:g}")
        if self.first is None:
            self.first = loss
        self.recent.append(loss)
        mean, limit = sum(self.recent) / len(self.recent), FACTOR * max(self.first, FLOOR)
        if mean > limit:
            raise UserError(
                f"loss diverged at epoch {epoch} step {step}: mean {mean:.3g} over the last {len(self.recent)} "
                f"step(s) exceeds {FACTOR:g} x max(first step's loss {self.first:.3g}, {FLOOR:g}): "
                f"lower train.lr={self.lr:g}"
            )
