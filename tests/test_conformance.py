"""Runs the conformance battery (:mod:`decoderlab.testing`) over every registered component, plugins included,
and shows that its contract checks catch what they are for: hooks that are written but never called, encodings
with no effect, and forwards that break the graph."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.registry import ComponentConfig
from decoderlab.testing.battery import Case, check_fullgraph, check_position_effect
from decoderlab.testing.test_battery import test_compile, test_component, test_fullgraph

__all__ = ["test_compile", "test_component", "test_fullgraph"]


@dataclass
class _PluginConfig(ComponentConfig):
    pass


class _EmbedOnly(Positional):
    """A plugin-style absolute encoding: overrides ``embed`` and declares nothing else."""

    def __init__(self, cfg, dims):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(dims.block_size, dims.d_model))

    def embed(self, x, start):
        return x + self.table[start:start + x.shape[1]]  # (B, T, d) + (T, d)


class _NoEffect(Positional):
    """A broken encoding: its hook is called but adds nothing."""

    def __init__(self, cfg, dims):
        super().__init__()

    def embed(self, x, start):
        return x


class _Syncs(_EmbedOnly):
    """An encoding that reads a tensor back to Python inside forward (a host sync and a graph break)."""

    def embed(self, x, start):
        shift = int(self.table[0, 0] > 0)  # data-dependent Python int
        return x + self.table[shift:shift + x.shape[1]]


@pytest.fixture
def registered():
    """Register test encodings as a plugin would; unregister afterwards."""
    names = []

    def register(name, cls):
        POSITIONAL.register(name, _PluginConfig)(cls)
        names.append(name)
        return Case({"positional": {"name": name}}, source=__name__)

    yield register
    for name in names:
        POSITIONAL.unregister(name)


def test_overriding_embed_is_enough_for_the_model_to_call_it(registered):
    """Before, an ``embed`` without ``has_embed = True`` was silently skipped: the model trained as ``none``."""
    case = registered("_embed_only", _EmbedOnly)
    model = case.build()
    assert model.positional.embeds and not (model.positional.rotates or model.positional.biases)
    x = torch.randint(0, 37, (2, 16))
    with torch.no_grad():
        used = model(x)
        model.positional = Positional()
        ignored = model(x)
    assert not torch.allclose(used, ignored, atol=1e-4)
    check_position_effect(case)  # and the battery agrees


def test_battery_rejects_an_encoding_without_effect(registered):
    case = registered("_no_effect", _NoEffect)
    with pytest.raises(AssertionError, match=r"_no_effect.*does not change the model's output.*position_free"):
        check_position_effect(case)


def test_position_free_is_declared_not_inferred(registered):
    class _Declared(_NoEffect):
        position_free = True

    check_position_effect(registered("_declared", _Declared))  # passes: the encoding says so


@pytest.mark.parametrize("flag", ["has_embed", "has_rotate", "has_bias", "embeds"])
def test_a_hook_flag_is_refused_with_the_reason(flag):
    with pytest.raises(TypeError, match=f"sets {flag}.*derived from the methods it overrides"):
        type("_Flagged", (Positional,), {flag: True})


def test_score_mod_needs_the_bias_reference():
    with pytest.raises(TypeError, match="score_mod without bias"):
        type("_OnlyFlex", (Positional,), {"score_mod": lambda self, t_q, t_k: None})


@pytest.mark.slow
def test_fullgraph_check_names_the_component_and_the_breaking_line(registered):
    case = registered("_syncs", _Syncs)
    with pytest.raises(AssertionError) as e:
        check_fullgraph(case)
    msg = str(e.value)
    assert "[positional=_syncs from tests.test_conformance]" in msg or "_syncs" in msg.splitlines()[0]
    assert "test_conformance.py" in msg and "shift = int(self.table[0, 0] > 0)" in msg, msg
