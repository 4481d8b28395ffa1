"""Vocabulary growth: start a run from a checkpoint's weights, growing its embedding for a larger tokenizer.

``init_from=<ckpt>`` starts a run from a checkpoint's weights. With ``tokenizer=extend`` whose base is the
checkpoint's tokenizer, the embedding (and an untied head) grows: rows of the old ids are copied, new rows start at
the **mean of the old rows** (Hewitt 2021, https://nlp.stanford.edu/~johnhew/vocab-expansion.html): a new token then
starts as an "average" token, so the extended model's predictions on old text barely move, whereas N(0, 0.02) rows
would put new tokens' logits at an arbitrary level next to trained ones. Any other tokenizer must be the
checkpoint's own (:func:`decoderlab.checkpoint.require_same_tokenizer`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from decoderlab.checkpoint import (
    bound_tokenizer,
    model_state,
    read_checkpoint,
    require_same_tokenizer,
    resolve_checkpoint,
)
from decoderlab.components.tokenizers import Tokenizer
from decoderlab.errors import ConfigError, UserError
from decoderlab.model import Decoder

log = logging.getLogger(__name__)
EMBEDDING_KEYS = ("tok_emb.weight", "head.weight")


def grow_rows(old: torch.Tensor, new_rows: int) -> torch.Tensor:
    """``old`` (V_old, d) plus ``new_rows`` rows, each the mean of the old rows."""
    mean = old.mean(dim=0, keepdim=True)  # (1, d)
    return torch.cat((old, mean.expand(new_rows, -1)), dim=0)  # (V_old + new_rows, d)


def init_from_checkpoint(model: Decoder, path: str | Path, tokenizer: Tokenizer) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (built for ``tokenizer``), growing the vocabulary if needed."""
    ckpt = read_checkpoint(path)
    source = f"init_from checkpoint {path}"
    old_tok = bound_tokenizer(ckpt, source)
    state = model_state(ckpt)
    old_v, new_v = state["tok_emb.weight"].shape[0], model.tok_emb.weight.shape[0]
    if old_tok.fingerprint() != tokenizer.fingerprint():
        base = getattr(tokenizer, "base_fingerprint", None)
        if base is None or base() != old_tok.fingerprint():
            require_same_tokenizer(old_tok, tokenizer, source, "this run's tokenizer")
        for key in EMBEDDING_KEYS:
            if key in state:
                state[key] = grow_rows(state[key], new_v - old_v)
    mine = model.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(mine[k].shape)}"
           for k, v in state.items() if k in mine and mine[k].shape != v.shape]
    missing = sorted(set(mine) - set(state))
    if bad or missing:
        raise ConfigError(f"{source} does not fit this model ({'; '.join(bad + [f'missing {m}' for m in missing])}):"
                          f" use the same model.* sizes and components")
    model.load_state_dict({k: v for k, v in state.items() if k in mine})
    return {"init_from": str(path), "copied_rows": old_v, "new_rows": new_v - old_v, "new_row_init": "mean"}


def maybe_init_from(cfg: Any, model: Decoder, tokenizer: Tokenizer | None) -> Decoder:
    """Apply the run-level ``init_from`` when the config sets it (read defensively: the key may be absent)."""
    path = OmegaConf.select(cfg, "init_from", default=None)
    if not path:
        return model
    if tokenizer is None:
        raise ValueError("init_from: growing or checking a vocabulary needs the run's tokenizer")
    try:
        ckpt, _ = resolve_checkpoint(path)  # a run directory (its last.ckpt) or a checkpoint file, as load/generate
    except UserError as e:
        raise ConfigError(f"init_from={path}: {e}") from None
    report = init_from_checkpoint(model, ckpt, tokenizer)
    log.info("init_from=%s: %d embedding rows copied, %d new rows initialized at the mean of the old ones",
             path, report["copied_rows"], report["new_rows"])
    return model
