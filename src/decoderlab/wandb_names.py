"""How a run is named on wandb: group, job type, name and tags, for a single run and for each job of a sweep.

Every launcher gives the same names, from the sweep's *axes* (:func:`decoderlab.overrides.sweep_axes`: the keys its
command line or its sweeper's search space varies). ``decoderlab-train -m`` records its command-line overrides in
``DECODERLAB_SWEEP_OVERRIDES`` (every job inherits it, in process or in a child); a job of the ``decoderlab``
launcher gets its context in ``DECODERLAB_SWEEP_JOB`` (JSON: sweep_dir, num, overrides, axes); a job of an
in-process launcher (Hydra's basic, submitit) reads the rest from Hydra's multirun config. A sweep job gets

* ``group``    = the sweep directory (all jobs of one sweep together),
* ``job_type`` = its values of the enumerated axes (``model/positional=rope``), never the seed or a constant, so
  the seeds of one variant share a job type; keys a searcher samples are named, not valued
  (``search: optim.lr``), so all Optuna trials share one,
* ``name``     = ``<job num>:<its values of every axis>`` (``run_name`` wins when set),
* ``tags``     = every slot choice (``positional=rope``), its enumerated axis values and ``search:<key>``,

and a single run is named after its command-line overrides. Keys the logger config sets itself win
(:func:`decoderlab.fit.build_loggers` uses these as defaults).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from decoderlab.overrides import SEARCH, VARY, override_key, sweep_axes

JOB_ENV = "DECODERLAB_SWEEP_JOB"
OVERRIDES_ENV = "DECODERLAB_SWEEP_OVERRIDES"


def _env_json(name: str) -> Any:
    try:
        return json.loads(os.environ.get(name) or "null")
    except ValueError:
        return None


def current_job() -> dict[str, Any] | None:
    """This process's job of a decoderlab-launcher sweep, or None."""
    job = _env_json(JOB_ENV)
    return job if isinstance(job, dict) else None


def searching(sweeper_target: str) -> bool:
    """Whether a sweeper samples its points (Optuna, Nevergrad, Ax) rather than enumerating them (Hydra's basic)."""
    return bool(sweeper_target) and not sweeper_target.endswith(("BasicSweeper", "DecoderlabSweeper"))


def axes_of(hydra_cfg: Any) -> dict[str, str]:
    """A sweep's axes from its Hydra config and the command line ``decoderlab-train -m`` recorded."""
    argv = _env_json(OVERRIDES_ENV)
    params = OmegaConf.select(hydra_cfg, "sweeper.params") or {}
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "")
    return sweep_axes([str(a) for a in argv] if isinstance(argv, list) else [], params, searching(target))


def job_type(overrides: Sequence[str], axes: dict[str, str]) -> str:
    """A sweep job's job type: ``k1=v1,k2=v2`` over its enumerated axes, ``search: k`` for sampled ones."""
    parts = ",".join(o for o in overrides if axes.get(override_key(o)) == VARY)
    searched = ",".join(k for k, kind in axes.items() if kind == SEARCH)
    label = "; ".join(p for p in (parts, f"search: {searched}" if searched else "") if p)
    return (label or "default")[:64]


def _in_process_job() -> dict[str, Any] | None:
    """This job of an in-process launcher (basic, submitit) from Hydra's multirun config, or None."""
    try:
        hc = HydraConfig.get()
    except ValueError:  # not under Hydra (a library call)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra")]
    return {"sweep_dir": str(hc.sweep.dir), "num": hc.job.num, "overrides": overrides, "axes": axes_of(hc)}


def _single_run_name() -> str:
    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra")]
    except ValueError:
        overrides = []
    return (",".join(overrides) or "defaults")[:120]


def wandb_names(choices: dict[str, str], run_name: str | None = None) -> dict[str, Any]:
    """``group`` / ``job_type`` / ``name`` / ``tags`` of this run's wandb run (see the module docstring)."""
    job = current_job() or _in_process_job()
    tags = [f"{k.split('/')[-1]}={v}" for k, v in choices.items()]
    if job is None:
        names: dict[str, Any] = {"name": _single_run_name()}
    else:
        overrides, axes = [str(o) for o in job.get("overrides", [])], dict(job.get("axes") or {})
        on_axes = [o for o in overrides if override_key(o) in axes]
        names = {"group": str(job.get("sweep_dir", "")), "job_type": job_type(overrides, axes),
                 "name": f"{job.get('num', '?')}:{','.join(on_axes) or 'default'}"[:128]}
        tags += [o for o in on_axes if axes[override_key(o)] == VARY]
        tags += [f"search:{k}" for k, kind in axes.items() if kind == SEARCH]
    if run_name:
        names["name"] = run_name
    names["tags"] = list(dict.fromkeys(t[:64] for t in tags))[:50]
    return names
