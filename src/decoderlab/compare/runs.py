"""Read local run directories: config, overrides, status, summary and the validation curve.

A run directory is one holding ``status.json``, ``config.yaml`` or ``.hydra/overrides.yaml`` (what
``decoderlab-train`` writes). A sweep directory is searched for run directories (hidden folders such as
``.attempts`` left out); its ``sweep_summary.json`` adds the launcher's reason for each failed job, and the jobs
that never got a directory of their own (an invalid configuration).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decoderlab import rundir
from decoderlab.errors import UserError
from decoderlab.outcome import Outcome, judge

MARKERS = ("status.json", "config.yaml", ".hydra/overrides.yaml")
SWEEP_SUMMARY = "sweep_summary.json"
# Keys that never make two runs different experiments.
BOOKKEEPING = ("logger.", "hydra", "run_name", "project", "threads", "data.cache_dir", "trainer.ckpt_path",
               "trainer.enable_progress_bar", "sample.", "choice/logger")


@dataclass
class Curve:
    step: list[float] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training time at each point (see load_curve)
    train_step: list[float] = field(default_factory=list)  # every logged training loss (raw; smoothed when drawn)
    train_loss: list[float] = field(default_factory=list)


@dataclass
class Run:
    dir: Path
    status: str  # completed | failed | interrupted | running (live) | unknown: decoderlab.outcome.judge
    reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # flat dotted keys + choice/<group>
    overrides: list[str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    curve: Curve = field(default_factory=Curve)
    launcher_seconds: float | None = None  # the job's wall time from start to exit, as the sweep table shows it

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def label(self) -> str:
        """What became of the run, in one line (``interrupted by SIGTERM at step 76 of 3000``)."""
        return Outcome(self.status, self.reason).label

    def metric(self, name: str) -> float | None:
        """A figure of the run summary (val_loss, val_bpb, train_loss, tokens_per_s, train_seconds,
        params.<kind>) or ``total_seconds``: the job's start to exit as the launcher timed it, else as the run
        recorded it (summary.json ``total_seconds``); never the fit's wall time, which leaves start-up out."""
        if name == "total_seconds" and self.launcher_seconds is not None:
            return self.launcher_seconds
        node: Any = self.summary
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return float(node) if isinstance(node, (int, float)) and math.isfinite(node) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(node) if isinstance(node, list) else node
    return out


def is_run_dir(path: Path) -> bool:
    return any((path / m).is_file() for m in MARKERS)


def find_run_dirs(path: Path, depth: int = 4) -> list[Path]:
    """``path`` itself if it is a run directory, else the run directories below it (hidden ones skipped)."""
    if is_run_dir(path):
        return [path]
    if depth == 0 or not path.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(path.iterdir(), key=lambda p: (len(p.name), p.name)):
        if child.is_dir() and not child.name.startswith((".", "_")) and child.name not in ("wandb", "checkpoints"):
            found += find_run_dirs(child, depth - 1)
    return found


def load_curve(run_dir: Path, summary: dict[str, Any]) -> Curve:
    """Validation points of ``metrics.csv``. Time: a ``time/*`` column when logged, else the run's training
    time spread evenly over its steps (steps have fixed shapes, so time is close to linear in step)."""
    curve = Curve()
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return curve
    with open(path, newline="") as f:
        every = list(csv.DictReader(f))
    for r in every:
        if r.get("train/loss") not in (None, ""):
            curve.train_step.append(float(r.get("step") or 0))
            curve.train_loss.append(float(r["train/loss"]))
    rows = [r for r in every if r.get("val/bpb") not in (None, "")]
    time_col = next((c for c in (rows[0].keys() if rows else []) if c.startswith("time/")), None)
    steps, secs = summary.get("steps"), summary.get("train_seconds")
    for r in rows:
        step = float(r.get("step") or 0)
        curve.step.append(step)
        curve.val_bpb.append(float(r["val/bpb"]))
        curve.val_loss.append(float(r.get("val/loss") or "nan"))
        if time_col and r.get(time_col):
            curve.seconds.append(float(r[time_col]))
        elif steps and secs:
            curve.seconds.append(step / float(steps) * float(secs))
    if len(curve.seconds) != len(curve.step):
        curve.seconds = []
    return curve


def choices_of(run_dir: Path, summary: dict[str, Any]) -> dict[str, str]:
    choices = summary.get("choices")
    if not isinstance(choices, dict):
        hydra = _read_yaml(run_dir / ".hydra" / "hydra.yaml") or {}
        choices = (((hydra.get("hydra") or {}).get("runtime") or {}).get("choices")) or {}
    return {f"choice/{k}": str(v) for k, v in choices.items() if not str(k).startswith("hydra") and v is not None}


def load_run(run_dir: Path, launcher: dict[str, Any] | None = None) -> Run:
    """Everything the report needs from one run directory (``launcher``: its sweep_summary.json entry); whether
    it counts is :func:`decoderlab.outcome.judge`'s rule, the one decoderlab-eval follows."""
    status = _read_json(run_dir / "status.json")
    summary = _read_json(run_dir / "summary.json")
    cfg = _read_yaml(run_dir / "config.yaml")
    if cfg is None:
        cfg = _read_yaml(run_dir / ".hydra" / "config.yaml")
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    cfg = cfg if isinstance(cfg, dict) else {}
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    outcome = judge(status, summary, rundir.locked(run_dir),
                    trainer.get("max_steps"), launcher)
    run = Run(run_dir, outcome.status, outcome.reason, config=flatten(cfg),
              overrides=[str(o) for o in overrides] if isinstance(overrides, list) else None, summary=summary)
    run.config.update(choices_of(run_dir, summary))
    run.curve = load_curve(run_dir, summary)
    if launcher and isinstance(launcher.get("seconds"), (int, float)) and launcher["seconds"] > 0:
        run.launcher_seconds = float(launcher["seconds"])
    return run


def _job_dir(sweep: Path, job: dict[str, Any]) -> str:
    """A launcher record's job directory, found inside ``sweep`` even when the sweep was moved or copied."""
    d = Path(str(job.get("dir", "")))
    return str((d if d.is_dir() or not (sweep / d.name).is_dir() else sweep / d.name).resolve())


def load(paths: list[Path]) -> list[Run]:
    """Runs under ``paths`` (sweep or run directories), failed ones included; a clear error if none."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for p in paths:
        if not p.exists():
            raise UserError(f"no such directory: {p}")
        launcher = {_job_dir(p, j): j for j in _read_json(p / SWEEP_SUMMARY).get("jobs", [])}
        for d in find_run_dirs(p):
            if d.resolve() not in seen:
                seen.add(d.resolve())
                runs.append(load_run(d, launcher.get(str(d.resolve()))))
        for key, job in launcher.items():  # jobs that never got a run directory (invalid configuration)
            if Path(key) not in seen and not is_run_dir(Path(key)):
                seen.add(Path(key))
                runs.append(Run(Path(key), "failed", str(job.get("reason", "")),
                                overrides=[str(o) for o in job.get("overrides", [])]))
    if not runs:
        raise UserError(f"no run directories under {', '.join(map(str, paths))} (looked for {', '.join(MARKERS)})")
    return runs
