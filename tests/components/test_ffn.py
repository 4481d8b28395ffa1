"""Math properties of the ``model/ffn`` options: activations, GLU formulas, the hidden-size rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decoderlab.components.base import ModelDims
from decoderlab.components.ffn import ACTIVATIONS, FFN, hidden_size


def dims(d_model: int = 32, bias: bool = False) -> ModelDims:
    return ModelDims(d_model=d_model, n_heads=4, n_layers=2, block_size=16, vocab_size=11, bias=bias)


def build(cfg: dict, d_model: int = 32, bias: bool = False, device: str = "cpu"):
    torch.manual_seed(0)
    with torch.device(device):  # "meta": parameter counts of wide FFNs without allocating them
        return FFN.build(cfg, dims=dims(d_model, bias))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def x64(d: int = 32) -> torch.Tensor:
    return torch.randn(2, 5, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_all_core_ffns_registered():
    assert {"mlp", "swiglu", "geglu"} <= set(FFN.names())


def test_relu2_is_squared_relu():
    x = torch.linspace(-3, 3, 61)
    assert torch.equal(ACTIVATIONS["relu2"](x), F.relu(x) ** 2)
    assert torch.equal(ACTIVATIONS["relu2"](x), torch.where(x > 0, x * x, torch.zeros_like(x)))


@pytest.mark.parametrize("act, ref", [
    ("relu", F.relu), ("relu2", lambda x: F.relu(x) ** 2), ("gelu", lambda x: F.gelu(x, approximate="tanh")),
    ("gelu_exact", F.gelu), ("silu", lambda x: x * torch.sigmoid(x)),
])
def test_mlp_formula(act, ref):
    ffn, x = build({"name": "mlp", "activation": act}, bias=True).double(), x64()
    want = ref(x @ ffn.fc.weight.T + ffn.fc.bias) @ ffn.proj.weight.T + ffn.proj.bias
    torch.testing.assert_close(ffn(x), want)


@pytest.mark.parametrize("name, gate", [("swiglu", F.silu), ("geglu", F.gelu)])
def test_glu_formula(name, gate):
    """proj(act(x W_gate) * (x W_up)) with W_gate the first half of ``gate_up`` (Shazeer 2020, eq. 5-6)."""
    ffn, x = build({"name": name}).double(), x64()
    h = ffn.hidden
    w_gate, w_up = ffn.gate_up.weight[:h], ffn.gate_up.weight[h:]
    want = (gate(x @ w_gate.T) * (x @ w_up.T)) @ ffn.proj.weight.T
    torch.testing.assert_close(ffn(x), want)


def test_hidden_rule_precedence():
    assert build({"name": "mlp"}).fc.out_features == 128  # 4 x 32
    assert build({"name": "mlp", "multiplier": 2.5}).fc.out_features == 80
    assert build({"name": "mlp", "hidden": 50, "multiplier": 2.5}).fc.out_features == 50  # explicit wins
    assert build({"name": "mlp", "multiplier": 2.6, "multiple_of": 16}).fc.out_features == 80  # 83.2 -> 80
    assert build({"name": "swiglu"}).hidden == 85  # round(2/3 * 4 * 32) = round(85.33)
    assert build({"name": "swiglu", "match_params": False}).hidden == 128
    assert build({"name": "geglu", "hidden": 40}).hidden == 40  # explicit wins over match_params
    assert build({"name": "swiglu", "multiple_of": 8}).hidden == 88  # 85.33 -> nearest multiple of 8


@pytest.mark.parametrize("name", ["swiglu", "geglu"])
@pytest.mark.parametrize("d_model", [32, 48, 64, 96, 128, 256, 384, 512, 768, 1024, 2048, 4096])
@pytest.mark.parametrize("bias", [False, True])
def test_match_params_within_one_percent(name, d_model, bias):
    """A matched gated FFN holds the parameters of the 4x GELU MLP to within 1% (defaults, with and without bias)."""
    target = n_params(build({"name": "mlp"}, d_model, bias, device="meta"))
    got = n_params(build({"name": name}, d_model, bias, device="meta"))
    assert abs(got - target) / target < 0.01, (got, target)


def test_llama_preset_width():
    """multiple_of=256 reproduces Llama-7B's 11008 at d_model=4096 (still within 1% of the 4x MLP)."""
    from decoderlab.components.ffn import GLUConfig

    assert hidden_size(GLUConfig(name="swiglu", multiple_of=256), 4096, gated=True) == 11008


def test_unmatched_glu_has_1_5x_params():
    mlp = n_params(build({"name": "mlp"}, 64, device="meta"))
    glu = n_params(build({"name": "swiglu", "match_params": False}, 64, device="meta"))
    assert glu == mlp * 3 // 2


@pytest.mark.parametrize("name", ["mlp", "swiglu", "geglu"])
def test_position_wise(name):
    """Each position is transformed independently: permuting time permutes the output."""
    ffn, x = build({"name": name}).double(), x64()
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm])


def test_residual_proj_marked():
    for name in ("mlp", "swiglu", "geglu"):
        assert build({"name": name}).proj.is_residual_proj


@pytest.mark.parametrize("cfg, key", [
    ({"name": "mlp", "activation": "tanh"}, "model.ffn.activation"),
    ({"name": "mlp", "hidden": 0}, "model.ffn.hidden"),
    ({"name": "swiglu", "multiplier": -1.0}, "model.ffn.multiplier"),
    ({"name": "geglu", "multiple_of": 0}, "model.ffn.multiple_of"),
])
def test_check_names_key(cfg, key):
    typed = FFN.build_config(cfg)
    assert any(key in p for p in typed.check({}))
    assert FFN.default_config(cfg["name"]).check({}) == []


def test_unknown_activation_is_rejected_when_the_model_is_built():
    from decoderlab.model import Decoder, ModelConfig

    with pytest.raises(ValueError, match=r"model\.ffn\.activation='tanh' is unknown; valid: .*relu2"):
        Decoder(ModelConfig(ffn={"name": "mlp", "activation": "tanh"}), 8)
