"""Rotary position embedding (RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864), with partial rotary and
context-extension scaling (linear, NTK-aware, YaRN: see :mod:`rope_scaling`).

Two implementations of the same rotation, picked by ``impl``:

- ``complex`` (Meta Llama, GPT-J pairing): dimensions (2i, 2i+1) form the complex number x_2i + i x_2i+1, which
  is multiplied by e^(i pos theta_i). The default: on this CPU the rotation (forward + backward) is ~1.5x faster
  than ``rotate_half`` and a whole training step at the default size ~1.05x (measured, interleaved runs).
  Under torch.compile the same pairs are rotated in real arithmetic (Inductor has no complex codegen).
- ``rotate_half`` (GPT-NeoX / HF transformers pairing): dimension i pairs with i + R/2. Use it to load HF weights.

They differ only by a fixed permutation of the head dimensions (interleaved vs split halves), which the
q/k projection learns: both define the same family of models (tests/components/test_positional*.py prove it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.components.positional.rope_scaling import SCALINGS, scaled_inv_freq
from decoderlab.registry import ComponentConfig

IMPLS = ("complex", "rotate_half")


@dataclass
class RopeConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "base": "(1, inf)",
        "fraction": "(0, 1]",
        "factor": "[1, inf)",
        "original_max_positions": "[1, inf)",
        "beta_fast": "(0, inf)",
        "beta_slow": "(0, inf)",
        "mscale": "(0, inf)",
    }
    base: float = 10000.0
    # "complex" (pairs 2i, 2i+1; faster on CPU) or "rotate_half" (pairs i, i + R/2; HF layout).
    impl: str = "complex"
    # Partial rotary (GPT-NeoX, GPT-J): rotate only the first int(fraction * head_dim) dims, pass the rest through.
    fraction: float = 1.0
    # Context extension: none | linear (position interpolation) | ntk (NTK-aware base) | yarn (NTK-by-parts).
    scaling: str = "none"
    factor: float = 1.0  # context-extension factor s (> 1 with any scaling)
    original_max_positions: int | None = None  # yarn: the context length the model was trained at
    beta_fast: float = 32.0  # yarn: pairs turning more than this often over that context are kept
    beta_slow: float = 1.0  # yarn: pairs turning less than this are interpolated by `factor`
    mscale: float | None = None  # yarn: cos/sin magnitude sqrt(1/t); None = 0.1 ln(factor) + 1 (YaRN §3.4)

    def check(self, model_cfg: Any) -> list[str]:
        return rope_problems(self, model_head_dim(model_cfg))


def model_head_dim(model_cfg: Any) -> int | None:
    """head_dim = d_model // n_heads of a model config, or None when that is undefined (reported elsewhere)."""
    d, h = int(model_cfg.d_model), int(model_cfg.n_heads)
    return d // h if h > 0 and d % h == 0 else None


def rotated_dim_problems(impl: str, rot: int, head_dim: int, how: str) -> list[str]:
    """Problems shared by every rotary encoding: the implementation name and an even number of rotated dims."""
    out = []
    if impl not in IMPLS:
        out.append(f"model.positional.impl='{impl}' is not one of {', '.join(IMPLS)}")
    if rot < 2 or rot % 2:
        out.append(
            f"{how} = {rot} rotated dims of head_dim={head_dim} (model.d_model / model.n_heads): "
            "rotary dims come in pairs, so they must be even and at least 2"
        )
    return out


def rope_problems(cfg: RopeConfig, head_dim: int | None) -> list[str]:
    """Every nonsensical combination of rope fields, each message naming the keys involved."""
    p = "model.positional"
    out = [] if cfg.base > 1 else [f"{p}.base={cfg.base} must be > 1"]
    if not 0 < cfg.fraction <= 1:
        out.append(f"{p}.fraction={cfg.fraction} must be in (0, 1]")
    elif head_dim is not None:
        rot = int(head_dim * cfg.fraction)
        out += rotated_dim_problems(cfg.impl, rot, head_dim, f"{p}.fraction={cfg.fraction} gives int({cfg.fraction} "
                                    f"* {head_dim})")
        if cfg.scaling == "ntk" and rot == 2:
            out.append(f"{p}.scaling=ntk needs more than 2 rotated dims (base * factor^(d/(d-2)))")
    if cfg.scaling not in SCALINGS:
        out.append(f"{p}.scaling='{cfg.scaling}' is not one of {', '.join(SCALINGS)}")
    elif cfg.scaling == "none" and cfg.factor != 1:
        out.append(f"{p}.factor={cfg.factor} has no effect with {p}.scaling=none: pick a scaling (linear, ntk, yarn)")
    elif cfg.scaling != "none" and not cfg.factor > 1:
        out.append(f"{p}.factor={cfg.factor} must be > 1 with {p}.scaling={cfg.scaling}")
    yarn = cfg.scaling == "yarn"
    if yarn and cfg.original_max_positions is None:
        out.append(f"{p}.scaling=yarn needs {p}.original_max_positions (the context length the model trained at)")
    if not yarn and cfg.original_max_positions is not None:
        out.append(f"{p}.original_max_positions is only used by {p}.scaling=yarn, not '{cfg.scaling}'")
    if cfg.original_max_positions is not None and cfg.original_max_positions <= 0:
        out.append(f"{p}.original_max_positions={cfg.original_max_positions} must be positive")
    if yarn and not 0 < cfg.beta_slow < cfg.beta_fast:
        out.append(f"{p}.beta_slow={cfg.beta_slow} and {p}.beta_fast={cfg.beta_fast} need 0 < beta_slow < beta_fast")
    if cfg.mscale is not None and (not yarn or cfg.mscale <= 0):
        out.append(f"{p}.mscale={cfg.mscale} is YaRN's attention scale: positive, and only with {p}.scaling=yarn")
    return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension: dimension i pairs with i + D/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotate_half(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate the first R dims of x (..., T, D) by table = stack(cos, sin) of shape (2, T, R); rest untouched."""
    cos, sin = table.unbind(0)  # (T, R) each
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :r], x[..., r:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def apply_complex(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Multiply pairs (x_2i + i x_2i+1) of the first R dims of x (..., T, D) by cis (T, R/2); rest untouched."""
    r = 2 * cis.shape[-1]
    x_rot = x[..., :r] if r < x.shape[-1] else x
    work = x_rot if x_rot.dtype in (torch.float32, torch.float64) else x_rot.float()  # no complex bf16 on CPU
    if work.storage_offset() % 2 or work.stride(-1) != 1 or any(s % 2 for s in work.stride()[:-1]):
        work = work.contiguous()  # view_as_complex needs each pair adjacent and aligned
    xc = torch.view_as_complex(work.unflatten(-1, (-1, 2)))  # (..., T, R/2) complex
    out = torch.view_as_real(xc * cis).flatten(-2).to(x.dtype)  # (..., T, R)
    return out if r == x.shape[-1] else torch.cat((out, x[..., r:]), dim=-1)


def apply_pairs(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_complex` in real arithmetic, for torch.compile (Inductor generates no code for complex ops).

    ``cos_sin``: (T, R/2, 2), the real and imaginary parts of cis.
    """
    r = 2 * cos_sin.shape[-2]
    cos, sin = cos_sin.unbind(-1)  # (T, R/2) each
    x0, x1 = x[..., :r].unflatten(-1, (-1, 2)).unbind(-1)  # (..., T, R/2) each
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)  # (..., T, R)
    return out if r == x.shape[-1] else torch.cat((out, x[..., r:]), dim=-1)


class Rotary(Positional):
    """Base of rotary encodings: per-position tables for q and k, built in float64 and grown on demand.

    Subclasses pass ``inv_freq`` (R/2,) float64 and may override :meth:`magnitudes` (xPos scales q and k).
    The float64 master tables live on the CPU (not buffers: ``model.to(bf16)`` must not round them). Copies in
    float32 (float64 for float64 inputs) on the module's device are derived when the module moves, outside any
    compiled graph, so the hot path only slices them at Python-int offsets.
    """

    def __init__(self, impl: str, head_dim: int, inv_freq: torch.Tensor, block_size: int):
        super().__init__()
        self.impl, self.head_dim, self.inv_freq = impl, head_dim, inv_freq
        self.rot = 2 * inv_freq.numel()
        self._cache_len = 0
        self._device = torch.get_default_device()  # meta under `with torch.device("meta")` (parameter counting)
        self._extend(block_size)

    def magnitudes(self, pos: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Scale of (q, k) pairs at float64 positions (T,): a float or a (T, R/2) tensor. RoPE: 1."""
        return 1.0, 1.0

    def _table(self, angles: torch.Tensor, mag: torch.Tensor | float) -> torch.Tensor:
        if self.impl == "complex":
            cis = torch.polar(torch.ones_like(angles) * mag, angles)  # (T, R/2) complex128
            if self.head_dim % 2 == 0:  # unit factors for the pass-through pairs: one full-width multiply, no cat
                cis = torch.cat((cis, cis.new_ones(cis.shape[0], self.head_dim // 2 - cis.shape[1])), dim=-1)
            return cis  # (T, D/2) or (T, R/2)
        cos_sin = torch.stack((angles.cos() * mag, angles.sin() * mag))  # (2, T, R/2)
        return torch.cat((cos_sin, cos_sin), dim=-1)  # (2, T, R): pair i <-> i + R/2 shares theta_i

    def _extend(self, n_pos: int) -> None:
        pos = torch.arange(n_pos, dtype=torch.float64)
        angles = pos[:, None] * self.inv_freq[None, :]  # (T, R/2)
        mag_q, mag_k = self.magnitudes(pos)
        self._master_q = self._table(angles, mag_q)
        self._master_k = self._master_q if mag_k is mag_q else self._table(angles, mag_k)
        self._cache_len = n_pos
        self._derived: dict[tuple[torch.device, bool], dict[str, torch.Tensor]] = {}
        self._derive(self._device, False)

    def _derive(self, device: torch.device, f64: bool) -> dict[str, torch.Tensor]:
        """The master tables cast to (complex)float32 or float64 on ``device``, plus their real-pair views."""
        dtype = (torch.complex128 if f64 else torch.complex64) if self.impl == "complex" else (
            torch.float64 if f64 else torch.float32)
        out = {"q": self._master_q.to(device, dtype)}
        out["k"] = out["q"] if self._master_k is self._master_q else self._master_k.to(device, dtype)
        if self.impl == "complex":
            out["q_pairs"], out["k_pairs"] = torch.view_as_real(out["q"]), torch.view_as_real(out["k"])
        self._derived[(device, f64)] = out
        return out

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        """Follow ``.to()``/``.cuda()`` moves with the derived tables (outside any graph), keeping their precision."""
        super()._apply(fn, recurse)
        probe = fn(torch.zeros((), device=self._device))
        self._device = probe.device
        self._derive(probe.device, probe.dtype == torch.float64)
        return self

    def reserve(self, n_positions: int) -> None:
        """Grow the tables to cover positions [0, n_positions) (doubling, so growth is rare)."""
        if n_positions > self._cache_len:
            self._extend(max(n_positions, 2 * self._cache_len))

    def tables(self, start: int, length: int, like: torch.Tensor, pairs: bool = False) -> tuple[torch.Tensor, ...]:
        """The q and k tables at positions ``start .. start + length - 1`` for inputs like ``like``.

        ``pairs``: complex tables as (..., 2) real pairs. Python-int offsets: a slice, no gather, no host sync.
        """
        self.reserve(start + length)
        key = (like.device, like.dtype == torch.float64)
        derived = self._derived[key] if key in self._derived else self._derive(*key)
        tq, tk = (derived["q_pairs"], derived["k_pairs"]) if pairs else (derived["q"], derived["k"])
        dim = 1 if self.impl == "rotate_half" else 0  # the position axis of the table
        return tq.narrow(dim, start, length), tk.narrow(dim, start, length)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = q.shape[-2]
        if self.impl == "rotate_half":
            tq, tk = self.tables(start, t, q)
            return apply_rotate_half(q, tq.to(q.dtype)), apply_rotate_half(k, tk.to(k.dtype))
        pairs = torch.compiler.is_compiling()  # same math and layout in real ops, which Inductor can fuse
        tq, tk = self.tables(start, t, q, pairs)
        if pairs:
            return apply_pairs(q, tq.to(q.dtype)), apply_pairs(k, tk.to(k.dtype))
        return apply_complex(q, tq), apply_complex(k, tk)


@POSITIONAL.register("rope", RopeConfig)
class Rope(Rotary):
    """Rotates query/key pairs by pos * theta_i so that scores depend only on m - n; optional partial/scaled."""

    def __init__(self, cfg: RopeConfig, dims: ModelDims):
        rot = int(dims.head_dim * cfg.fraction)
        inv_freq, mscale = scaled_inv_freq(
            rot, cfg.base, cfg.scaling, cfg.factor, cfg.original_max_positions, cfg.beta_fast, cfg.beta_slow
        )
        self.mscale = cfg.mscale if cfg.mscale is not None else mscale
        super().__init__(cfg.impl, dims.head_dim, inv_freq, dims.block_size)

    def magnitudes(self, pos: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        return self.mscale, self.mscale  # YaRN's temperature: scores scale by mscale^2; 1 otherwise
