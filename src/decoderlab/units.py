"""Units of the figures decoderlab reports: losses in nats, bits-per-byte from nats."""

from __future__ import annotations

import math

LN2 = math.log(2)  # nats per bit


def bits_per_byte(nats: float, nbytes: int) -> float:
    """Summed cross-entropy ``nats`` over targets spanning ``nbytes`` UTF-8 bytes, in bits per byte."""
    return nats / LN2 / max(nbytes, 1)
