"""The engine of the ``decoderlab`` Hydra launcher: every job of a sweep in its own child process.

    parent (decoderlab-train -m ...)                 child, one per job, one after another (n_jobs=1)
    compose + validate every job  ──►  skip finished ──►  python -m decoderlab.train <its overrides only>
    plan (--plan): print, launch nothing                  hydra.mode=RUN hydra.run.dir=<sweep>/<job>
    per-job table + sweep_summary.json  ◄──  exit code, status.json, summary.json, job.log

A job that raises, exits, is terminated or killed (SIGKILL included) ends only its own process: the parent records
why and goes on. The child sees a plain single run with its own overrides, so Lightning's DDP re-launch (which
re-runs ``sys.argv``) starts that job again, not the whole sweep (DESIGN §9). Failed jobs are reported by the
table, the JSON file and decoderlab-train's exit status rather than by raising, so later batches still run;
a failed job's objective is None, which Optuna records as a failed trial.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from decoderlab.config import composition_problem, safety_problems, validate
from decoderlab.errors import ConfigError, RefusedConfig
from decoderlab.overrides import override_key, quote, sweep_axes, varying
from decoderlab.plan import PLAN_ENV, PlanRow, plan_requested, plan_row, print_plan
from decoderlab.resume import RESUME_ENV
from decoderlab.rundir import SKIP_REASON, fingerprint, is_finished, task_config
from decoderlab.sweep import results as R
from decoderlab.sweep.execute import Pool, sigterm_as_interrupt
from decoderlab.sweep.jobs import claim_job
from decoderlab.wandb_names import JOB_ENV, searching

log = logging.getLogger("decoderlab.sweep")
# Parent-only Hydra overrides that must not reach a child (it is a single run in its own directory).
_PARENT_ONLY = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper", "hydra.sweep.", "hydra.mode",
                "hydra.run.dir", "hydra.job.num", "hydra.job.id")


@dataclass
class Settings:
    """``hydra.launcher.*`` of the decoderlab launcher."""

    n_jobs: int = 1
    timeout_s: float | None = None
    kill_grace_s: float = 30.0
    skip_finished: bool = True
    stream_output: bool = True

    def __post_init__(self) -> None:
        bad = [f"hydra.launcher.{k}={v} must be {rule}" for k, v, ok, rule in (
            ("n_jobs", self.n_jobs, self.n_jobs >= 1, "at least 1"),
            ("timeout_s", self.timeout_s, self.timeout_s is None or self.timeout_s > 0, "positive (or null: none)"),
            ("kill_grace_s", self.kill_grace_s, self.kill_grace_s >= 0, "0 or more"),
        ) if not ok]
        if bad:  # raised while Hydra instantiates the launcher, before multirun.yaml: one line, not Hydra's page
            raise RefusedConfig("; ".join(bad))


@dataclass
class JobSpec:
    num: int
    overrides: list[str]
    varying: list[str]
    dir: Path
    cfg: DictConfig | None = None  # task config (no hydra node)
    sweep_cfg: DictConfig | None = None
    fp: str | None = None
    error: str | None = None  # composition / validation error: the job is not launched
    resume: bool = False  # its directory holds an interrupted run of the same config: the job continues it


def axes(config: DictConfig) -> dict[str, str]:
    """The sweep's axes (:func:`decoderlab.overrides.sweep_axes`): its command-line sweep overrides and
    ``hydra.sweeper.params``."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    return sweep_axes(list(config.hydra.overrides.task), params, searching(target))


def varying_of(job_overrides: Sequence[Sequence[str]], keys: set[str]) -> list[list[str]]:
    """Per job, the overrides on a sweep axis or differing between the jobs of this batch."""
    differing = varying(job_overrides)
    return [[o for o in job if override_key(o) in keys or o in diff] for job, diff in zip(job_overrides, differing)]


def prepare(ctx: Any, config: DictConfig, job_overrides: Sequence[Sequence[str]], first: int) -> list[JobSpec]:
    """Compose and validate every job; a job that cannot be composed carries its error instead."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    labels = varying_of(job_overrides, set(axes(config)))
    saved = HydraConfig.instance().cfg
    specs = []
    try:
        for i, overrides in enumerate(job_overrides):
            spec = JobSpec(first + i, list(overrides), labels[i], sweep_dir / str(first + i))
            _compose(ctx, config, spec, sweep_dir)
            specs.append(spec)
    finally:
        HydraConfig.instance().cfg = saved
    return specs


def _compose(ctx: Any, config: DictConfig, spec: JobSpec, sweep_dir: Path) -> None:
    try:
        sweep_cfg = ctx.config_loader.load_sweep_config(config, list(spec.overrides))
        with open_dict(sweep_cfg):
            sweep_cfg.hydra.job.id = spec.num
            sweep_cfg.hydra.job.num = spec.num
        HydraConfig.instance().set_config(sweep_cfg)
        spec.dir = sweep_dir / str(OmegaConf.select(sweep_cfg, "hydra.sweep.subdir"))
        spec.sweep_cfg, spec.cfg = sweep_cfg, task_config(sweep_cfg)
        validate(spec.cfg)
        unsafe = safety_problems(sweep_cfg.hydra, targets=False, prefix="hydra")  # the job's hydra.yaml
        if unsafe:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(unsafe))
        spec.fp = fingerprint(spec.cfg)
    except Exception as e:  # noqa: BLE001 - composition, interpolation or validation: this job's problem
        msg = str(e) if type(e).__name__ == "ConfigError" else f"cannot compose: {one_line_error(e)}"
        spec.error = msg if msg.startswith("invalid configuration") else f"invalid configuration: {msg}"


def one_line_error(e: BaseException) -> str:
    """Hydra's composition error on one line (:func:`decoderlab.config.composition_problem`): ``model.positional.base:
    unknown key (not in LearnedConfig); valid keys: ...``."""
    return composition_problem(e)


def child_command(spec: JobSpec, config: DictConfig) -> list[str]:
    """``python -m decoderlab.train`` with only this job's overrides, as a single run in its own directory."""
    passthrough = [o for o in config.hydra.overrides.hydra if not override_key(o).startswith(_PARENT_ONLY)]
    config_dirs = [a for src in config.hydra.runtime.get("config_sources", []) if src.provider == "command-line"
                   for a in ("--config-dir", str(src.path))]  # --config-dir/-cd: not an override, passed as given
    return [sys.executable, "-m", "decoderlab.train", *config_dirs, *spec.overrides, *passthrough, "hydra.mode=RUN",
            f"hydra.run.dir={quote(str(spec.dir))}"]


def child_env(spec: JobSpec, config: DictConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PLAN_ENV, R.SESSION_ENV, RESUME_ENV)}  # a plain run
    if spec.resume:
        env[RESUME_ENV] = str(spec.dir)  # as --resume does: the child checks the config and continues in place
    env[JOB_ENV] = json.dumps({"sweep_dir": str(config.hydra.sweep.dir), "num": spec.num,
                               "overrides": spec.overrides, "axes": axes(config)})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def launch(ctx: Any, config: DictConfig, job_overrides: Sequence[Sequence[str]], first: int,
           settings: Settings) -> list[Any]:
    """Hydra's ``Launcher.launch``: plan, or run every job in a child process; one JobReturn per job."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    specs = prepare(ctx, config, job_overrides, first)
    if plan_requested():
        rows = [_plan_row(s, settings.skip_finished) for s in specs]
        print_plan(rows)
        errors = [f"job {r.num}: {r.error}" for r in rows if r.error]
        R.report_to_session(sweep_dir, plan_errors=errors)
        if searching(str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))):
            # A searching sweeper (Optuna) picks its next points from results: its first batch is the plan.
            log.info("plan: the sweeper samples its points; shown is its first batch")
            raise SystemExit(1 if errors else 0)
        return [_job_return(s, None) for s in specs]
    log.info("sweep %s: %d job(s), %d at a time", sweep_dir, len(specs), max(1, settings.n_jobs))
    done, todo = _triage(specs, settings, sweep_dir)
    pool = Pool(settings.n_jobs, settings.timeout_s, settings.kill_grace_s, settings.stream_output)
    work = [(_result(s), child_command(s, config), child_env(s, config)) for s in todo]
    undo = sigterm_as_interrupt()
    try:
        ran = pool.run_all(work)
    finally:
        undo()
        results = sorted(done + [w[0] for w in work], key=lambda r: r.num)
        R.write_summary(sweep_dir, results)
        R.report_to_session(sweep_dir, results)
    by_num = {r.num: r for r in ran + done}
    return [_job_return(s, by_num[s.num]) for s in specs]


def _triage(specs: list[JobSpec], settings: Settings, sweep_dir: Path) -> tuple[list[R.JobResult], list[JobSpec]]:
    """Invalid jobs fail at once, so does a job whose directory is refused (a live run, or a run of another config
    there: :func:`decoderlab.sweep.jobs.claim_job`); finished ones are skipped, interrupted ones of the same config
    resume, earlier attempts of the rest are set aside."""
    done, todo = [], []
    for s in specs:
        if s.error:
            done.append(_result(s, "failed", s.error))
            continue
        try:
            verdict, _ = claim_job(s.dir, s.fp or "", sweep_dir, settings.skip_finished)
        except RuntimeError as e:  # "refused", not "failed": the run in that directory is another's, untouched
            done.append(_result(s, "refused", str(e)))
            log.warning("job %d: refused: %s", s.num, e)
            continue
        if verdict == "skip":
            res = R.collect(_result(s), 0, 0.0, [])
            res.status, res.reason = "skipped", SKIP_REASON
            done.append(res)
            log.info("job %d: skipped (%s in %s)", s.num, SKIP_REASON, s.dir)
        else:
            s.resume = verdict == "resume"
            if s.resume:
                log.info("job %d: resuming the interrupted run in %s", s.num, s.dir)
            todo.append(s)
    return done, todo


def _result(spec: JobSpec, status: str = "not run", reason: str = "") -> R.JobResult:
    return R.JobResult(spec.num, spec.overrides, spec.varying, str(spec.dir), status, reason)


def _plan_row(spec: JobSpec, skip_finished: bool = True) -> PlanRow:
    label = ",".join(spec.varying) or "(single point)"
    if spec.error or spec.cfg is None:
        return PlanRow(spec.num, label, error=spec.error, state="invalid")
    state = "done: skipped" if skip_finished and is_finished(spec.dir, spec.fp or "") else "to run"
    return plan_row(spec.num, label, spec.cfg, state)


def _job_return(spec: JobSpec, res: R.JobResult | None) -> JobReturn:
    """A Hydra JobReturn. A failed job returns None, not an exception: the launcher reports it itself, so later
    batches still run, and Optuna records a failed trial (its sweeper crashes on NaN)."""
    ret = JobReturn()
    ret.overrides, ret.cfg, ret.hydra_cfg = spec.overrides, spec.cfg, spec.sweep_cfg
    ret.working_dir, ret.task_name = os.getcwd(), "train"
    ret.status = JobStatus.COMPLETED
    ok = res is not None and res.ok and res.val_loss is not None
    ret.return_value = float(res.val_loss) if ok else None
    return ret
