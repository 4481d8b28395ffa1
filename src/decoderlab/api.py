"""The Python API: compose a run's config, train it, load a trained model, from a notebook or a script.

    import decoderlab
    cfg = decoderlab.compose(["model/positional=rope", "trainer.max_steps=200"])
    run = decoderlab.train(cfg, run_dir="runs/rope")          # or decoderlab.train(["model/positional=rope"])
    run.metrics["val_bpb"], run.model, run.tokenizer
    model, tokenizer = decoderlab.load("runs/rope")           # a run directory or a checkpoint file

The same composition (plugins, schema, validation) and the same run (:func:`decoderlab.runner.run`) as
``decoderlab-train``; errors are raised (:class:`decoderlab.errors.UserError`), never turned into exit codes.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("decoderlab")
# id(composed job config) -> its Hydra config (choices, overrides) and the config's fingerprint when composed
_hydra_of: dict[int, tuple[DictConfig, str]] = {}


@dataclass
class Run:
    """A finished training run: the trained model (eval mode), its tokenizer, the summary figures, its directory."""

    model: Any
    tokenizer: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    run_dir: Path = Path(".")

    @property
    def val_loss(self) -> float | None:
        return self.metrics.get("val_loss")


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The run config ``decoderlab-train <overrides>`` would train (plugins loaded, schema registered)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from decoderlab.config import composition_problem, register_schema
    from decoderlab.errors import ConfigError
    from decoderlab.plugins import load_plugins
    from decoderlab.rundir import fingerprint

    load_plugins()
    register_schema()
    GlobalHydra.instance().clear()
    overrides = normalize_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base=None):
            full = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as e:  # a misspelled key, a value of the wrong type, a malformed override
        raise ConfigError(composition_problem(e, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    OmegaConf.set_struct(cfg, True)
    hydra_cfg = OmegaConf.masked_copy(full, ["hydra"])
    _hydra_of[id(cfg)] = (hydra_cfg, fingerprint(cfg))
    weakref.finalize(cfg, _hydra_of.pop, id(cfg), None)
    return cfg


def conf_dir() -> str:
    """``conf/`` inside an installed wheel, else the source checkout's top-level ``conf/``."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parents[1] / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise RuntimeError(f"decoderlab: cannot find conf/train.yaml near {here}")



def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """``+experiment=NAME`` -> ``experiment=NAME``: ``experiment`` is in the defaults list (``experiment: null``), so
    Hydra would reject the ``+`` form that older docs and scripts use."""
    return [o[1:] if o.startswith("+experiment=") else o for o in overrides]


def default_run_dir() -> Path:
    """``outputs/<date>/<HH-MM-SS-mmm-id>``: the command line's layout, a fresh name for every run of this process."""
    from decoderlab.rundir import new_stamp

    return Path("outputs") / datetime.datetime.now().strftime("%Y-%m-%d") / new_stamp()


def train(config_or_overrides: DictConfig | Sequence[str] = (), run_dir: str | Path | None = None) -> Run:
    """Train one model from a composed config (:func:`compose`) or a list of overrides; returns the :class:`Run`.

    ``run_dir`` defaults to ``outputs/<date>/<HH-MM-SS-mmm-id>``. As with ``decoderlab-train``, a directory that
    holds another run, or one a live run holds, is refused (a UserError; nothing in it is touched); the run writes
    ``train.log`` and, for a config composed by :func:`compose` (or overrides) and not edited since,
    ``.hydra/overrides.yaml``: ``decoderlab-train --resume RUN_DIR`` continues it. A failed run raises; its
    ``status.json`` says why.
    """
    from decoderlab import rundir
    from decoderlab.checkpoint import load_model
    from decoderlab.claim import claim
    from decoderlab.runner import run

    cfg = config_or_overrides
    if not isinstance(cfg, DictConfig):
        if isinstance(cfg, str):
            raise TypeError("decoderlab.train: pass a list of overrides, e.g. ['model/positional=rope'], not a string")
        cfg = compose(list(cfg))
    out = (Path(run_dir) if run_dir is not None else default_run_dir()).absolute()
    fp = rundir.fingerprint(cfg)
    held, _ = claim(out, fp, "run", other="run_dir")  # a UserError naming the directory: nothing touched
    try:
        _save_hydra_record(cfg, out, fp)
        with _hydra_context(cfg, out), _train_log(out):
            try:
                run(cfg, out, fp, claim=held)
            except BaseException as e:
                held.record("failed", error=f"{type(e).__name__}: {e}")
                raise
    finally:
        held.release()
    model, tokenizer, _ = load_model(out)
    return Run(model, tokenizer, rundir.read_json(out / rundir.SUMMARY_FILE) or {}, out)


def _save_hydra_record(cfg: DictConfig, out: Path, fp: str) -> None:
    """``.hydra/`` as Hydra writes it for a command-line run (config, hydra, overrides), which ``--resume``
    recomposes the run from; left out for a config :func:`compose` did not make or that was edited since (its
    overrides would compose another run: ``--resume`` then says it cannot)."""
    from decoderlab.rundir import atomic_write

    hydra_cfg, composed_fp = _hydra_of.get(id(cfg), (None, None))
    if hydra_cfg is None or composed_fp != fp:
        log.warning("%s: config built or edited in Python: no .hydra/overrides.yaml, so decoderlab-train --resume "
                    "cannot continue this run", out)
        return
    record = out / ".hydra"
    atomic_write(record / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write(record / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic_write(record / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


@contextlib.contextmanager
def _train_log(out: Path) -> Iterator[None]:
    """``train.log`` in the run directory, appended, as Hydra's job logging writes it for a command-line run."""
    root = logging.getLogger()
    handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def load(run_dir_or_checkpoint: str | Path) -> tuple[Any, Any]:
    """The trained model (eval mode) and its tokenizer from a run directory or a checkpoint file; loads the plugin
    modules the checkpoint records, or names the missing one in the error."""
    from decoderlab.checkpoint import load_model
    from decoderlab.plugins import load_plugins

    load_plugins()
    model, tokenizer, _ = load_model(run_dir_or_checkpoint)
    return model, tokenizer


@contextlib.contextmanager
def _hydra_context(cfg: DictConfig, out: Path) -> Iterator[None]:
    """Make the Hydra config of a composed run current (slot choices, wandb names, its output directory), as Hydra
    does for its task."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    saved = HydraConfig.instance().cfg
    hydra_cfg, _ = _hydra_of.get(id(cfg), (None, None))
    if hydra_cfg is not None:
        hydra_cfg = copy.deepcopy(hydra_cfg)
        with open_dict(hydra_cfg):
            hydra_cfg.hydra.mode = RunMode.RUN
            hydra_cfg.hydra.runtime.output_dir = str(out)
        HydraConfig.instance().set_config(hydra_cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved
