"""Reusable conformance battery for decoderlab components (timm-style: every registered component is tested).

For a plugin author, one command runs the battery on the components their plugin registers::

    python -m decoderlab.testing --plugins path/to/plugins      # add --all to include the core, -m "not slow" ...

It loads the plugins (a plugin that fails to import is an error here, not a warning), then builds a tiny decoder
with each component swapped into the default config and checks: the config passes its own ``check()``; its ``RANGES`` parse and cover every numeric field; output
shapes; causality by future-token perturbation; finite gradients for every trainable parameter; a
``torch.save``/``torch.load(weights_only=True)`` state-dict round trip; determinism under a seed (dropout
included); bf16 forwards (autocast and pure) finite and close to fp32; KV-cached decoding equal to the full
forward; a positional encoding changes the output compared with ``none`` (unless ``position_free``); an
encoding's FlexAttention ``score_mod`` gives its ``bias``'s logits (full and cached); and (marked
``slow``) one graph under ``torch.compile(fullgraph=True)`` forward and backward, at training and cached-generation
shapes (``aot_eager``: the graph-break check; FlexAttention's forward too for a ``score_mod`` encoding), and Inductor's compiled logits equal to eager. ``pytest --pyargs decoderlab.testing`` runs the
same tests over every component, core included. The checks are plain functions in :mod:`.battery`.
"""

from decoderlab.testing.battery import (
    CHECKS,
    COMPILE_CASES,
    CORE_VARIANTS,
    Case,
    all_cases,
    check_compile,
    check_fullgraph,
    check_position_effect,
    check_score_mod,
    compile_cases,
    registered_cases,
)

__all__ = ["CHECKS", "COMPILE_CASES", "CORE_VARIANTS", "Case", "all_cases", "check_compile", "check_fullgraph",
           "check_position_effect", "check_score_mod", "compile_cases", "registered_cases"]
