"""One training run from a composed config: data -> model -> Lightning -> loggers -> summary in the run dir.

Lightning (``import lightning`` costs ~3.6 s) is imported only when a run trains (:func:`run`), so planning,
``--help`` and building a model stay fast.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from decoderlab import resume, rundir
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.config import validate
from decoderlab.data import CORPORA, prepare
from decoderlab.errors import ConfigError
from decoderlab.hardware import device_problems
from decoderlab.model import Decoder
from decoderlab.plugins import loaded
from decoderlab.report import print_summary
from decoderlab.sizing import build_model_config, ffn_hidden
from decoderlab.vocab import maybe_init_from

log = logging.getLogger("decoderlab")
_IMPORTED = time.time()
_OWN_PROCESS: list[bool] = []  # decoderlab-train's main: this process is one run (see run_started)


def own_process() -> None:
    """Called by ``decoderlab-train``'s main: a run in this process (unless a multirun) is the whole process."""
    _OWN_PROCESS[:] = [True]


def process_started() -> float:
    """This process's start (epoch seconds; psutil, which wandb brings; else when this module was imported)."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - no psutil, or no process table: the next best start
        return _IMPORTED


def run_started() -> float:
    """Where a run's ``total_seconds`` starts: its process's start when the process is this one run
    (``decoderlab-train``, each job of the decoderlab launcher: the launcher's start-to-exit), else now (the Python
    API, Hydra's in-process launchers: jobs that share a process)."""
    try:
        single = HydraConfig.get().mode == RunMode.RUN
    except ValueError:
        single = False
    return process_started() if _OWN_PROCESS and single else time.time()


def slot_choices() -> dict[str, str]:
    """The chosen option of every config group (``model/positional`` -> ``rope``), Hydra's own groups left out."""
    try:
        choices = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra") and v is not None}


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config as flat dotted keys, with each slot's choice as ``choice/<group>``."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("logger", None)  # logger kwargs are plumbing, not the experiment
    walk(container, "")
    out.update({f"choice/{k}": v for k, v in slot_choices().items()})
    return out


def build_data(cfg: DictConfig) -> tuple[Any, Any]:
    """The tokenized corpus and its Lightning data module."""
    from decoderlab.data.module import DecoderDataModule  # lazy: imports Lightning (see the module docstring)

    corpus = CORPORA.build(cfg.data)
    tokenizer = TOKENIZERS.build(cfg.tokenizer)
    data = prepare(corpus, tokenizer, cfg.model.block_size)
    dm = DecoderDataModule(
        data, cfg.model.block_size, cfg.loader.batch_size, cfg.loader.eval_batch_size, cfg.seed, cfg.loader.val_max_windows
    )
    return data, dm


def saved_config(cfg: DictConfig) -> str:
    """The resolved config as YAML, except ``logger``: left unresolved so an ``${oc.env:...}`` secret in a logger's
    keyword arguments is never written to disk."""
    container = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["logger"] = container.get("logger", {})
    return OmegaConf.to_yaml(resolved)


def tokenizer_summary(data: Any) -> dict[str, Any]:
    """The tokenizer's part of ``summary.json``: name, vocabulary size, fingerprint and its report on the corpus."""
    tok = data.tokenizer
    return {"name": tok.cfg.name, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint(),
            **data.meta.get("tokenizer_report", {})}


def build_model(cfg: DictConfig, vocab_size: int, tokenizer: Any = None) -> Decoder:
    """The run's model: FFN sized to ``param_budget`` when set, weights from ``init_from`` (which needs the run's
    ``tokenizer``) when set."""
    model_cfg = build_model_config(cfg, vocab_size)  # typed ModelSchema
    try:
        model = Decoder(model_cfg, vocab_size)
    except ValueError as e:  # a component rejecting its dimensions: a config mistake
        raise ConfigError(str(e)) from None
    return maybe_init_from(cfg, model, tokenizer)  # init_from: weights (and a grown vocabulary)


def _check_steps_left(cfg: DictConfig, path: str, resumed: bool, prior: str | None) -> None:
    """A checkpoint with no step left to train is refused: the run would train nothing and rewrite its summary with
    no training figures. A resume of a run interrupted at its last step (during the final validation) may finish
    it; ``prior``: the status the run directory held."""
    from decoderlab.checkpoint import read_checkpoint  # lazy: imports torch's serialization helpers

    step, last = read_checkpoint(path)["global_step"], cfg.trainer.max_steps
    if step > last or (step == last and not (resumed and prior == "interrupted")):
        what = "the run is at" if resumed else f"trainer.ckpt_path={path} holds"
        raise ConfigError(f"{what} step {step}, {'past' if step > last else 'at'} trainer.max_steps={last}: "
                          f"nothing to train; give trainer.max_steps > {step}")


def preflight(cfg: DictConfig, out: Path) -> tuple[str, Path | None]:
    """Everything :func:`run` checks before it writes to ``out``: the config is valid and fits this machine, a
    resume (``--resume``) would train the same run, and a checkpoint to continue from is not past
    ``trainer.max_steps``. Returns the config as saved and the checkpoint a resume continues from (None: not
    resuming, or a run interrupted before training started). Raises a UserError."""
    validate(cfg)
    problems = device_problems(cfg.trainer, cfg.model)
    if problems:
        raise ConfigError("this machine cannot run the configuration:\n  - " + "\n  - ".join(problems))
    text = saved_config(cfg)
    ckpt = resume.resume_point(out, text) if resume.resuming() is not None else None
    if ckpt is not None or cfg.trainer.ckpt_path:
        _check_steps_left(cfg, str(ckpt or cfg.trainer.ckpt_path), resumed=ckpt is not None,
                          prior=(rundir.read_status(out) or {}).get("status"))
    return text, ckpt


def run(cfg: DictConfig, out: Path, fingerprint: str | None = None, catcher: Any = None,
        claim: rundir.Claim | None = None) -> float | None:
    """Train one model; writes config, tokenizer, checkpoints, metrics, sample and summary to ``out``.

    ``fingerprint`` (:func:`decoderlab.rundir.fingerprint` of ``cfg``, computed here when not given) goes into
    ``status.json``: a re-run skips a job whose status is "completed" with the same fingerprint. ``catcher``
    (:class:`decoderlab.preempt.SignalCatcher`) turns a preemption signal during training into a checkpoint.
    ``claim`` (:func:`decoderlab.claim.claim`) writes status.json: a run that fails before it starts leaves the
    record of the run it would have resumed as it was.
    """
    started = run_started()
    text, ckpt = preflight(cfg, out)
    for plugin, state in loaded().items():  # train.log records which code took part
        log.info("plugin %s: %s", plugin, state)
    resumed = resume.resuming() is not None
    if ckpt is not None:
        cfg.trainer.ckpt_path = str(ckpt)
        log.info("resuming %s from %s", out, cfg.trainer.ckpt_path)
    elif resumed:
        log.info("resuming %s from step 0: it was interrupted before training started", out)
    fp = fingerprint or rundir.fingerprint(cfg)
    record = claim.record if claim is not None else functools.partial(rundir.write_status, out)
    rundir.atomic_write(out / rundir.CONFIG_FILE, text)  # first: a run interrupted from here on can be resumed
    record("running", fingerprint=fp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    import lightning as L  # lazy: see the module docstring

    from decoderlab.fit import fit, sample_prompt_ids  # lazy: imports Lightning

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data, dm = build_data(cfg)
    data.tokenizer.save(out)
    sample_prompt_ids(cfg, data.tokenizer)  # the sample at the end must not fail a trained run: checked now
    model = build_model(cfg, data.tokenizer.vocab_size, data.tokenizer)
    counts = model.param_counts()
    log.info("model: %s parameters (%s non-embedding)", f"{counts['total']:,}", f"{counts['non_embedding']:,}")
    result = fit(cfg, out, model, data, dm, flat_config(cfg), slot_choices(), catcher=catcher,
                 resumed=ckpt is not None)
    if not result.pop("rank_zero", True):  # DDP: rank 0 alone writes the summary and prints
        return result.get("val_loss")
    summary = {"params": counts, **result, "run_dir": str(out), "choices": slot_choices(),
               "ffn_hidden": ffn_hidden(model), "tokenizer": tokenizer_summary(data),
               "data": {k: data.meta.get(k) for k in ("holdout", "n_docs", "skipped_records")},
               "total_seconds": round(time.time() - started, 2)}  # the job's start to (just before) its exit
    rundir.write_json(out / rundir.SUMMARY_FILE, summary)
    record("completed", fingerprint=fp)
    print_summary(summary)
    return result.get("val_loss")

