"""decoderlab: config-driven, plugin-driven experiments on GPT-style causal decoders."""

__version__ = "0.1.0"

from decoderlab.plugins import install_finder as _install_finder  # noqa: E402

_install_finder()
