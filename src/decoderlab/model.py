"""The decoder: the ONLY place a model is assembled from its chosen components.

    ids ─► tok_emb ─► positional.embed ─► N × placement(attn(positional.rotate, positional.bias), ffn, norm)
        ─► [final norm] ─► head ─► logits

Knows nothing of Lightning or Hydra: it takes a plain :class:`ModelConfig` (or any object with its fields).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decoderlab.components import ATTENTION, FFN, MODEL_REGISTRIES, NORM, PLACEMENT, POSITIONAL
from decoderlab.components.attention import AttnContext
from decoderlab.components.base import ModelDims
from decoderlab.errors import PositionRangeError

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Model sizes plus one config per component slot (each a registry config with a ``name``)."""

    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False  # biases in Linear layers (nanoGPT's default: none)
    tie_embeddings: bool = True
    init_std: float = 0.02
    positional: Any = field(default_factory=lambda: {"name": "learned"})
    attention: Any = field(default_factory=lambda: {"name": "mha"})
    placement: Any = field(default_factory=lambda: {"name": "pre"})
    norm: Any = field(default_factory=lambda: {"name": "layernorm"})
    ffn: Any = field(default_factory=lambda: {"name": "mlp"})


class KVCache:
    """Keys/values of one layer for incremental decoding; keys are stored after rotation."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat((self.k, k), dim=2)  # (B, Hkv, Tk, D)
        self.v = v if self.v is None else torch.cat((self.v, v), dim=2)
        return self.k, self.v

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


class Decoder(nn.Module):
    """A GPT-style causal decoder built from registry components."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        check_components(cfg)
        self.cfg = cfg
        self.dims = dims = ModelDims(
            d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, block_size=cfg.block_size,
            vocab_size=vocab_size, bias=cfg.bias, dropout=cfg.dropout,
        )
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        self.positional = POSITIONAL.build(cfg.positional, dims=dims)
        self.drop = nn.Dropout(cfg.dropout)

        def make_norm() -> nn.Module:
            return NORM.build(cfg.norm, dims=dims)

        self.blocks = nn.ModuleList(
            PLACEMENT.build(
                cfg.placement, dims=dims, layer_idx=i, attn=ATTENTION.build(cfg.attention, dims=dims),
                ffn=FFN.build(cfg.ffn, dims=dims), norm=make_norm,
            )
            for i in range(cfg.n_layers)
        )
        self.norm_f = make_norm() if getattr(self.blocks[0], "final_norm", True) else nn.Identity()
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for m in self.modules():  # components may refine their own init (e.g. DeepNorm's beta)
            if m is not self and hasattr(m, "init_weights"):
                m.init_weights()

    def _init_weights(self, m: nn.Module) -> None:
        # GPT-2 init: N(0, 0.02); residual output projections scaled by 1/sqrt(2 * n_layers).
        std = self.cfg.init_std
        if isinstance(m, nn.Linear):
            scale = 1 / math.sqrt(2 * self.cfg.n_layers) if getattr(m, "is_residual_proj", False) else 1.0
            nn.init.normal_(m.weight, 0.0, std * scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)

    def param_counts(self) -> dict[str, int]:
        """Embedding (token table, plus a separate head) and non-embedding parameters; shared weights once."""
        params = {id(p): (n, p) for n, p in self.named_parameters()}
        emb_ids = {id(self.tok_emb.weight), id(self.head.weight)}
        emb = sum(p.numel() for i, (_, p) in params.items() if i in emb_ids)
        total = sum(p.numel() for _, p in params.values())
        return {"total": total, "embedding": emb, "non_embedding": total - emb}

    def forward(self, idx: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T); with ``caches`` the ids continue the cached prefix.

        Positions are Python ints (the cache's length), so the forward has no host sync and compiles to one graph.
        """
        start = caches[0].length if caches else 0  # a Python int (a cache's shape), never a tensor
        x = self.tok_emb(idx)  # (B, T, d_model)
        if self.positional.embeds:
            x = self.positional.embed(x, start)
        x = self.drop(x)
        ctx = AttnContext(positional=self.positional, start=start)
        for i, block in enumerate(self.blocks):  # a context per layer, never mutated (see AttnContext)
            x = block(x, ctx.for_layer(caches[i] if caches else None))
        return self.head(self.norm_f(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None, generator: torch.Generator | None = None, use_cache: bool = True,
        context: int | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T); returns (B, T' + max_new_tokens).

        Semantics (identical with and without the KV cache): every token is predicted from the last
        ``context`` tokens (default ``block_size``), placed at positions 0..context-1.

        - A prompt longer than ``context`` is cropped to its last ``context`` tokens, with a warning (T' = context).
        - ``context`` past what the encoding can represent (``positional.max_positions``: learned positions past
          their table) raises :class:`PositionRangeError` saying why.
        - While the sequence fits in ``context`` the KV cache feeds one token per step; once it is longer the
          window slides and is re-encoded every step (nanoGPT's semantics), because absolute encodings need the
          window back at position 0. Encodings that extrapolate (rope, alibi, t5, sinusoidal, ...) may be given a
          ``context`` past ``block_size``: the cache then runs through it (length extrapolation, as measured by
          ``decoderlab-eval``).
        """
        context = self._generation_context(context)
        self.positional.reserve(context)  # grow fixed tables here, outside any compiled graph
        if idx.shape[1] > context:
            log.warning("prompt of %d tokens is longer than the context of %d tokens: keeping its last %d",
                        idx.shape[1], context, context)
            idx = idx[:, -context:]
        caches: list[KVCache] | None = None
        for _ in range(max_new_tokens):
            if use_cache and idx.shape[1] <= context:
                if caches is None:  # prefill the prompt
                    caches = [KVCache() for _ in self.blocks]
                    logits = self(idx, caches)[:, -1, :]
                else:
                    logits = self(idx[:, -1:], caches)[:, -1, :]  # (B, V): one new token at position T-1
            else:  # the window slides (or no cache): re-encode the last `context` tokens at positions 0..
                logits = self(idx[:, -context:])[:, -1, :]
            idx = torch.cat((idx, sample_next(logits, temperature, top_k, top_p, generator)), dim=1)
        return idx

    def _generation_context(self, context: int | None) -> int:
        """The generation window: ``block_size`` by default, checked against the encoding's position range."""
        context = int(context or self.cfg.block_size)
        if context < 1:
            raise ValueError(f"context must be at least 1 token, got {context}")
        limit = self.positional.max_positions
        if limit is not None and context > limit:
            raise PositionRangeError(
                f"a context of {context} tokens needs positions up to {context - 1}, but this model's positional "
                f"encoding ({type(self.positional).__name__}) represents only {limit} positions: a table of learned "
                f"positions cannot extrapolate past its size. Use a context of at most {limit} tokens, or an "
                f"encoding that extrapolates."
            )
        return context


def check_components(cfg: Any) -> None:
    """Run every slot config's ``check(model_cfg)`` once, before building: one ValueError listing every problem."""
    problems: list[str] = []
    for group, registry in MODEL_REGISTRIES.items():
        typed = registry.build_config(getattr(cfg, group.split("/", 1)[1]))
        check = getattr(typed, "check", None)
        problems += list(check(cfg)) if check is not None else []
    if problems:
        raise ValueError("invalid model configuration: " + "; ".join(problems))


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One token id per row from (B, V) logits: greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)
