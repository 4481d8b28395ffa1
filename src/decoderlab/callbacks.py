"""Lightning callbacks of a run's life cycle: a checkpoint at the current step when a preemption signal arrives.

Imports Lightning (~3.6 s): only :mod:`decoderlab.fit` imports this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from decoderlab.preempt import Preempted, SignalCatcher

log = logging.getLogger("decoderlab")


class PreemptCheckpoint(Callback):
    """While the training loop runs, a signal caught by ``catcher`` ends training after the current step (its
    metrics logged, its validation done), then saves ``last`` and raises :class:`Preempted`: no step is lost."""

    def __init__(self, catcher: SignalCatcher, last: Path):
        self.catcher, self.last = catcher, Path(last)
        self._first_batch = True

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if self._first_batch:
            # The loggers' step counter: Lightning adds 1 on restart, which is one too many when the checkpoint
            # was written after fit ended (a run resumed with a larger trainer.max_steps).
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
            self._first_batch = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.catcher.install()  # Lightning's SIGTERM handler (registered by fit) would stop without a checkpoint
        self.catcher.deferring = True

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if self.catcher.signum is not None:
            trainer.should_stop = True  # Lightning finishes the step (its metrics are logged), then on_train_end

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.catcher.signum is not None and trainer.state.fn == "fit":
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.catcher.deferring = False  # after training: a signal stops at once (fit saves the final step)
        if self.catcher.signum is None:
            return
        step = trainer.global_step
        trainer.save_checkpoint(self.last, weights_only=False)
        log.warning("stopped by %s at step %d: checkpoint %s", Preempted(self.catcher.signum).name, step, self.last)
        raise Preempted(self.catcher.signum, step)
