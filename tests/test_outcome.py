"""Whether a run counts (decoderlab.outcome): the sweep objective and the failure reason of a summary."""

from __future__ import annotations

import math

import pytest

from decoderlab.outcome import objective, run_failure, summary_failure


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None, "nan", "oops"])
def test_the_objective_of_a_diverged_or_empty_run_is_nan(value):
    """NaN: Optuna marks the trial failed (never the best); a float, so Hydra's sweepers never choke on None."""
    assert math.isnan(objective(value))


def test_the_objective_of_a_finished_run_is_its_val_loss():
    assert objective(1.25) == 1.25 and objective(0) == 0.0


def test_a_summary_with_a_non_finite_figure_is_failed_with_the_reason():
    assert summary_failure({"val_loss": 2.0, "val_bpb": 1.5}) is None
    assert summary_failure({"val_loss": 2.0, "val_bpb": math.nan}) == "val_bpb is nan (the run diverged)"
    assert "not a number" in summary_failure({"val_loss": "n/a"})
    assert run_failure({"status": "failed", "error": "no space left"}, {"val_loss": 1.0}) == "no space left"
    assert run_failure({"status": "completed"}, {"val_loss": math.inf}) == "val_loss is inf (the run diverged)"


def test_task_returns_the_objective(monkeypatch, tmp_path):
    """train.task hands a NaN val loss to the sweeper as NaN, explicitly through objective()."""
    from decoderlab import train

    monkeypatch.setattr(train, "plan_requested", lambda: False)
    monkeypatch.setattr(train, "run_dir", lambda: tmp_path)
    monkeypatch.setattr(train, "_multirun", lambda: False)
    monkeypatch.setattr(train, "run", lambda cfg, out, fp, catcher: math.inf)
    monkeypatch.setattr(train.rundir, "fingerprint", lambda cfg: "fp")
    assert math.isnan(train.task(None))
    monkeypatch.setattr(train, "run", lambda cfg, out, fp, catcher: 1.5)
    assert train.task(None) == 1.5
