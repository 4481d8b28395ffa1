"""``decoderlab-train --resume RUN_DIR``: rebuild a run from its own record and continue it in place.

The run is recomposed from ``RUN_DIR/.hydra/overrides.yaml`` (the overrides it was started with) plus the overrides
given now, which may change only keys that cannot change what is trained (:data:`RESUMABLE`). The composed config
is then compared with ``RUN_DIR/config.yaml`` key by key: any other difference (a default changed since, a corpus,
seed, batch size, optimizer or model key) is an error naming each key. Training continues from the newest intact
checkpoint; metrics.csv keeps its rows up to that step and appends, train.log appends, and the wandb logger
continues the same run (its id is kept in ``RUN_DIR/wandb_id``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from decoderlab import rundir
from decoderlab.errors import ConfigError, UserError
from decoderlab.overrides import override_key

log = logging.getLogger("decoderlab")
RESUME_ENV = "DECODERLAB_RESUME"
WANDB_ID_FILE = "wandb_id"
METRICS_FILE = "metrics.csv"
# Keys a resume may change: how long, how often to log/validate/checkpoint, how it looks, the final sample.
RESUMABLE = ("trainer.max_steps", "trainer.val_check_interval", "trainer.log_every_n_steps",
             "trainer.ckpt_every_n_steps", "trainer.val_sample_windows", "trainer.enable_progress_bar",
             "trainer.ckpt_path", "threads", "sample.")


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


def resuming() -> Path | None:
    """The run directory being resumed (set by ``--resume``), or None."""
    value = os.environ.get(RESUME_ENV)
    return Path(value) if value else None


def resume_args(run_dir: str, args: list[str]) -> list[str]:
    """The Hydra arguments that recompose ``run_dir``'s run with ``args`` (allowed keys only) on top."""
    run = Path(run_dir).expanduser().resolve()
    recorded = run / ".hydra" / "overrides.yaml"
    if not recorded.is_file() and (run / rundir.CONFIG_FILE).is_file():
        raise UserError(f"--resume {run_dir}: the run has no .hydra/overrides.yaml to recompose it from (a config "
                        f"built or edited in Python, not by decoderlab.compose); start a new run from its "
                        f"checkpoint instead: trainer.ckpt_path={rundir.last_checkpoint(run)}")
    if not recorded.is_file() or not ((run / rundir.CONFIG_FILE).is_file() or untrained(run)):
        raise UserError(f"--resume {run_dir}: not a run directory (no {rundir.CONFIG_FILE} or .hydra/overrides.yaml)")
    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise UserError(f"--resume takes a run directory and overrides only, not {' '.join(flags)}")
    new = [a for a in args if not override_key(a).startswith("hydra")]
    bad = [override_key(a) for a in new if "/" in override_key(a) or not resumable(override_key(a))]
    if bad:
        raise ConfigError(f"--resume {run_dir}: cannot change {', '.join(bad)} (a resumed run may change only "
                          f"{', '.join(k.rstrip('.') for k in RESUMABLE if k != 'trainer.ckpt_path')})")
    given = {override_key(a) for a in new}
    old = [str(o) for o in OmegaConf.load(recorded) if override_key(str(o)) not in given]
    os.environ[RESUME_ENV] = str(run)
    return [*old, *new, f"hydra.run.dir={run}"]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def check_same_run(run_dir: Path, new_yaml: str) -> None:
    """Raise naming every key whose value differs from ``run_dir/config.yaml`` and may not change on resume."""
    old = _flat(OmegaConf.to_container(OmegaConf.load(run_dir / rundir.CONFIG_FILE)))
    new = _flat(OmegaConf.to_container(OmegaConf.create(new_yaml)))
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>")
                  and not resumable(k))
    if diff:
        what = "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in diff)
        raise ConfigError(f"--resume {run_dir}: the run would train differently than the one it resumes ({what}); "
                          f"start a new run instead (trainer.ckpt_path=... or init_from=...)")


def untrained(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run interrupted before training started (no step, no checkpoint, maybe no
    config.yaml yet): its resume starts at step 0."""
    status = rundir.read_status(run_dir) or {}
    return status.get("status") == "interrupted" and status.get("step") is None


def resume_point(run_dir: Path, config_text: str) -> Path | None:
    """Check that ``config_text`` (the recomposed run) trains as the run in ``run_dir`` does, and return the newest
    intact checkpoint to continue from (corrupt ones skipped with a warning); None for a run interrupted before
    training started, which starts at step 0. Raises naming the problem; nothing is written."""
    from decoderlab.checkpoint import newest_intact_checkpoint  # lazy: torch

    if (run_dir / rundir.CONFIG_FILE).is_file():
        check_same_run(run_dir, config_text)
    ckpt = newest_intact_checkpoint(run_dir)
    if ckpt is None and not untrained(run_dir):
        raise UserError(f"--resume {run_dir}: no intact checkpoint in {rundir.checkpoint_dir(run_dir)}")
    return ckpt


def kept_metrics(run_dir: Path, step: int) -> tuple[list[str], str] | None:
    """metrics.csv's header and its rows logged before ``step`` (the rows a resume from ``step`` logs again are
    dropped), or None without a metrics file."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step") and int(float(r["step"])) < step]
        header = list(reader.fieldnames or [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return header, buf.getvalue()


def restore_metrics(loggers: list[Any], run_dir: Path, kept: tuple[list[str], str] | None) -> None:
    """Put the kept rows back under Lightning's CSV logger, which deletes metrics.csv when it starts; it appends."""
    if kept is None:
        return
    for lg in loggers:
        if type(lg).__name__ == "CSVLogger" and Path(lg.log_dir).resolve() == run_dir.resolve():
            writer = lg.experiment  # creating it removes the old file
            rundir.atomic_write(Path(writer.metrics_file_path), kept[1])
            writer.metrics_keys = sorted(kept[0])


def wandb_id(run_dir: Path) -> str:
    """This run's wandb id: created once and kept in the run directory, so a resume continues the same run."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)
    rundir.atomic_write(path, run_id)
    return run_id
