"""Whether a run counts (decoderlab.outcome): the sweep objective and the failure reason of a summary."""

from __future__ import annotations

import math

import pytest

from decoderlab.outcome import objective, summary_failure


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
    assert summary_failure({"val_loss": math.inf}) == "val_loss is inf (the run diverged)"


def test_task_returns_the_objective(monkeypatch, tmp_path):
    """train.task hands a NaN val loss to the sweeper as NaN, explicitly through objective()."""
    from decoderlab import train

    monkeypatch.setattr(train, "plan_requested", lambda: False)
    monkeypatch.setattr(train, "run_dir", lambda: tmp_path)
    monkeypatch.setattr(train, "_multirun", lambda: False)
    monkeypatch.setattr(train, "run", lambda cfg, out, fp, catcher, claim=None: math.inf)
    monkeypatch.setattr(train.rundir, "fingerprint", lambda cfg: "fp")
    assert math.isnan(train.task(None))
    monkeypatch.setattr(train, "run", lambda cfg, out, fp, catcher, claim=None: 1.5)
    assert train.task(None) == 1.5


@pytest.mark.parametrize("status,summary,live,launcher,expected", [
    ({"status": "completed"}, {"val_loss": 1.0}, False, None, ("completed", "completed")),
    ({"status": "completed"}, {}, False, None, ("failed", "failed: completed status but no summary.json")),
    ({"status": "completed"}, {"val_bpb": math.nan}, False, None, ("failed", "failed: val_bpb is nan (the run diverged)")),
    ({"status": "failed", "error": "boom"}, {}, False, None, ("failed", "failed: boom")),
    ({"status": "running"}, {}, False, None, ("failed", "failed: stopped while running (killed?) and never finished")),
    ({"status": "running"}, {}, True, None, ("running", "still running (a live process holds its run directory)")),
    (None, None, False, None, ("unknown", "no readable status.json (outcome unknown)")),
    (None, None, True, None, ("running", "still running (a live process holds its run directory)")),
    ({"status": "interrupted", "signal": "SIGTERM", "step": 76}, {}, False, None,
     ("interrupted", "interrupted by SIGTERM at step 76")),
    ({"status": "interrupted", "signal": "SIGUSR1", "step": None}, {}, False, None,
     ("interrupted", "interrupted by SIGUSR1 before training started")),
    ({"status": "completed"}, {"val_loss": 1.0}, False, {"status": "failed", "reason": "killed by SIGKILL"},
     ("failed", "failed: killed by SIGKILL")),
    ({"status": "completed"}, {"val_loss": 1.0}, False, {"status": "skipped", "reason": "finished earlier"},
     ("completed", "completed")),
])
def test_one_rule_says_whether_a_run_is_a_result_and_what_became_of_it(status, summary, live, launcher, expected):
    from decoderlab.outcome import judge

    out = judge(status, summary, live=live, launcher=launcher)
    assert (out.status, out.label) == expected
    assert out.ok is (expected[0] == "completed")


def test_an_interrupted_run_says_its_signal_and_step_of_its_max_steps(tmp_path):
    import json

    from decoderlab.outcome import run_outcome

    (tmp_path / "status.json").write_text(json.dumps({"status": "interrupted", "signal": "SIGTERM", "step": 76}))
    (tmp_path / "config.yaml").write_text("trainer:\n  max_steps: 3000\n")
    out = run_outcome(tmp_path, {"status": "failed", "reason": "exit 143 (128+SIGTERM)"})
    assert not out.ok and out.label == "interrupted by SIGTERM at step 76 of 3000 (exit 143 (128+SIGTERM))"


def test_a_run_whose_lock_is_held_is_still_running_and_a_killed_one_is_failed(tmp_path):
    import json

    from decoderlab import rundir
    from decoderlab.outcome import run_outcome

    (tmp_path / "status.json").write_text(json.dumps({"status": "running"}))
    held = rundir.lock(tmp_path)  # as the live run holds it (another open file: flock sees a conflict)
    try:
        assert rundir.locked(tmp_path)
        assert run_outcome(tmp_path).label == "still running (a live process holds its run directory)"
        assert held.is_locked  # the probe did not take it from its holder
    finally:
        held.release()
    assert not rundir.locked(tmp_path)  # released, as the OS does for a killed run
    assert run_outcome(tmp_path).label == "failed: stopped while running (killed?) and never finished"
    assert not rundir.locked(tmp_path / "no-such-run") and not (tmp_path / "no-such-run").exists()
