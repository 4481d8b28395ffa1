"""Whether a run counts: a failed or diverged run (non-finite val loss or bpb) is failed, never best; the sweep
objective.

``decoderlab-compare``, ``decoderlab-eval`` and the value a run returns to Hydra's sweepers all ask here.
"""

from __future__ import annotations

import math
from typing import Any

CHECKED = ("val_loss", "val_bpb")


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


def run_failure(status: dict[str, Any] | None, summary: dict[str, Any]) -> str | None:
    """Why a run is failed: its status says so (with its error), or its summary has a non-finite figure."""
    if status and status.get("status") == "failed":
        return str(status.get("error") or "failed")
    return summary_failure(summary)


def objective(val_loss: Any) -> float:
    """The sweep objective of a run: its final val loss; NaN when missing or non-finite (Optuna: a failed trial,
    never the best one)."""
    try:
        x = float(val_loss)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan
