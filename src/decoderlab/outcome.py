"""Whether a run counts: the one rule ``decoderlab-compare``, ``decoderlab-eval`` and the sweep objective share.

Only a run whose ``status.json`` says ``completed``, with a ``summary.json`` whose val loss and bpb are finite,
is a result (:func:`judge`). Every other run is listed with what happened to it, never scored or ranked:
failed (with its error, or the launcher's reason), diverged (a non-finite val loss or bpb: failed), interrupted
(with the signal and the step its checkpoint holds), still running (a live process holds its directory's lock),
stopped while running (killed), or of unknown outcome (no ``status.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKED = ("val_loss", "val_bpb")
LAUNCHER_FAILED = ("failed", "not run")  # a sweep_summary.json job status that is a failure


@dataclass(frozen=True)
class Outcome:
    """What became of a run: ``status`` completed | failed | interrupted | running | unknown, and ``reason`` (why
    it is no result; empty for a completed run)."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """A result: completed, with finite figures."""
        return self.status == "completed"

    @property
    def label(self) -> str:
        """One line for a list of runs: ``failed: <error>``, ``interrupted by SIGTERM at step 76 of 3000``,
        ``still running (...)``, ``no readable status.json (outcome unknown)``."""
        if self.ok:
            return "completed"
        return self.reason if self.status in ("interrupted", "running", "unknown") else f"{self.status}: {self.reason}"


def summary_failure(summary: dict[str, Any]) -> str | None:
    """Why a run's ``summary.json`` does not count: a non-finite (or non-numeric) val loss or bpb; else None."""
    for key in CHECKED:
        value = summary.get(key)
        if value is None:
            continue
        try:
            x = float(value)
        except (TypeError, ValueError):
            return f"{key} is {value!r}, not a number"
        if not math.isfinite(x):
            return f"{key} is {x} (the run diverged)"
    return None


def interrupted_label(status: dict[str, Any], max_steps: Any = None) -> str:
    """``interrupted by SIGTERM at step 76 of 3000`` from an ``interrupted`` status.json (signal and step)."""
    text = "interrupted" + (f" by {status['signal']}" if status.get("signal") else "")
    step = status.get("step")
    if step is None:
        return text + " before training started"
    return text + f" at step {step}" + (f" of {max_steps}" if isinstance(max_steps, int) else "")


def judge(status: dict[str, Any] | None, summary: dict[str, Any] | None, live: bool = False,
          max_steps: Any = None, launcher: dict[str, Any] | None = None) -> Outcome:
    """The rule. ``status``/``summary``: the run's status.json and summary.json (None: missing); ``live``: a live
    process holds the run directory's lock; ``max_steps``: its trainer.max_steps (for the label of an interrupted
    run); ``launcher``: its job record in a sweep's sweep_summary.json, whose reason for a failure wins (it saw
    the exit: ``killed by SIGKILL``), except for an interrupted run, whose status.json knows its step."""
    state = (status or {}).get("status")
    if live:
        return Outcome("running", "still running (a live process holds its run directory)")
    if state == "interrupted":
        why = interrupted_label(status or {}, max_steps)
        if launcher and launcher.get("status") in LAUNCHER_FAILED and launcher.get("reason"):
            why += f" ({launcher['reason']})"
        return Outcome("interrupted", why)
    if launcher and launcher.get("status") in LAUNCHER_FAILED:
        return Outcome("failed", str(launcher.get("reason") or launcher["status"]))
    if not state:
        return Outcome("unknown", "no readable status.json (outcome unknown)")
    if state == "failed":
        return Outcome("failed", str(status.get("error") or "failed"))
    if state == "running":
        return Outcome("failed", "stopped while running (killed?) and never finished")
    if state != "completed":
        return Outcome("unknown", f"status.json says {state!r}")
    if not summary:
        return Outcome("failed", "completed status but no summary.json")
    if why := summary_failure(summary):
        return Outcome("failed", why)  # a NaN val loss is failed, never ranked first
    return Outcome("completed")


def run_outcome(run_dir: str | Path, launcher: dict[str, Any] | None = None) -> Outcome:
    """:func:`judge` of the run in ``run_dir`` from its files and its lock."""
    from decoderlab import rundir

    run_dir = Path(run_dir)
    config = rundir.read_yaml(run_dir / rundir.CONFIG_FILE)
    trainer = config.get("trainer") if isinstance(config, dict) else None
    max_steps = trainer.get("max_steps") if isinstance(trainer, dict) else None
    return judge(rundir.read_status(run_dir), rundir.read_json(run_dir / rundir.SUMMARY_FILE),
                 rundir.locked(run_dir), max_steps, launcher)


def objective(val_loss: Any) -> float:
    """The sweep objective of a run: its final val loss; NaN when missing or non-finite (Optuna: a failed trial,
    never the best one)."""
    try:
        x = float(val_loss)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan
