"""Registered model and pipeline components, one module (or subpackage) per slot.

Importing this package registers every core component; plugins are loaded by :mod:`decoderlab.plugins`.
"""

from decoderlab.components import attention, ffn, norms, placement, positional, tokenizers  # noqa: F401
from decoderlab.components.attention import ATTENTION
from decoderlab.components.ffn import FFN
from decoderlab.components.norms import NORM
from decoderlab.components.placement import PLACEMENT
from decoderlab.components.positional import POSITIONAL
from decoderlab.components.tokenizers import TOKENIZERS

MODEL_REGISTRIES = {r.group: r for r in (POSITIONAL, ATTENTION, NORM, PLACEMENT, FFN)}

__all__ = ["ATTENTION", "FFN", "NORM", "PLACEMENT", "POSITIONAL", "TOKENIZERS", "MODEL_REGISTRIES"]
