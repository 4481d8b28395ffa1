"""One training run from a composed config: data -> model -> Lightning -> loggers -> summary in the run dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.config import validate
from decoderlab.data import CORPORA, prepare
from decoderlab.errors import ConfigError
from decoderlab.model import Decoder

log = logging.getLogger("decoderlab")


def slot_choices() -> dict[str, str]:
    """The chosen option of every config group (``model/positional`` -> ``rope``), Hydra's own groups left out."""
    from hydra.core.hydra_config import HydraConfig

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
    from decoderlab.data.module import DecoderDataModule

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
    tok = data.tokenizer
    return {"name": tok.cfg.name, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint(),
            **data.meta.get("tokenizer_report", {})}


def build_model(cfg: DictConfig, vocab_size: int, tokenizer: Any = None) -> Decoder:
    from decoderlab.sweep.sizing import model_config

    model_cfg = model_config(cfg, vocab_size)  # typed ModelSchema; FFN sized to model.param_budget when set
    try:
        model = Decoder(model_cfg, vocab_size)
    except ValueError as e:  # a component rejecting its dimensions: a config mistake
        raise ConfigError(str(e)) from None
    from decoderlab.vocab import maybe_init_from

    return maybe_init_from(cfg, model, tokenizer)  # model.init_from: weights (and a grown vocabulary)


def run(cfg: DictConfig, out: Path, fingerprint: str | None = None) -> float | None:
    """Train one model; writes config, tokenizer, checkpoints, metrics, sample and summary to ``out``.

    ``fingerprint`` (of the config before any sweep bookkeeping touched it) goes into ``status.json``: a sweep
    re-run skips a job whose status is "completed" with the same fingerprint.
    """
    from decoderlab.sweep.jobs import fingerprint as config_fingerprint
    from decoderlab.sweep.sizing import ffn_hidden
    from decoderlab.train import write_status

    validate(cfg)
    fp = fingerprint or config_fingerprint(cfg)
    write_status(out, "running", fingerprint=fp)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    (out / "config.yaml").write_text(saved_config(cfg))
    data, dm = build_data(cfg)
    data.tokenizer.save(out)
    model = build_model(cfg, data.tokenizer.vocab_size, data.tokenizer)
    counts = model.param_counts()
    log.info("model: %s parameters (%s non-embedding)", f"{counts['total']:,}", f"{counts['non_embedding']:,}")
    from decoderlab.fit import fit

    result = fit(cfg, out, model, data, dm, flat_config(cfg), slot_choices())
    if not result.pop("rank_zero", True):  # DDP: rank 0 alone writes the summary and prints
        return result.get("val_loss")
    summary = {"params": counts, **result, "run_dir": str(out), "choices": slot_choices(),
               "ffn_hidden": ffn_hidden(model), "tokenizer": tokenizer_summary(data),
               "data": {k: data.meta.get(k) for k in ("holdout", "n_docs", "skipped_records")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_status(out, "completed", fingerprint=fp)
    from decoderlab.report import print_summary

    print_summary(summary)
    return result.get("val_loss")

