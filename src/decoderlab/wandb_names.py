"""How a run is named on wandb: group, job type, name and tags, for a single run and for each job of a sweep.

A job of the ``decoderlab`` launcher runs as a single run in its own process; the launcher passes its sweep context
in ``DECODERLAB_SWEEP_JOB`` (JSON: sweep_dir, num, varying overrides, variant). A job of an in-process launcher
(Hydra's basic, submitit) is read from Hydra's multirun config. Either way a sweep job gets

* ``group``    = the sweep directory (all jobs of one sweep together),
* ``job_type`` = the variant (varying overrides except the seed, with the decoderlab launcher), so the seeds of one
  variant share a job type and the dashboard can group by it,
* ``name``     = ``<job num>:<varying overrides>`` (``run_name`` wins when set),
* ``tags``     = every slot choice (``positional=rope``) plus each varying override,

and a single run is named after its command-line overrides. Keys the logger config sets itself win
(:func:`decoderlab.fit.build_loggers` uses these as defaults).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

JOB_ENV = "DECODERLAB_SWEEP_JOB"


def current_job() -> dict[str, Any] | None:
    """This process's job of a decoderlab-launcher sweep, or None."""
    raw = os.environ.get(JOB_ENV)
    if not raw:
        return None
    try:
        job = json.loads(raw)
    except ValueError:
        return None
    return job if isinstance(job, dict) else None


def _hydra_names() -> tuple[dict[str, Any], list[str]]:
    """Names from Hydra's own config: (fields, overrides) of this run or in-process multirun job."""
    try:
        hc = HydraConfig.get()
    except ValueError:  # not under Hydra (a library call)
        return {"name": "defaults"}, []
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra")]
    name = ",".join(overrides) or "defaults"
    if hc.mode == RunMode.MULTIRUN:
        return {"group": str(hc.sweep.dir), "job_type": name[:60], "name": f"{hc.job.num}:{name}"[:120]}, overrides
    return {"name": name[:120]}, []


def wandb_names(choices: dict[str, str], run_name: str | None = None) -> dict[str, Any]:
    """``group`` / ``job_type`` / ``name`` / ``tags`` of this run's wandb run (see the module docstring)."""
    job = current_job()
    if job is not None:
        varying = [str(v) for v in job.get("varying", [])]
        names: dict[str, Any] = {"group": str(job.get("sweep_dir", "")),
                                 "job_type": str(job.get("variant") or "default")[:64],
                                 "name": f"{job.get('num', '?')}:{','.join(varying) or 'default'}"[:128]}
    else:
        names, varying = _hydra_names()
    if run_name:
        names["name"] = run_name
    tags = [f"{k.split('/')[-1]}={v}" for k, v in choices.items()] + varying
    names["tags"] = list(dict.fromkeys(t[:64] for t in tags))[:50]
    return names
