"""Sweep jobs: a job's task config, and setting an earlier attempt aside before a job runs again.

A job is *finished* by the one rule of :func:`decoderlab.rundir.is_finished` (``status.json`` says
``"completed"`` with the fingerprint of the same resolved config, ``hydra`` node left out): re-running a sweep into
the same ``hydra.sweep.dir`` skips it. A job whose config changed, or that failed or was killed, runs again; its
previous files are moved to ``<sweep dir>/.attempts/`` first, so nothing is lost and a rerun starts from a clean
directory.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, open_dict, read_write


def task_config(sweep_cfg: DictConfig) -> DictConfig:
    """A job's task config: its composed config without the ``hydra`` node (as Hydra's ``run_job`` does)."""
    cfg = copy.deepcopy(sweep_cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
