"""Per-job outcomes of a sweep: why each job succeeded or failed, as a rich table and ``sweep_summary.json``.

``sweep_summary.json`` (in the sweep directory) is a JSON object ``{"jobs": [...], "counts": {...}}``; each job
has ``num``, ``overrides``, ``varying``, ``dir``, ``status`` (``completed`` / ``skipped`` / ``failed`` /
``not run``), ``reason``, ``returncode``, ``seconds``, ``val_loss`` and ``val_bpb``. Batches of a sweeper that
launches several times (Optuna) are merged by job number.

The launcher runs inside Hydra, which drops what it returns; it hands each batch's results (and a plan's invalid
points) to ``decoderlab-train``'s main through the session file main names in ``DECODERLAB_SESSION_FILE``
(:func:`report_to_session` / :func:`read_session`): no module state.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from decoderlab.report import make_console
from decoderlab.rundir import read_json, read_status, write_json

SUMMARY_FILE = "sweep_summary.json"
OK_STATES = ("completed", "skipped")


@dataclass
class JobResult:
    num: int
    overrides: list[str]
    varying: list[str]
    dir: str
    status: str = "not run"
    reason: str = ""
    returncode: int | None = None
    # The job's wall time from start to exit ("total s", as decoderlab-compare's column); a job skipped on a
    # re-run keeps the figure its run recorded (summary.json total_seconds); None: unknown.
    seconds: float | None = None
    train_seconds: float | None = None  # time in training steps ("train s")
    val_loss: float | None = None
    val_bpb: float | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in OK_STATES


SESSION_ENV = "DECODERLAB_SESSION_FILE"


def describe_exit(rc: int | None) -> str:
    """``-9`` -> 'killed by SIGKILL'; ``143`` -> 'exit 143 (128+SIGTERM)'; ``1`` -> 'exit 1'."""
    if rc is None:
        return "did not start"
    if rc < 0:
        return f"killed by {_signame(-rc)}"
    if rc > 128 and _signame(rc - 128) != str(rc - 128):
        return f"exit {rc} (128+{_signame(rc - 128)})"
    return f"exit {rc}"


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)


def collect(result: JobResult, rc: int | None, seconds: float, tail: list[str]) -> JobResult:
    """Fill ``result`` from the exit code and the files the job left (status.json, summary.json). ``seconds``:
    the job's start to exit as the launcher timed it; 0 when it did not run now (skipped as finished): then the
    figure its run recorded of its own start to exit, ``total_seconds`` in summary.json (None when absent)."""
    job_dir = Path(result.dir)
    status = read_status(job_dir) or {}
    summary = read_json(job_dir / "summary.json") or {}
    recorded = summary.get("total_seconds")
    result.seconds = round(seconds, 2) if seconds > 0 else \
        float(recorded) if isinstance(recorded, (int, float)) and recorded > 0 else None
    result.returncode, result.log_tail = rc, tail[-20:]
    result.val_loss, result.val_bpb = summary.get("val_loss"), summary.get("val_bpb")
    result.train_seconds = summary.get("train_seconds")
    if rc == 0 and status.get("status") == "completed":
        result.status, result.reason = "completed", ""
        return result
    result.status = "failed"
    why = describe_exit(rc)
    err = status.get("error") if status.get("status") == "failed" else None
    if err:
        result.reason = why if err == f"exit {rc}" else f"{err}; {why}"
    elif rc == 0:
        result.reason = f"exit 0 without a completed status.json (status: {status.get('status', 'none')})"
    else:
        last = next((ln for ln in reversed(tail) if ln.strip()), "")
        result.reason = why + (f"; status.json still '{status['status']}'" if status.get("status") else "") + (
            f"; last output: {last.strip()[:200]}" if last and rc is not None and rc > 0 else "")
    return result


def write_summary(sweep_dir: Path, results: list[JobResult]) -> Path:
    """Merge ``results`` into ``<sweep_dir>/sweep_summary.json`` (by job number) and return its path."""
    path = Path(sweep_dir) / SUMMARY_FILE
    old = read_json(path) or {}
    jobs = {int(j["num"]): j for j in old.get("jobs", []) if "num" in j}
    for r in results:
        new = asdict(r)
        earlier = jobs.get(r.num, {})
        if r.status == "skipped" and new["seconds"] is None and isinstance(earlier.get("seconds"), (int, float)) \
                and earlier.get("dir") == new["dir"]:
            new["seconds"] = earlier["seconds"]  # a run from before total_seconds: the launcher's earlier timing
        jobs[r.num] = new
    ordered = [jobs[k] for k in sorted(jobs)]
    counts: dict[str, int] = {}
    for j in ordered:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    return write_json(path, {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": ordered})


def report_to_session(sweep_dir: str | Path | None, results: Sequence[JobResult] = (),
                      plan_errors: Sequence[str] = ()) -> None:
    """Append one batch's outcome to the session file of ``decoderlab-train`` (none named: nothing to do)."""
    path = os.environ.get(SESSION_ENV)
    if not path:
        return
    line = {"sweep_dir": None if sweep_dir is None else str(sweep_dir), "jobs": [asdict(r) for r in results],
            "plan_errors": list(plan_errors)}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, default=str) + "\n")


@dataclass
class Session:
    """What one ``decoderlab-train`` process launched: each sweep's job results, the invalid points of a plan."""

    sweeps: dict[str, list[JobResult]] = field(default_factory=dict)
    plan_errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 if a plan found an invalid point or a job failed, else 0."""
        failed = any(not j.ok for jobs in self.sweeps.values() for j in jobs)
        return int(bool(self.plan_errors) or failed)


def read_session(path: str | Path) -> Session:
    """The session file's batches, merged by sweep directory and job number."""
    merged: dict[str, dict[int, JobResult]] = {}
    session = Session()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return session
    for text in lines:
        batch = json.loads(text)
        session.plan_errors += batch.get("plan_errors", [])
        if batch.get("sweep_dir") and batch.get("jobs"):
            jobs = merged.setdefault(batch["sweep_dir"], {})
            jobs.update({j["num"]: JobResult(**j) for j in batch["jobs"]})
    session.sweeps = {d: [jobs[k] for k in sorted(jobs)] for d, jobs in merged.items()}
    return session


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def print_summary(sweep_dir: str, results: list[JobResult], console: Any = None) -> None:
    """The per-job table: number, variant, outcome and why, figures, time."""
    out = console or make_console()
    failed = sum(not r.ok for r in results)
    title = f"sweep {sweep_dir}: {len(results) - failed} ok, {failed} failed"
    t = Table(title=title, title_justify="left", caption=f"details: {Path(sweep_dir) / SUMMARY_FILE}",
              caption_justify="left")
    widest = min(60, max((len(",".join(r.varying)) for r in results), default=10))
    for col in ("#", "job", "status", "val loss", "val bpb", "train s", "total s", "reason"):
        t.add_column(col, overflow="fold", min_width=widest if col == "job" else None)
    style = {"completed": "green", "skipped": "cyan", "failed": "bold red", "refused": "bold red", "not run": "yellow"}
    for r in results:
        t.add_row(str(r.num), Text(",".join(r.varying) or "(no varying keys)"),
                  Text(r.status, style=style.get(r.status, "")), _fmt(r.val_loss), _fmt(r.val_bpb),
                  "-" if r.train_seconds is None else f"{r.train_seconds:.1f}",
                  "-" if r.seconds is None else f"{r.seconds:.1f}", Text(r.reason))
    out.print(t)
