"""The ``decoderlab`` Hydra launcher (each job of a multirun in its own child process) and sweeper (Hydra's basic
sweeper that leaves a point which cannot be composed to the launcher: reported invalid, the other points run).

Discovered by Hydra through the ``hydra_plugins`` namespace package (no ``__init__.py`` in ``hydra_plugins/``).
This module stays light (Hydra imports every plugin at start-up); the work is in :mod:`decoderlab.sweep.launch`.

    decoderlab-train -m model/positional=learned,rope seed=0,1,2            # the default launcher
    decoderlab-train -m ... hydra.launcher.n_jobs=2 hydra.launcher.timeout_s=3600
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher


@dataclass
class DecoderlabLauncherConf:
    _target_: str = "hydra_plugins.decoderlab_launcher.decoderlab_launcher.DecoderlabLauncher"
    n_jobs: int = 1  # jobs running at once (each a process; mind the cores: set threads=)
    timeout_s: float | None = None  # per job; then SIGTERM, and SIGKILL after kill_grace_s
    kill_grace_s: float = 30.0
    skip_finished: bool = True  # skip jobs whose status.json is "completed" with the same config
    stream_output: bool = True  # echo each job's output (always kept in <job dir>/job.log)


ConfigStore.instance().store(group="hydra/launcher", name="decoderlab", node=DecoderlabLauncherConf,
                             provider="decoderlab")


class DecoderlabLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        from decoderlab.sweep.launch import Settings  # lazy: Hydra imports every plugin at start-up

        self.settings = Settings(**settings)
        self.config: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from decoderlab.sweep.launch import launch  # lazy: see __init__

        return launch(self.hydra_context, self.config, job_overrides, initial_job_idx, self.settings)


@dataclass
class DecoderlabSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.decoderlab_launcher.decoderlab_launcher.DecoderlabSweeper"


# Stored as ``basic``, Hydra's default sweeper (plugins are scanned after Hydra's core ones, so this entry wins):
# it behaves as Hydra's basic sweeper except under the decoderlab launcher, and a preset that overrides the
# sweeper (``override /hydra/sweeper: optuna``) still can, which a second default in conf/train.yaml would block.
ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=DecoderlabSweeperConf, provider="decoderlab")


class DecoderlabSweeper(BasicSweeper):
    """Hydra's basic sweeper (the grid of ``a,b``, ``range``, ``choice``), except that it leaves composing the
    points to the launcher: under the decoderlab launcher one point that cannot be composed (``model.positional.base``
    of a ``learned`` point) is reported invalid while the others run; under ``basic`` (:class:`CheckedBasicLauncher`),
    submitit (its checked launchers below) and any other launcher every point is checked first by
    :func:`refuse_invalid_points`."""

    def sweep(self, arguments: list[str]) -> Any:
        from decoderlab.errors import JobFailed, UserError

        try:
            return super().sweep(arguments)
        except UserError as e:  # a job's mistake under an in-process launcher: Hydra has named the job's overrides
            raise JobFailed(f"{e} (the sweep stops at its first failed job under this launcher; the default "
                            "decoderlab launcher runs the others and reports each)") from None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not isinstance(getattr(self, "launcher", None), (DecoderlabLauncher, ChecksEachBatch)):
            first = sum(len(b) for b in self.overrides[: max(0, self.batch_index - 1)]) if self.overrides else 0
            refuse_invalid_points(self.hydra_context.config_loader, self.config, batch, first)


@dataclass
class CheckedBasicLauncherConf:
    _target_: str = "hydra_plugins.decoderlab_launcher.decoderlab_launcher.CheckedBasicLauncher"


# Stored as ``basic`` (scanned after Hydra's core plugins, so this entry wins), like the sweeper above.
ConfigStore.instance().store(group="hydra/launcher", name="basic", node=CheckedBasicLauncherConf,
                             provider="decoderlab")


class ChecksEachBatch:
    """A launcher mixin: every batch a sweeper hands it (the grid, or Optuna's trials) is checked first by
    :func:`refuse_invalid_points`. Hydra saves each job's config before its task starts (and submitit pickles it
    under the sweep directory first), so a literal secret must be refused before then."""

    config: Any
    hydra_context: Any
    holds_locks = False  # the jobs run in this process: hold their directories' locks until they end

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        composed = refuse_invalid_points(self.hydra_context.config_loader, self.config, job_overrides,
                                         initial_job_idx)
        from decoderlab.plan import plan_requested  # lazy: see the module docstring

        # --plan writes nothing: no job directory is claimed, no earlier attempt is set aside.
        held = [] if plan_requested() else claim_job_dirs(self.config, composed, job_overrides, initial_job_idx,
                                                          self.holds_locks)
        try:
            return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        finally:
            for lock in held:
                lock.release()


class CheckedBasicLauncher(ChecksEachBatch, BasicLauncher):
    """Hydra's basic launcher (jobs in this process, one after another), each batch checked first."""

    holds_locks = True


def refuse_invalid_points(loader: Any, config: Any, batch: Sequence[Sequence[str]], first: int) -> list[Any]:
    """Compose every point of ``batch`` (jobs ``first ...``) before any runs; one error names each that cannot be
    composed or holds a literal secret, by its sweep values and reason (Hydra stops at the first, unnamed).
    Returns each point's composed config."""
    from hydra.errors import ConfigCompositionException

    from decoderlab.config import hydra_config_problems
    from decoderlab.sweep.launch import axes, one_line_error, varying_of

    labels, bad, composed = varying_of(batch, set(axes(config))), [], []
    for i, overrides in enumerate(batch):
        try:
            composed.append(loader.load_sweep_config(master_config=config, sweep_overrides=list(overrides)))
            unsafe = hydra_config_problems(composed[-1])
            if unsafe:  # a literal secret in a swept option: refused before the job's run saves its config
                raise ValueError("; ".join(unsafe))
        except Exception as e:  # noqa: BLE001 - Hydra's and OmegaConf's composition errors, reported per point
            bad.append(f"  job {first + i} ({' '.join(labels[i] or overrides)}): {one_line_error(e)}")
    if bad:
        what = "no job was launched" if first == 0 else "no job of this batch was launched"
        raise ConfigCompositionException(
            f"{len(bad)} of {len(batch)} sweep points are invalid; {what}:\n" + "\n".join(bad)
            + "\n(the default decoderlab launcher runs the other points and reports these as invalid)")
    return composed


def claim_job_dirs(config: Any, composed: Sequence[Any], batch: Sequence[Sequence[str]], first: int,
                   hold: bool) -> list[Any]:
    """Claim every job directory of a batch before Hydra saves anything in one (:func:`decoderlab.sweep.jobs.
    claim_job`): earlier failed attempts set aside; a directory in use by a live run, or holding a run of another
    config, stops the batch with one error naming each (:class:`decoderlab.errors.RefusedConfig`), nothing
    launched. Returns the locks held (``hold``: the jobs run in this process)."""
    import os
    from pathlib import Path

    from omegaconf import OmegaConf, open_dict

    from decoderlab.errors import RefusedConfig
    from decoderlab.rundir import fingerprint, task_config
    from decoderlab.sweep.jobs import claim_job
    from decoderlab.sweep.launch import axes, varying_of

    sweep_dir = Path(os.path.abspath(str(config.hydra.sweep.dir)))
    labels, held, bad = varying_of(batch, set(axes(config))), [], []
    for i, sweep_cfg in enumerate(composed):
        with open_dict(sweep_cfg):
            sweep_cfg.hydra.job.num = first + i
        job_dir = sweep_dir / str(OmegaConf.select(sweep_cfg, "hydra.sweep.subdir"))
        try:
            _, lock = claim_job(job_dir, fingerprint(task_config(sweep_cfg)), sweep_dir, hold=hold)
        except RuntimeError as e:
            bad.append(f"  job {first + i} ({' '.join(labels[i] or batch[i])}): {e}")
            continue
        if lock is not None:
            held.append(lock)
    if bad:
        for lock in held:
            lock.release()
        what = "no job was launched" if first == 0 else "no job of this batch was launched"
        raise RefusedConfig(f"{len(bad)} of {len(batch)} sweep jobs are refused; {what}:\n" + "\n".join(bad))
    return held


# The submitit launchers (optional extra: pip install 'decoderlab[sweeps]'), checking every batch whichever sweeper
# hands it (Optuna's trials included) as CheckedBasicLauncher does: submitit pickles each job's config under the
# sweep directory and Hydra saves it again in the job, both before the job's task could refuse a literal secret.
try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:
    CHECKED_SUBMITIT: tuple[type, ...] = ()
else:
    class CheckedLocalLauncher(ChecksEachBatch, LocalLauncher):
        """submitit's local launcher, each batch checked first."""

    class CheckedSlurmLauncher(ChecksEachBatch, SlurmLauncher):
        """submitit's SLURM launcher, each batch checked first."""

    @dataclass
    class CheckedLocalQueueConf(LocalQueueConf):
        _target_: str = "hydra_plugins.decoderlab_launcher.decoderlab_launcher.CheckedLocalLauncher"

    @dataclass
    class CheckedSlurmQueueConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.decoderlab_launcher.decoderlab_launcher.CheckedSlurmLauncher"

    CHECKED_SUBMITIT = (CheckedLocalLauncher, CheckedSlurmLauncher)


def store_checked_submitit() -> None:
    """Store the checked submitit launchers as ``submitit_local`` and ``submitit_slurm``, over submitit's own
    entries. Call it after Hydra's plugin scan (``Plugins.instance()``): the scan re-runs every plugin module, and
    submitit's, scanned after this one, would store its entries again."""
    if CHECKED_SUBMITIT:
        store = ConfigStore.instance().store
        store(group="hydra/launcher", name="submitit_local", node=CheckedLocalQueueConf(), provider="decoderlab")
        store(group="hydra/launcher", name="submitit_slurm", node=CheckedSlurmQueueConf(), provider="decoderlab")
