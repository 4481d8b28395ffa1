"""``decoderlab-train``: the Hydra app that composes a run, trains it with Lightning and summarizes it.

    decoderlab-train                                   # default: nanoGPT's CPU recipe on Shakespeare
    decoderlab-train model/positional=rope model.positional.base=500000 trainer.max_steps=500
    decoderlab-train -m model/positional=sinusoidal,rope,t5 seed=0,1,2   # each job in its own process
    decoderlab-train --plan -m model/ffn=mlp,swiglu param_budget=800000   # sizes, FLOPs, memory only
    decoderlab-train --resume outputs/2026-11-30/10-00-00-123-ab12cd trainer.max_steps=4000   # continue in place

The module is callable: ``decoderlab.train(overrides_or_config, run_dir=None)`` is :func:`decoderlab.api.train`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from decoderlab import resume, rundir
from decoderlab.api import conf_dir, normalize_overrides
from decoderlab.claim import claim
from decoderlab.claim import mode as claim_mode
from decoderlab.config import check_group_choices, check_no_secret_overrides, register_schema
from decoderlab.errors import StopWithMessage, UserError, exit_on_user_error, print_user_error
from decoderlab.outcome import objective
from decoderlab.overrides import defer_to_jobs
from decoderlab.plan import PLAN_ENV, plan_requested, plan_row, print_plan
from decoderlab.plugins import load_plugins
from decoderlab.preempt import Preempted, SignalCatcher
from decoderlab.runner import own_process, run
from decoderlab.sweep import results
from decoderlab.wandb_names import OVERRIDES_ENV

log = logging.getLogger("decoderlab")


def _prepare_process() -> None:
    """Runs before Hydra composes: plugins and schemas must be registered by then."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    load_plugins()
    register_schema()


def run_dir() -> Path:
    """This run's directory: Hydra's output directory."""
    return Path(HydraConfig.get().runtime.output_dir)


def task(cfg: Any) -> float | None:
    """The Hydra task function: one training run. Returns the sweep objective: the final val loss, NaN for a run
    that diverged or has none (:func:`decoderlab.outcome.objective`: Optuna counts NaN as a failed trial)."""
    if plan_requested():
        return _plan(cfg)
    out = run_dir()
    fp = rundir.fingerprint(cfg)
    if _multirun() and rundir.is_finished(out, fp):  # in-process launchers (basic, submitit): the one skip rule
        log.info("skipped: %s %s", out, rundir.SKIP_REASON)
        return objective((rundir.read_json(out / rundir.SUMMARY_FILE) or {}).get("val_loss"))
    catcher = SignalCatcher().install()  # from here on a signal ends the run "interrupted", never "running"
    held = None
    try:
        held = _claim(out, fp)
        return objective(run(cfg, out, fp, catcher, held))
    except Preempted as p:
        if p.step is None and resume.resuming() is not None:  # stopped while a resume started: its checkpoint's step
            p.step = _resumed_step(out)
        _status(held, "interrupted", fingerprint=fp, step=p.step, signal=p.name)
        where = f"at step {p.step} (checkpoint saved)" if p.step is not None else "before training started"
        log.warning("interrupted by %s %s; continue with: decoderlab-train --resume %s", p.name, where, out)
        catcher.forward(p.signum)  # e.g. submitit's SIGUSR1 handler requeues the job
        raise SystemExit(p.exit_code) from None
    except UserError as e:
        _status(held, "failed", error=str(e))
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
            raise
        print_user_error(e)
        sys.exit(1)
    except SystemExit as e:
        if type(e).__name__ == "SIGTERMException":  # Lightning's graceful stop on SIGTERM exits 0 otherwise
            _status(held, "failed", error="terminated by SIGTERM")
            raise SystemExit(143) from None
        _status(held, "failed", error=f"exit {e.code}")
        raise
    except BaseException as e:
        _status(held, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        catcher.restore()
        if held is not None:
            held.release()
        if _multirun():  # a job resumed in this process (basic, submitit): the next job is not a resume
            os.environ.pop(resume.RESUME_ENV, None)


def _resumed_step(out: Path) -> int | None:
    """The step of the checkpoint a resume of ``out`` continues from (None: there is none)."""
    from decoderlab.checkpoint import newest_intact_checkpoint, read_checkpoint

    ckpt = newest_intact_checkpoint(out)
    return None if ckpt is None else int(read_checkpoint(ckpt)["global_step"])


def _status(held: rundir.Claim | None, status: str, **extra: Any) -> None:
    """status.json of the run this process holds: none for a refused directory, and a run refused before it started
    in a directory holding an earlier run (a resume whose config differs) keeps that run's record."""
    if held is not None:
        held.record(status, **extra)


def _claim(out: Path, fp: str) -> rundir.Claim:
    """Lock the run directory (rank 0 only: DDP's other ranks share it) and refuse one that holds another run
    (:func:`decoderlab.rundir.verdict`); a sweep job continues an interrupted run of the same config (a requeue).
    A single run was claimed already by Hydra's callback, before Hydra wrote anything (the same lock, again)."""
    held, verdict = claim(out, fp, claim_mode(_multirun()), other="hydra.sweep.dir" if _multirun() else "hydra.run.dir")
    if verdict == "resume" and resume.resuming() is None:
        os.environ[resume.RESUME_ENV] = str(out)
    return held


def _multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _plan(cfg: Any) -> None:
    """``--plan`` of one run (or one job under an in-process launcher): sizes, FLOPs, memory; no training."""
    overrides = list(HydraConfig.get().overrides.task)
    row = plan_row(None, ",".join(overrides) or "(defaults)", cfg)
    print_plan([row])
    if row.error:
        results.report_to_session(None, plan_errors=[row.error])
    return None


def _cli_args(argv: list[str]) -> list[str]:
    """``--plan`` -> plan mode (no training, no run directory); ``--resume RUN_DIR`` -> that run's overrides;
    ``+experiment=`` -> ``experiment=``."""
    args = normalize_overrides(argv)
    for i, a in enumerate(args):
        if a == "--resume" or a.startswith("--resume="):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            if not value:
                raise UserError("--resume needs a run directory: decoderlab-train --resume RUN_DIR [key=value ...]")
            rest = args[:i] + args[i + (1 if "=" in a else 2):]
            return resume.resume_args(value, rest)
    if "--plan" in args:
        args = [a for a in args if a != "--plan"]
        os.environ[PLAN_ENV] = "1"
        for key, value in (("hydra.run.dir", "."), ("hydra.output_subdir", "null"), ("hydra/job_logging", "stdout")):
            if not any(a.lstrip("+").startswith(key + "=") for a in args):
                args.append(f"{key}={value}")
    return args


def _is_group(key: str) -> bool:
    """Whether ``key`` names a config group (``model/positional``, ``data``) rather than a config key."""
    from hydra.core.config_store import ConfigStore

    try:
        return "/" in key or (Path(conf_dir()) / key).is_dir() or bool(ConfigStore.instance().list(key))
    except OSError:
        return False


def _sweep_args(args: list[str]) -> list[str]:
    """A multirun's arguments: recorded for every job's wandb names (``OVERRIDES_ENV``, read in process and in
    child processes alike), and settings of a swept group's node deferred to each job (one invalid point is
    reported, the others run: :func:`decoderlab.overrides.defer_to_jobs`)."""
    if not any(a in ("-m", "--multirun") for a in args):
        return args
    os.environ[OVERRIDES_ENV] = json.dumps([a for a in args if "=" in a and not a.startswith(("-", "hydra"))])
    return defer_to_jobs(args, _is_group)


def _finish_sweeps(session_file: str) -> int:
    """Print the per-job table of every sweep this process ran; the exit status (1 if any job failed)."""
    session = results.read_session(session_file)
    for sweep_dir, jobs in session.sweeps.items():
        results.print_summary(sweep_dir, jobs)
    return session.exit_code


def _check_composes(args: list[str]) -> None:
    """A plain run's overrides composed once up front (~0.1 s): a misspelled key or a value of the wrong type is
    one line naming it, with the closest valid keys (:func:`decoderlab.api.compose`), not Hydra's page advising to
    add the key with ``+``. Runs with Hydra flags (``-m``, ``--cfg``, ``-cd`` ...) are left to Hydra."""
    if any(a.startswith("-") or a.lstrip("+~").startswith("hydra.mode=") for a in args):  # hydra.mode=MULTIRUN: -m
        return
    from decoderlab.api import compose

    compose(args)


def _store_checked_launchers() -> None:
    """Hydra's plugin scan first (it re-runs every plugin module), then decoderlab's checked submitit launchers over
    submitit's entries of the same names: every batch of a sweep is checked for literal secrets before submission."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.decoderlab_launcher.decoderlab_launcher import store_checked_submitit

    Plugins.instance()
    store_checked_submitit()


def main() -> None:
    """Console entry point ``decoderlab-train``."""
    own_process()  # a single run's total_seconds counts from this process's start
    with exit_on_user_error():
        sys.argv[1:] = _cli_args(sys.argv[1:])
        _prepare_process()
        _store_checked_launchers()
        check_group_choices(sys.argv[1:], Path(conf_dir()))  # after plugins: their options count
        check_no_secret_overrides(sys.argv[1:])
        _check_composes(sys.argv[1:])
        sys.argv[1:] = _sweep_args(sys.argv[1:])
    app = hydra.main(version_base=None, config_path=conf_dir(), config_name="train")(task)
    fd, session_file = tempfile.mkstemp(prefix="decoderlab-session-", suffix=".jsonl")
    os.close(fd)
    os.environ[results.SESSION_ENV] = session_file  # where the launcher reports each batch's results
    try:
        try:
            app()
        except KeyboardInterrupt:
            _finish_sweeps(session_file)
            sys.exit(130)
        except StopWithMessage as e:  # RefuseUnsafeConfig (nothing was written), or a basic-launcher job's error
            print_user_error(e)
            sys.exit(1)
        sys.exit(_finish_sweeps(session_file))
    finally:
        os.unlink(session_file)


class _CallableModule(types.ModuleType):
    """This module, callable as the API function: ``decoderlab.train(...)`` whether or not it was imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from decoderlab.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
