"""Math properties of the ``model/norm`` options: formulas, invariances, dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.norms import NORM, RMSNorm, ScaleNorm
from decoderlab.registry import RegistryError

D = 24
DIMS = ModelDims(d_model=D, n_heads=4, n_layers=2, block_size=16, vocab_size=11)


def build(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    norm = NORM.build({"name": name, **kw}, dims=DIMS).double()
    with torch.no_grad():  # non-trivial affine parameters, so the formulas are tested with them
        for p in norm.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return norm


def x64(shape=(3, 5, D)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 + 0.5


def test_all_core_norms_registered():
    assert {"layernorm", "rmsnorm", "scalenorm", "none"} <= set(NORM.names())


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm"])
@pytest.mark.parametrize("c", [0.05, 0.5, 7.0, 1e3])
def test_scale_invariant(name, c):
    norm, x = build(name, eps=1e-12), x64()
    torch.testing.assert_close(norm(c * x), norm(x), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_shift_invariant_and_formula(bias):
    norm, x = build("layernorm", bias=bias, eps=1e-5), x64()
    torch.testing.assert_close(norm(x + 3.7), norm(x), rtol=1e-9, atol=1e-9)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    want = (x - mu) / torch.sqrt(var + 1e-5) * norm.weight + (norm.bias if bias else 0)
    torch.testing.assert_close(norm(x), want)
    assert (norm.bias is not None) == bias
    assert sum(p.numel() for p in norm.parameters()) == D * (2 if bias else 1)


def test_rmsnorm_formula_and_not_centring():
    norm, x = build("rmsnorm", eps=1e-6), x64()
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), want)
    assert not torch.allclose(norm(x + 3.7), norm(x), atol=1e-3)  # RMSNorm does not remove the mean


def test_scalenorm_formula_and_init():
    norm, x = build("scalenorm", eps=1e-5), x64()
    torch.testing.assert_close(norm(x), norm.g * x / x.norm(dim=-1, keepdim=True))
    assert ScaleNorm(NORM.default_config("scalenorm"), DIMS).g.item() == pytest.approx(D**0.5)  # paper: sqrt(d)
    assert sum(p.numel() for p in norm.parameters()) == 1  # one scalar
    torch.testing.assert_close(norm(torch.zeros(2, D, dtype=torch.float64)), torch.zeros(2, D, dtype=torch.float64))


def test_none_is_identity_without_parameters():
    norm, x = build("none"), x64()
    assert torch.equal(norm(x), x) and not list(norm.parameters())


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_preserved(name, dtype):
    """Statistics in >= float32 but the output keeps the input dtype (float64 is never downcast: parity tests)."""
    norm = NORM.build({"name": name}, dims=DIMS).to(dtype)
    x = x64().to(dtype)
    assert norm(x).dtype == dtype


def test_rmsnorm_float64_exact():
    """A float64 input is normalized in float64 (a float32 detour would show as ~1e-8 error)."""
    norm, x = RMSNorm(NORM.default_config("rmsnorm"), DIMS).double(), x64() * 1e3 + 1e4
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert (norm(x) - want).abs().max().item() < 1e-13


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm"])
def test_eps_check_names_key(name):
    cfg = NORM.default_config(name, eps=0.0)
    assert any("model.norm.eps" in p for p in cfg.check({}))
    assert NORM.default_config(name).check({}) == []


def test_unknown_norm_lists_names():
    with pytest.raises(RegistryError, match="rmsnorm"):
        NORM.build({"name": "batchnorm"}, dims=DIMS)
