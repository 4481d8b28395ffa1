"""Inside one job of a sweep: name its wandb run after the sweep and after what varies.

The launcher passes ``DECODERLAB_SWEEP_JOB`` (JSON: sweep_dir, num, varying overrides, variant). With a wandb
logger configured, the run gets

* ``group``    = the sweep directory (all jobs of one sweep together),
* ``job_type`` = the variant: the varying overrides except the seed (``model/positional=rope``), so the seeds of
  one variant share a job type and the dashboard can group by it,
* ``name``     = ``<job num>:<varying overrides, seed included>``,
* ``tags``     = every slot choice (``positional=rope``, as for a single run) plus each varying override,

unless the config sets them itself (``logger.wandb.group=...``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from omegaconf import DictConfig, open_dict

from decoderlab.sweep.launch import JOB_ENV


def current_job() -> dict[str, Any] | None:
    """This process's sweep job, or None for a plain run."""
    raw = os.environ.get(JOB_ENV)
    if not raw:
        return None
    try:
        job = json.loads(raw)
    except ValueError:
        return None
    return job if isinstance(job, dict) else None


def wandb_fields(job: dict[str, Any], choices: dict[str, str]) -> dict[str, Any]:
    varying = [str(v) for v in job.get("varying", [])]
    name = f"{job.get('num', '?')}:{','.join(varying) or 'default'}"
    tags = [f"{k.split('/')[-1]}={v}" for k, v in choices.items()] + varying
    return {"group": str(job.get("sweep_dir", "")), "job_type": str(job.get("variant") or "default")[:64],
            "name": name[:128], "tags": list(dict.fromkeys(t[:64] for t in tags))[:50]}


def tag_wandb(cfg: DictConfig, choices: dict[str, str], job: dict[str, Any] | None = None) -> None:
    """Set group / job_type / name / tags of ``cfg.logger.wandb`` from the sweep job (keys already set win)."""
    job = job if job is not None else current_job()
    wandb = cfg.get("logger", {}).get("wandb") if isinstance(cfg.get("logger"), DictConfig) else None
    if job is None or not isinstance(wandb, DictConfig):
        return
    with open_dict(wandb):
        for key, value in wandb_fields(job, choices).items():
            if wandb.get(key) is None:
                wandb[key] = value
