""""total s" stays the job's start to exit: a job skipped on a re-run keeps the time its run recorded
(summary.json total_seconds) in the sweep table, sweep_summary.json and the comparison report."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from rich.console import Console

from decoderlab import runner
from decoderlab.compare import build_report
from decoderlab.sweep.results import JobResult, collect, print_summary, write_summary


def _job(sweep: Path, num: int, total: float | None) -> JobResult:
    d = sweep / str(num)
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": "completed", "fingerprint": "fp"}))
    (d / "config.yaml").write_text(f"seed: {num}\n")
    summary = {"val_loss": 2.0, "val_bpb": 3.0, "train_seconds": 4.0, "wall_seconds": 5.5}
    if total is not None:
        summary["total_seconds"] = total
    (d / "summary.json").write_text(json.dumps(summary))
    return JobResult(num, [f"seed={num}"], [f"seed={num}"], str(d))


def test_a_job_skipped_on_a_rerun_keeps_its_recorded_total_time(tmp_path: Path):
    sweep = tmp_path / "sweep"
    first = [collect(_job(sweep, 0, 20.4), 0, 20.47, []), collect(_job(sweep, 1, None), 0, 9.0, [])]
    assert [r.seconds for r in first] == [20.47, 9.0]  # the launcher's own timing when it ran the job
    write_summary(sweep, first)
    rerun = []
    for n in (0, 1):  # the re-run: both skipped as finished (the launcher passes 0 s: it ran nothing)
        res = collect(JobResult(n, [f"seed={n}"], [f"seed={n}"], str(sweep / str(n))), 0, 0.0, [])
        res.status = "skipped"
        rerun.append(res)
    assert [r.seconds for r in rerun] == [20.4, None]  # the run's record; unknown, never 0.0
    jobs = json.loads(write_summary(sweep, rerun).read_text())["jobs"]
    assert [j["seconds"] for j in jobs] == [20.4, 9.0]  # job 1's run predates total_seconds: the earlier timing
    console = Console(record=True, width=200)
    print_summary(str(sweep), rerun, console)
    text = console.export_text()
    assert "20.4" in text and " 0.0 " not in text
    with open(build_report([sweep], tmp_path / "out")["runs_csv"]) as f:
        totals = {Path(r["dir"]).name: r["total_seconds"] for r in csv.DictReader(f)}
    assert totals == {"0": "20.4", "1": "9.0"}  # not the summary's wall_seconds (5.5), not the summary's 0.0
    assert JobResult(2, [], [], str(sweep / "2")).seconds is None  # a job that never ran has no time, not 0.0


def test_a_single_run_counts_total_time_from_its_process_start(monkeypatch):
    class Cfg:
        mode = runner.RunMode.RUN

    monkeypatch.setattr(runner.HydraConfig, "get", staticmethod(lambda: Cfg))
    monkeypatch.setattr(runner, "_OWN_PROCESS", [])
    now = time.time()
    assert runner.run_started() >= now  # the Python API: shares its process, counts from the run's start
    runner.own_process()  # decoderlab-train's main (a single run, or one job of the decoderlab launcher)
    assert runner.run_started() == runner.process_started() < now
    Cfg.mode = runner.RunMode.MULTIRUN  # Hydra's in-process launchers: jobs share the process
    assert runner.run_started() >= now
