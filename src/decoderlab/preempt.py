"""Preemption: SIGTERM, SIGINT and SIGUSR1 (SLURM's warning signal) end a run with a checkpoint at its current step.

Before training starts a signal ends the run at once (``Preempted`` is raised where the process is); while the
training loop runs, the handler only records the signal and :class:`decoderlab.callbacks.PreemptCheckpoint` saves
a checkpoint at the next step boundary, then raises :class:`Preempted`. ``decoderlab-train`` writes status
``interrupted`` with the step and exits ``128 + signal`` (143 for SIGTERM, 130 for SIGINT).
Lightning-free: the runner installs the handlers before anything slow happens.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preempted(BaseException):  # noqa: N818 - not an error: nothing that catches Exception may swallow it
    """The run was stopped by a signal; ``step`` is the step its last checkpoint holds (None: no checkpoint)."""

    def __init__(self, signum: int, step: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step = signum, step

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalCatcher:
    """Installs the preemption handlers; ``deferring`` (set by the training loop's callback) turns an immediate
    stop into "stop at the next step boundary"."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self._previous: dict[int, Any] = {}

    def install(self) -> SignalCatcher:
        """(Re)install the handlers, e.g. after Lightning put its own SIGTERM handler in place."""
        for sig in SIGNALS:
            prev = signal.signal(sig, self._handle)
            if prev is not self._handle and sig not in self._previous:
                self._previous[sig] = prev
        return self

    def forward(self, signum: int) -> None:
        """Hand the signal to the handler that was installed before ours (submitit's SIGUSR1 requeue), if any."""
        prev = self._previous.get(signum)
        if callable(prev) and prev is not signal.default_int_handler:
            prev(signum, None)

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if not self.deferring:
            raise Preempted(self.signum)
