"""No positional encoding (NoPE; Kazemnejad et al. 2023, https://arxiv.org/abs/2305.19466).

A causal decoder can still infer positions from the causal mask alone; every hook is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.registry import ComponentConfig


@dataclass
class NoPEConfig(ComponentConfig):
    pass


@POSITIONAL.register("none", NoPEConfig)
class NoPE(Positional):
    """No positional signal at all: all three hooks are the identity (order comes only from the causal mask)."""

    position_free = True

    def __init__(self, cfg: NoPEConfig, dims: ModelDims):
        super().__init__()
