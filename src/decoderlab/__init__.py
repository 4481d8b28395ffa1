"""decoderlab: config-driven, plugin-driven experiments on GPT-style causal decoders."""

__version__ = "0.1.0"
