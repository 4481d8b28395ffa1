"""Claiming a run directory: its lock and the one rule of what a run may do there (:func:`decoderlab.rundir.verdict`),
shared by ``decoderlab-train``, ``--resume``, every sweep launcher and the Python API.

A refused run leaves the directory exactly as it was. Hydra saves ``.hydra/`` and opens ``train.log`` before the
task runs, so a single run is claimed earlier, in Hydra's ``on_run_start`` callback (:class:`ClaimRunDirectory`,
registered in conf/train.yaml after :class:`decoderlab.config.RefuseUnsafeConfig`); a sweep's jobs are claimed by the launcher before any of
them runs (:func:`decoderlab.sweep.jobs.claim_job`). The task claims again (re-entrant: the same lock), which
covers whatever reached it without either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from decoderlab import resume, rundir
from decoderlab.errors import RefusedConfig, UserError

RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK")


def other_rank() -> bool:
    """A DDP rank other than 0: it shares rank 0's directory (and its claim)."""
    return any(os.environ.get(k, "0") != "0" for k in RANK_VARS)


def claim(out: Path, fp: str, mode: str, other: str = "hydra.run.dir") -> tuple[rundir.Claim, str]:
    """Lock ``out`` and decide (:func:`decoderlab.rundir.verdict`; ``mode`` "run", "resume" or "job"): the
    claim and the verdict, or a UserError naming the directory (its lock released, nothing written); ``other``
    is what the user changes to pick another directory."""
    if other_rank():
        return rundir.Claim(out, None, None), "fresh"
    try:
        held = rundir.lock(out)
    except RuntimeError as e:
        raise UserError(f"{e}; choose another {other}") from None
    prior = rundir.read_status(out)
    try:
        verdict = rundir.verdict(out, fp, mode)
    except RuntimeError as e:
        held.release()
        raise UserError(f"{e}, or choose another {other}" if mode != "job" else str(e)) from None
    return rundir.Claim(out, held, prior), verdict


def mode(multirun: bool) -> str:
    return "resume" if resume.resuming() is not None else "job" if multirun else "run"


_CLAIMED: list[rundir.Claim] = []  # held from Hydra's callback until the process ends


def claim_before_hydra(config: Any) -> None:
    """Hydra's ``on_run_start`` (a single run, before Hydra writes anything in the run directory): lock
    ``hydra.run.dir``, refuse a directory that holds another run, and check a resume in full (config, checkpoint)
    so that a refused resume writes nothing either. Raises :class:`RefusedConfig` (one line, exit 1)."""
    from decoderlab.plan import plan_requested

    if plan_requested():  # --plan writes nothing
        return
    from omegaconf import OmegaConf


    out = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir"))))
    cfg = rundir.task_config(config)
    try:
        held, _ = claim(out, rundir.fingerprint(cfg), mode(multirun=False))
    except UserError as e:
        raise RefusedConfig(str(e)) from None
    if resume.resuming() is not None:
        from decoderlab.runner import preflight  # lazy: torch

        try:
            preflight(cfg, out)
        except UserError as e:
            held.release()
            raise RefusedConfig(str(e)) from None
    _CLAIMED.append(held)


class ClaimRunDirectory(Callback):
    """A Hydra callback (``hydra.callbacks`` in conf/train.yaml): a single run claims its directory before Hydra
    writes ``.hydra/`` or ``train.log`` there (:func:`claim_before_hydra`)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        claim_before_hydra(config)
