"""The example plugin plugins/dyt.py: discovered from plugins/, selectable, and obeys its formula."""

from __future__ import annotations

import torch

from decoderlab.components import NORM
from decoderlab.components.base import ModelDims
from decoderlab.model import Decoder, ModelConfig
from decoderlab.plugins import load_plugins

DIMS = ModelDims(d_model=8, n_heads=2, n_layers=1, block_size=8, vocab_size=11)


def test_dyt_is_registered_from_the_plugins_folder():
    status = load_plugins()
    assert "dyt" in NORM, status
    assert NORM.get("dyt").source == "decoderlab_plugin_dyt"
    assert any(k.endswith("plugins/dyt.py") and v == "ok" for k, v in status.items())


def test_dyt_formula_and_init():
    load_plugins()
    norm = NORM.build({"name": "dyt", "alpha0": 0.7}, dims=DIMS)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    expected = torch.tanh(0.7 * x) * norm.weight.double() + norm.bias.double()
    torch.testing.assert_close(norm.double()(x), expected)
    # Bounded, unlike a norm of an unbounded input: |DyT(x)| <= |gamma| + |beta| however large x is.
    big = norm(torch.full((1, 8), 1e6))
    assert torch.all(big.abs() <= norm.weight.abs() + norm.bias.abs() + 1e-6)


def test_dyt_trains_in_a_model():
    load_plugins()
    torch.manual_seed(0)
    model = Decoder(ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=8, norm={"name": "dyt"}), 13)
    idx = torch.randint(0, 13, (2, 8))
    loss = model.loss(idx, idx)
    loss.backward()
    alphas = [m.alpha for m in model.modules() if type(m).__name__ == "DyT"]
    assert len(alphas) == 3  # two per pre-norm block + the final norm
    assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in alphas)
