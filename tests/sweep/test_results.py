"""Per-job results handed from the launcher to decoderlab-train's main through the session file, not globals."""

from __future__ import annotations

from pathlib import Path

from decoderlab.sweep.results import SESSION_ENV, JobResult, read_session, report_to_session


def _res(num: int, status: str) -> JobResult:
    return JobResult(num, [f"seed={num}"], [f"seed={num}"], f"sw/{num}", status)


def test_batches_are_merged_by_sweep_and_job_and_decide_the_exit_status(tmp_path: Path, monkeypatch):
    session = tmp_path / "session.jsonl"
    monkeypatch.setenv(SESSION_ENV, str(session))
    report_to_session("sw", [_res(0, "completed"), _res(1, "failed")])
    report_to_session("sw", [_res(1, "completed")])  # a later batch (Optuna) re-reports job 1
    merged = read_session(session)
    assert [(r.num, r.status) for r in merged.sweeps["sw"]] == [(0, "completed"), (1, "completed")]
    assert merged.exit_code == 0
    report_to_session("sw2", [_res(0, "failed")])
    assert read_session(session).exit_code == 1


def test_an_invalid_plan_point_fails_the_session(tmp_path: Path, monkeypatch):
    session = tmp_path / "session.jsonl"
    monkeypatch.setenv(SESSION_ENV, str(session))
    report_to_session(None, plan_errors=["job 2: invalid configuration"])
    result = read_session(session)
    assert result.plan_errors == ["job 2: invalid configuration"] and result.exit_code == 1 and not result.sweeps


def test_without_a_session_file_nothing_is_written(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(SESSION_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    report_to_session("sw", [_res(0, "failed")])
    assert list(tmp_path.iterdir()) == [] and read_session(tmp_path / "missing.jsonl").exit_code == 0
