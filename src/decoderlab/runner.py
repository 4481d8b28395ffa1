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
        data, cfg.model.block_size, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.seed, cfg.data.val_max_windows
    )
    return data, dm


def build_model(cfg: DictConfig, vocab_size: int) -> Decoder:
    model_cfg = OmegaConf.to_object(cfg.model)  # typed ModelSchema with typed component configs
    try:
        return Decoder(model_cfg, vocab_size)
    except ValueError as e:  # a component rejecting its dimensions: a config mistake
        raise ConfigError(str(e)) from None


def run(cfg: DictConfig, out: Path) -> float | None:
    """Train one model; writes config, tokenizer, checkpoints, metrics, sample and summary to ``out``."""
    from decoderlab.train import write_status

    validate(cfg)
    write_status(out, "running")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    data, dm = build_data(cfg)
    data.tokenizer.save(out)
    model = build_model(cfg, data.tokenizer.vocab_size)
    counts = model.param_counts()
    log.info("model: %s parameters (%s non-embedding)", f"{counts['total']:,}", f"{counts['non_embedding']:,}")
    from decoderlab.fit import fit

    result = fit(cfg, out, model, data, dm, flat_config(cfg), slot_choices())
    summary = {"params": counts, **result, "run_dir": str(out), "choices": slot_choices()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_status(out, "completed")
    from decoderlab.report import print_summary

    print_summary(summary)
    return result.get("val_loss")

