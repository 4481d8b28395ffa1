"""The plan of a run or sweep, before anything trains: parameters, FLOPs per token, memory (``--plan``).

Formulas (fp32 training with AdamW; ``d`` = d_model, ``L`` = n_layers, ``T`` = block_size, ``V`` = vocab_size,
``B`` = loader.batch_size, ``N`` = non-embedding parameters, ``P`` = all parameters, tied weights once):

* FLOPs per trained token = ``6 * (N + d*V) + 12 * L * d * T``: 2 FLOPs per weight per token forward, 4 backward
  (Kaplan et al. 2020, https://arxiv.org/abs/2001.08361), counting the head's ``d x V`` matmul even when tied,
  plus attention's ``QK^T`` and ``AV`` (2 * 2 * T * d per layer forward, x3 for training) as in PaLM's appendix B
  (https://arxiv.org/abs/2204.02311). Causal masking is not discounted. A run's total is this times
  ``B * T * accumulate_grad_batches * max_steps``.
* Memory = ``16 * P`` bytes (fp32 weights, gradients and AdamW's two moments, 4 bytes each) + activations
  ``s * B * T * (L * (10*d + 2*F) + 2*V)`` bytes, where ``F`` is the width of the FFN's input projections
  (``4d`` for the 4x MLP, ``2h`` for a GLU's fused gate and up) and ``s`` = 4 bytes (2 under 16-bit precision).
  ``10d`` per layer counts what autograd keeps besides the FFN (norm inputs and outputs, q, k, v, attention
  output, residuals); ``2V`` the logits and their log-softmax. A fused attention kernel (SDPA) keeps no ``T x T``
  matrix; ``model.attention.impl=math`` adds ``s * B * L * n_heads * T^2``. Checked against the bytes autograd
  actually saves (tests/test_plan.py): within 25%. Temporary buffers of the backward pass are not counted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.table import Table
from rich.text import Text
from torch import nn

from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.config import validate
from decoderlab.data import CORPORA, prepare
from decoderlab.errors import UserError
from decoderlab.model import Decoder
from decoderlab.report import make_console
from decoderlab.sizing import build_model_config

PLAN_ENV = "DECODERLAB_PLAN"  # set by ``decoderlab-train --plan``: plan, train nothing


def plan_requested() -> bool:
    """Whether this process runs in plan mode (``--plan``)."""
    return os.environ.get(PLAN_ENV, "") not in ("", "0")


@dataclass
class Estimate:
    """Sizes of one sweep point."""

    total: int
    embedding: int
    non_embedding: int
    ffn_hidden: int | None
    flops_per_token: float
    run_flops: float
    weights_bytes: int  # weights + grads + AdamW moments
    activation_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes


def _ffn_width(model: nn.Module) -> tuple[int, int | None]:
    """(F, hidden) of the first block's FFN: F sums the out-features of its input projections."""
    ffn = getattr(model.blocks[0], "ffn", None) if len(model.blocks) else None
    if ffn is None:
        return 0, None
    inputs = [m for m in ffn.modules() if isinstance(m, nn.Linear) and not getattr(m, "is_residual_proj", False)]
    outs = [m for m in ffn.modules() if isinstance(m, nn.Linear) and getattr(m, "is_residual_proj", False)]
    return sum(m.out_features for m in inputs), (outs[0].in_features if outs else None)


def build_meta(model_cfg: Any, vocab_size: int) -> nn.Module:
    """The model on PyTorch's meta device: shapes and parameter counts, no memory, no compute."""
    with torch.device("meta"):
        return Decoder(model_cfg, vocab_size)


def estimate(cfg: DictConfig, vocab_size: int) -> Estimate:
    """Sizes of the run ``cfg`` describes (model sized to ``param_budget`` when set)."""
    model_cfg = build_model_config(cfg, vocab_size)
    try:
        model = build_meta(model_cfg, vocab_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    counts = model.param_counts()
    d, L, T, V = model_cfg.d_model, model_cfg.n_layers, model_cfg.block_size, vocab_size
    B = int(cfg.loader.batch_size)
    F, hidden = _ffn_width(model)
    flops = 6 * (counts["non_embedding"] + d * V) + 12 * L * d * T
    s = 2 if "16" in str(cfg.trainer.precision) else 4
    act = s * B * T * (L * (10 * d + 2 * F) + 2 * V)
    if OmegaConf.select(cfg, "model.attention.impl", default="sdpa") == "math":
        act += s * B * L * model_cfg.n_heads * T * T
    tokens = B * T * int(cfg.trainer.accumulate_grad_batches) * int(cfg.trainer.max_steps)
    return Estimate(counts["total"], counts["embedding"], counts["non_embedding"], hidden, float(flops),
                    float(flops) * tokens, 16 * counts["total"], act)


_VOCAB: dict[str, int] = {}


def vocab_size(cfg: DictConfig) -> int:
    """The vocabulary size of the run's tokenizer; a learned one is fitted (and cached) on the corpus."""
    key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True),
                      OmegaConf.to_container(cfg.tokenizer, resolve=True)], sort_keys=True, default=str)
    if key not in _VOCAB:
        tok = TOKENIZERS.build(cfg.tokenizer)
        if tok.fit_on is not None:
            tok = prepare(CORPORA.build(cfg.data), tok, int(cfg.model.block_size)).tokenizer
        _VOCAB[key] = int(tok.vocab_size)
    return _VOCAB[key]


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; bytes with unit='B' use binary prefixes."""
    if unit == "B":
        for p in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or p == "TiB":
                return f"{n:.0f} {p}" if p == "B" else f"{n:.1f} {p}"
            n /= 1024
    for p in ("", "K", "M", "G", "T", "P", "E"):
        if abs(n) < 1000 or p == "E":
            return f"{n:.3g}{p}"
        n /= 1000
    return str(n)


FORMULAS = (
    "FLOPs/token = 6*(N + d*V) + 12*L*d*T (N non-embedding params; Kaplan 2020 + PaLM attention term); "
    "memory = 16*P (fp32 weights, grads, AdamW m and v) + 4*B*T*(L*(10d + 2F) + 2V) activations "
    "(F = FFN input width; 2 bytes/value under 16-bit precision). See decoderlab.plan."
)


@dataclass
class PlanRow:
    """One sweep point of a plan: its estimate, or the error that makes it invalid."""

    num: int | None
    label: str
    est: Estimate | None = None
    error: str | None = None
    state: str = "to run"  # "to run" | "done" (finished with this config: will be skipped) | "invalid"


def plan_row(num: int | None, label: str, cfg: DictConfig, state: str = "to run") -> PlanRow:
    """Estimate one sweep point; a user error becomes the row's error instead of an exception."""
    try:
        validate(cfg)
        return PlanRow(num, label, estimate(cfg, vocab_size(cfg)), state=state)
    except UserError as e:
        return PlanRow(num, label, error=str(e), state="invalid")


def print_plan(rows: list[PlanRow], console: Any = None) -> None:
    """The plan as a rich table, one row per sweep point, the formulas as its caption."""
    console = console or make_console()
    t = Table(title=f"decoderlab plan: {len(rows)} run(s), nothing trained", title_justify="left",
              caption=FORMULAS, caption_justify="left")
    widest = min(60, max((len(r.label) for r in rows), default=10))
    for col in ("#", "variant", "params", "embedding", "non-emb", "ffn hidden", "FLOPs/token", "run FLOPs",
                "memory (activations)", "state"):
        t.add_column(col, justify="left" if col in ("variant", "state") else "right", overflow="fold",
                     min_width=widest if col == "variant" else None, no_wrap=col != "variant")
    for r in rows:
        num, label = Text("" if r.num is None else str(r.num)), Text(r.label)
        if r.est is None:
            t.add_row(num, label, Text("see below", style="red"), "", "", "", "", "", "", r.state)
            continue
        e = r.est
        mem = f"{human(e.memory_bytes, 'B')} ({human(e.activation_bytes, 'B')})"
        t.add_row(num, label, f"{e.total:,}", f"{e.embedding:,}", f"{e.non_embedding:,}",
                  "-" if e.ffn_hidden is None else str(e.ffn_hidden), human(e.flops_per_token),
                  human(e.run_flops), mem, r.state)
    console.print(t)
    for r in rows:
        if r.error:
            console.print(Text(f"#{'' if r.num is None else r.num} {r.label}: {r.error}", style="red"))
