"""decoderlab: config-driven, plugin-driven experiments on GPT-style causal decoders.

The Python API (:mod:`decoderlab.api`), imported on first use so ``import decoderlab`` stays light::

    cfg = decoderlab.compose(["model/positional=rope"]); run = decoderlab.train(cfg)
    model, tokenizer = decoderlab.load(run.run_dir)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "compose", "load", "train"]

from decoderlab.plugins import install_finder as _install_finder  # noqa: E402

_install_finder()


def __getattr__(name: str) -> Any:
    """Lazy re-export of the API: ``decoderlab.train`` imports :mod:`decoderlab.api` (and Hydra) only when used."""
    if name == "train":  # the module decoderlab.train is callable: it is also the API function (see there)
        import importlib

        return importlib.import_module("decoderlab.train")
    if name in __all__:
        from decoderlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'decoderlab' has no attribute {name!r}")
