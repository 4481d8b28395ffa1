"""Sweep jobs: a job's task config, and claiming a job's directory before the job runs (:func:`claim_job`).

A job is *finished* by the one rule of :func:`decoderlab.rundir.is_finished` (``status.json`` says
``"completed"`` with the fingerprint of the same resolved config, ``hydra`` node left out): re-running a sweep into
the same ``hydra.sweep.dir`` skips it, and continues a job ``interrupted`` with the same config from its
checkpoint. A job that failed or was killed runs again; its previous files are moved to ``<sweep dir>/.attempts/``
first, so nothing is lost and a rerun starts from a clean directory. A job whose directory holds a completed or
interrupted run of another config is refused (it fails, naming the directory), never overwritten.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from decoderlab import rundir

log = logging.getLogger("decoderlab.sweep")


def set_aside(job_dir: Path, sweep_dir: Path) -> Path | None:
    """Move an earlier attempt's files out of ``job_dir`` into ``<sweep>/.attempts/``; returns where."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir() or not any(job_dir.iterdir()):
        return None
    dest = Path(sweep_dir) / ".attempts" / f"{job_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('~')[0]}~{n}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(job_dir), str(dest))
    return dest


def claim_job(job_dir: Path, fp: str, sweep_dir: Path, skip_finished: bool = True,
              hold: bool = False) -> tuple[str, Any]:
    """Claim a job's directory before the job runs (:func:`decoderlab.rundir.verdict`, mode "job"): "fresh" or
    "rerun" (an earlier attempt, or stray files, set aside first), "resume" or "skip"; raises ``RuntimeError``
    naming the directory when another live run holds it or it holds a run of another config. With ``hold`` the
    lock is returned held (the job runs in this process), else released (None)."""
    held = rundir.lock(job_dir)
    try:
        verdict = rundir.verdict(job_dir, fp, "job", skip_finished)
    except RuntimeError:
        held.release()
        raise
    if verdict in ("fresh", "rerun") and any(p.name != rundir.LOCK_FILE for p in Path(job_dir).iterdir()):
        held.release()
        moved = set_aside(job_dir, sweep_dir)
        log.info("job directory %s: earlier attempt moved to %s", job_dir, moved)
        held = rundir.lock(job_dir) if hold else None
        return verdict, held
    if not hold:
        held.release()
        held = None
    return verdict, held
