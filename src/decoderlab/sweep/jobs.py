"""Sweep jobs: what varies between them, their config fingerprint, and whether one already finished.

A job is *finished* when its directory's ``status.json`` says ``"completed"`` and records the fingerprint of the
same resolved config (``hydra`` node left out): re-running a sweep into the same ``hydra.sweep.dir`` skips it.
A job whose config changed, or that failed or was killed, runs again; its previous files are moved to
``<sweep dir>/.attempts/`` first, so nothing is lost and a rerun starts from a clean directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

SEED_KEYS = ("seed",)


def task_config(sweep_cfg: DictConfig) -> DictConfig:
    """A job's task config: its composed config without the ``hydra`` node (as Hydra's ``run_job`` does)."""
    cfg = copy.deepcopy(sweep_cfg)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def fingerprint(cfg: DictConfig) -> str:
    """sha256 of a task config (no ``hydra`` node), resolved, as sorted YAML."""
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    except Exception:  # noqa: BLE001 - a broken interpolation is reported by validation, not here
        text = OmegaConf.to_yaml(cfg, resolve=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (e.g. half-written by a kill)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(job_dir: Path, fp: str) -> bool:
    """Whether ``job_dir`` holds a completed run of the config with fingerprint ``fp``."""
    status = read_json(Path(job_dir) / "status.json")
    return bool(status) and status.get("status") == "completed" and status.get("fingerprint") == fp


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


def override_key(override: str) -> str:
    """The config key of a Hydra override string: ``+model.x=1`` -> ``model.x``; ``~a.b`` -> ``a.b``."""
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def override_value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def varying(jobs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per job, its overrides whose key takes more than one value across ``jobs`` (absent counts as a value)."""
    parsed = [{override_key(o): o for o in job} for job in jobs]
    keys = {k for p in parsed for k in p}
    vary = {k for k in keys if len({override_value(p[k]) if k in p else None for p in parsed}) > 1}
    return [[o for k, o in p.items() if k in vary] for p in parsed]


def variant_label(overrides: Sequence[str], exclude: Sequence[str] = SEED_KEYS) -> str:
    """A variant's name: its varying overrides except the seed (``model/positional=rope``)."""
    parts = [o for o in overrides if override_key(o) not in exclude]
    return ",".join(parts) or "default"


def quote(value: str) -> str:
    """A string as a quoted Hydra override value (paths with spaces, '=' or ',' stay one value)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
