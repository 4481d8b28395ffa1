"""Sizing a model to a parameter budget: the FFN hidden width that gives ``param_budget`` non-embedding parameters.

Parameter matching: size each variant's FFN so that all variants hold the same non-embedding parameters.

``param_budget=<N>`` (a run-level key) asks for ``N`` non-embedding parameters (:meth:`Decoder.param_counts`: everything but
the token table and an untied head). Attention, norms and positional tables are what they are; the FFN hidden
width ``h`` is solved for. For a fixed architecture the non-embedding count is affine in ``h``,

    N(h) = a + b * h        (b = n_layers * parameters per hidden unit: 2 * d_model for an MLP, 3 * d_model
                             for a GLU, plus biases)

so two builds on PyTorch's meta device (no memory, no compute) give ``a`` and ``b`` for any FFN, a plugin's
included, and ``h = round((N - a) / b)``. The result is checked to lie within 1% of ``N`` (one hidden unit moves
the count by ``b``, which is under 1% of any model whose FFN is not tiny); otherwise a :class:`ConfigError` says
why. SwiGLU vs GELU, or learned vs RoPE positions, are then compared at equal size.

``param_budget`` is a run-level field of ``TrainConfig`` (config.py), not part of the model record: a checkpoint
records the width it chose.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from decoderlab.errors import ConfigError
from decoderlab.model import Decoder

log = logging.getLogger("decoderlab")
BUDGET_KEY = "param_budget"
TOLERANCE = 0.01


def param_budget(cfg: DictConfig) -> int | None:
    """``param_budget`` (the schema makes it an int), or None when unset; a non-positive value is a ConfigError."""
    budget = OmegaConf.select(cfg, BUDGET_KEY, default=None)
    if budget is not None and budget <= 0:
        raise ConfigError(f"{BUDGET_KEY} must be positive, got {budget}")
    return budget


def non_embedding(model_cfg: Any, vocab_size: int) -> int:
    """Non-embedding parameters of the model ``model_cfg`` describes, counted on the meta device."""
    try:
        with torch.device("meta"):
            return Decoder(model_cfg, vocab_size).param_counts()["non_embedding"]
    except ValueError as e:  # a component rejecting its dimensions
        raise ConfigError(str(e)) from None


def _with_hidden(model_cfg: Any, hidden: int) -> Any:
    return dataclasses.replace(model_cfg, ffn=dataclasses.replace(model_cfg.ffn, hidden=hidden))


def fit_ffn_hidden(model_cfg: Any, vocab_size: int, budget: int) -> tuple[Any, int, int]:
    """``(model_cfg with ffn.hidden set, hidden, non-embedding count)`` closest to ``budget``."""
    ffn = model_cfg.ffn
    if not dataclasses.is_dataclass(ffn) or "hidden" not in {f.name for f in dataclasses.fields(ffn)}:
        name = getattr(ffn, "name", ffn)
        raise ConfigError(f"{BUDGET_KEY} sizes the FFN's 'hidden' width, but model/ffn={name} has no such field")
    h1, h2 = 64, 128
    n1, n2 = non_embedding(_with_hidden(model_cfg, h1), vocab_size), non_embedding(_with_hidden(model_cfg, h2),
                                                                                  vocab_size)
    per_unit = (n2 - n1) / (h2 - h1)  # b in N(h) = a + b * h
    base = n1 - per_unit * h1  # a: everything but the FFN's hidden units
    if per_unit <= 0:
        raise ConfigError(f"model/ffn={ffn.name}: its parameter count does not grow with 'hidden'; cannot match")
    hidden = round((budget - base) / per_unit)
    if hidden < 1:
        raise ConfigError(
            f"{BUDGET_KEY}={budget:,} is too small: without its FFN this model already has {int(base):,} "
            f"non-embedding parameters (model/ffn={ffn.name}); raise the budget or shrink the model"
        )
    sized = _with_hidden(model_cfg, hidden)
    count = non_embedding(sized, vocab_size)
    if abs(count - budget) > TOLERANCE * budget:
        raise ConfigError(
            f"{BUDGET_KEY}={budget:,}: the closest FFN width ({hidden}) gives {count:,} non-embedding parameters, "
            f"more than {TOLERANCE:.0%} off; one hidden unit is worth {per_unit:,.0f} parameters here"
        )
    return sized, hidden, count


def build_model_config(cfg: DictConfig, vocab_size: int) -> Any:
    """The typed model config a run builds its model from; with ``param_budget`` its FFN width sized to it."""
    budget = param_budget(cfg)
    model_cfg = OmegaConf.to_object(cfg.model)
    if budget is None:
        return model_cfg
    sized, hidden, count = fit_ffn_hidden(model_cfg, vocab_size, budget)
    log.info("param budget %s: model.ffn.hidden=%d gives %s non-embedding parameters (%+.2f%%)",
             f"{budget:,}", hidden, f"{count:,}", 100 * (count - budget) / budget)
    return sized


def ffn_hidden(model: torch.nn.Module) -> int | None:
    """The FFN hidden width a built model has (what ``param_budget`` chose), for its summary."""
    blocks = getattr(model, "blocks", None)
    proj = getattr(getattr(blocks[0], "ffn", None), "proj", None) if blocks else None
    return getattr(proj, "in_features", None)
