"""``model/placement``: each block's wiring exactly as drawn, identities, and DeepNorm's constants and init."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from decoderlab.components.base import ModelDims
from decoderlab.components.norms import NORM
from decoderlab.components.placement import PLACEMENT, deepnorm_constants
from decoderlab.model import Decoder, ModelConfig

D = 16
DIMS = ModelDims(d_model=D, n_heads=4, n_layers=3, block_size=16, vocab_size=11)


class StubAttn(nn.Module):
    """attn(x) = fn(x), recording its input."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.seen = fn, []

    def forward(self, x, ctx):
        self.seen.append(x)
        return self.fn(x)


class StubFFN(StubAttn):
    def forward(self, x):
        self.seen.append(x)
        return self.fn(x)


class AffineNorm(nn.Module):
    """A distinguishable stand-in for a norm: x * s + t with a different (s, t) per instance."""

    def __init__(self, i: int):
        super().__init__()
        self.s, self.t = 1.5 + i, 0.25 * (i + 1)

    def forward(self, x):
        return x * self.s + self.t


def stub_block(name: str, attn_fn=torch.tanh, ffn_fn=lambda x: 0.5 * x**2, norm=None, dims=DIMS, **cfg):
    count = iter(range(100))
    factory = norm or (lambda: AffineNorm(next(count)))
    return PLACEMENT.build({"name": name, **cfg}, dims=dims, layer_idx=0, attn=StubAttn(attn_fn),
                           ffn=StubFFN(ffn_fn), norm=factory)


def real_norm(name: str):
    """A factory of fresh registered norms at their init, in float64."""
    return lambda: NORM.build({"name": name}, dims=DIMS).double()


def expected(name: str, b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The drawings in placement.py, written out with the block's own norms."""
    a, f = b.attn.fn, b.ffn.fn
    if name == "pre":
        h = x + a(b.norm1(x))
        return h + f(b.norm2(h))
    if name == "post":
        h = b.norm1(x + a(x))
        return b.norm2(h + f(h))
    if name == "sandwich":
        h = x + b.norm1_out(a(b.norm1(x)))
        return h + b.norm2_out(f(b.norm2(h)))
    if name == "parallel":
        return x + a(b.norm(x)) + f(b.norm(x))
    if name == "deepnorm":
        h = b.norm1(b.alpha * x + a(x))
        return b.norm2(b.alpha * h + f(h))
    raise AssertionError(name)


ALL = ["pre", "post", "sandwich", "parallel", "deepnorm"]
N_NORMS = {"pre": 2, "post": 2, "sandwich": 4, "parallel": 1, "deepnorm": 2}
FINAL_NORM = {"pre": True, "post": False, "sandwich": True, "parallel": True, "deepnorm": False}


def x64() -> torch.Tensor:
    return torch.randn(2, 5, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_all_core_placements_registered():
    assert set(ALL) <= set(PLACEMENT.names())


@pytest.mark.parametrize("name", ALL)
def test_wiring_as_drawn(name):
    b, x = stub_block(name), x64()
    torch.testing.assert_close(b(x, None), expected(name, b, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_norm_count_and_final_norm(name):
    b = stub_block(name)
    assert sum(isinstance(m, AffineNorm) for m in b.modules()) == N_NORMS[name]
    assert b.final_norm is FINAL_NORM[name]
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=D, block_size=8, placement={"name": name})
    assert isinstance(Decoder(cfg, 11).norm_f, nn.Identity) is not FINAL_NORM[name]


def test_parallel_feeds_one_normalized_input_to_both():
    b, x = stub_block("parallel"), x64()
    b(x, None)
    assert b.attn.seen[0] is b.ffn.seen[0]  # the same tensor: one shared norm, computed once


@pytest.mark.parametrize("name", ["pre", "sandwich", "parallel"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "scalenorm", "none"])
def test_identity_when_sublayers_return_zero(name, norm):
    """Residual wiring: zero sublayers leave the stream untouched (real norms at init: norm(0) = 0)."""
    zero = torch.zeros_like
    b, x = stub_block(name, attn_fn=zero, ffn_fn=zero, norm=real_norm(norm)), x64()
    assert torch.equal(b(x, None), x)


@pytest.mark.parametrize("name", ["post", "deepnorm"])
def test_post_norms_are_not_identity(name):
    b, x = stub_block(name, attn_fn=torch.zeros_like, ffn_fn=torch.zeros_like, norm=real_norm("layernorm")), x64()
    out = b(x, None)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5, dtype=torch.float64))  # normalized output
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("n_layers", [1, 2, 6, 12, 18, 24, 100, 1000])
def test_deepnorm_constants_follow_paper(n_layers):
    """DeepNet decoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4)."""
    dims = ModelDims(d_model=D, n_heads=4, n_layers=n_layers, block_size=16, vocab_size=11)
    b = stub_block("deepnorm", dims=dims)
    assert b.alpha == pytest.approx((2 * n_layers) ** 0.25, rel=1e-12)
    assert b.beta == pytest.approx((8 * n_layers) ** -0.25, rel=1e-12)
    assert deepnorm_constants(n_layers) == (b.alpha, b.beta)


def test_deepnorm_closed_forms():
    alpha, beta = deepnorm_constants(18)  # 2N = 36, 8N = 144
    assert alpha == pytest.approx(math.sqrt(6)) and beta == pytest.approx(1 / math.sqrt(12))


def test_deepnorm_overrides():
    b = stub_block("deepnorm", alpha=1.5, beta=0.5)
    assert (b.alpha, b.beta) == (1.5, 0.5)


def xavier_std(w: torch.Tensor) -> float:
    return math.sqrt(2.0 / (w.shape[0] + w.shape[1]))


def weight_blocks(model: Decoder) -> dict[str, torch.Tensor]:
    b = model.blocks[0]
    w_q, w_k, w_v = b.attn.qkv.weight.split(b.attn.qkv.qkv_split, dim=0)
    ffn = [m.weight for m in b.ffn.modules() if isinstance(m, nn.Linear)]
    return {"q": w_q, "k": w_k, "v": w_v, "out": b.attn.proj.weight, "ffn_in": ffn[0], "ffn_out": ffn[1]}


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
@pytest.mark.parametrize("cfg", [{}, {"beta": 0.5}])
def test_deepnorm_init_scales_v_out_ffn_by_beta(ffn, cfg):
    """deepnorm_init (DeepNet Fig. 2): Xavier-normal, gain beta for ffn/v_proj/out_proj, gain 1 for q/k."""
    torch.manual_seed(0)
    mcfg = ModelConfig(n_layers=6, n_heads=4, d_model=64, block_size=8, placement={"name": "deepnorm", **cfg},
                       attention={"name": "mha", "n_kv_heads": 2}, ffn={"name": ffn})
    model = Decoder(mcfg, 11)
    beta = cfg.get("beta", (8 * 6) ** -0.25)
    assert model.blocks[0].beta == beta
    gain = {"q": 1.0, "k": 1.0, "v": beta, "out": beta, "ffn_in": beta, "ffn_out": beta}
    for name, w in weight_blocks(model).items():
        want = gain[name] * xavier_std(w)
        assert w.std().item() == pytest.approx(want, rel=0.1), name
        assert abs(w.mean().item()) < 0.2 * want, name


def test_deepnorm_init_differs_from_default_init():
    torch.manual_seed(0)
    pre = Decoder(ModelConfig(n_layers=6, n_heads=4, d_model=64, block_size=8), 11)
    assert weight_blocks(pre)["v"].std().item() == pytest.approx(0.02, rel=0.1)  # GPT-2 init, untouched


def test_deepnorm_rejects_no_norm_naming_both_keys():
    cfg = PLACEMENT.build_config({"name": "deepnorm"})
    problems = cfg.check(OmegaConf.create({"norm": {"name": "none"}}))
    assert problems and "model.placement=deepnorm" in problems[0] and "model.norm=none" in problems[0]
    assert cfg.check(OmegaConf.create({"norm": {"name": "layernorm"}})) == []
    assert any("model.placement.alpha" in p for p in PLACEMENT.build_config(
        {"name": "deepnorm", "alpha": -1.0}).check(OmegaConf.create({"norm": {"name": "rmsnorm"}})))
