"""``model/attention``: the SDPA path against the math oracle, GQA/MQA semantics, QK-norm and config checks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from decoderlab.components.attention import ATTENTION, AttnContext, CausalSelfAttention, causal_mask
from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL, Positional
from decoderlab.model import KVCache

H, D_MODEL, T = 4, 32, 12
DIMS = ModelDims(d_model=D_MODEL, n_heads=H, n_layers=2, block_size=16, vocab_size=11)


def attn(seed: int = 0, **cfg) -> CausalSelfAttention:
    torch.manual_seed(seed)
    return ATTENTION.build({"name": "mha", **cfg}, dims=DIMS).eval()


def pair(**cfg) -> tuple[CausalSelfAttention, CausalSelfAttention]:
    """The SDPA module and a math-path twin with the same weights."""
    fast = attn(**cfg, impl="sdpa")
    ref = attn(seed=1, **cfg, impl="math")
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def inputs(t: int = T, seed: int = 2) -> torch.Tensor:
    return torch.randn(2, t, D_MODEL, generator=torch.Generator().manual_seed(seed))


def ctx(t: int = T, positional: Positional | None = None, mask=None, start: int = 0, cache=None) -> AttnContext:
    return AttnContext(positional=positional or Positional(), start=start, mask=mask, cache=cache)


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_sdpa_matches_math_causal(n_kv_heads, qk_norm):
    fast, ref = pair(n_kv_heads=n_kv_heads, qk_norm=qk_norm)
    x = inputs()
    torch.testing.assert_close(fast(x, ctx()), ref(x, ctx()), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_sdpa_matches_math_with_bias_mask(n_kv_heads):
    fast, ref = pair(n_kv_heads=n_kv_heads)
    bias = torch.randn(1, H, T, T, generator=torch.Generator().manual_seed(3))
    mask = bias + causal_mask(T, T)  # (1, H, T, T), the model's layout
    x = inputs()
    torch.testing.assert_close(fast(x, ctx(mask=mask)), ref(x, ctx(mask=mask)), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(fast(x, ctx(mask=mask)), fast(x, ctx()), atol=1e-3)  # the bias is used


def test_math_oracle_is_causal_softmax():
    """The oracle itself: one head, hand-computed softmax over keys <= query."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 4, 8, dtype=torch.float64) for _ in range(3))
    from decoderlab.components.attention import math_attention

    out = math_attention(q, k, v, None)
    for i in range(4):
        w = torch.softmax(q[0, 0, i] @ k[0, 0, : i + 1].T / 8**0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, i], w @ v[0, 0, : i + 1])


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
@pytest.mark.parametrize("pe", ["none", "rope"])
def test_cached_decoding_matches_full(impl, n_kv_heads, pe):
    """A prompt of 5 tokens, then 2 at once, then one at a time through a KV cache: the full forward's outputs."""
    m = attn(n_kv_heads=n_kv_heads, impl=impl, qk_norm=True)
    positional = POSITIONAL.build({"name": pe}, dims=DIMS)
    x = inputs()
    full = m(x, ctx(positional=positional))
    cache, outs, start = KVCache(), [], 0
    for stop in (5, 7, *range(8, T + 1)):
        outs.append(m(x[:, start:stop], ctx(stop - start, positional, start=start, cache=cache)))
        start = stop
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-6, rtol=1e-5)
    assert cache.k.shape == (2, n_kv_heads or H, T, D_MODEL // H)  # the cache holds only the kv heads


def test_gqa_with_all_heads_is_mha():
    a, b = attn(n_kv_heads=None), attn(n_kv_heads=H)
    assert a.qkv.weight.shape == b.qkv.weight.shape
    x = inputs()
    assert torch.equal(a(x, ctx()), b(x, ctx()))


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_gqa_equals_mha_with_shared_kv_heads(n_kv_heads):
    """Query head j reads kv head j // (H / n_kv): an MHA whose k/v heads repeat that way computes the same."""
    gqa, mha = attn(n_kv_heads=n_kv_heads), attn(seed=5)
    hd, rep = D_MODEL // H, H // n_kv_heads
    w_q, w_k, w_v = gqa.qkv.weight.split(gqa.qkv.qkv_split, dim=0)

    def widen(w: torch.Tensor) -> torch.Tensor:  # (n_kv * hd, d) -> (H * hd, d): kv head i serves heads i*rep..
        return w.view(n_kv_heads, hd, D_MODEL).repeat_interleave(rep, dim=0).reshape(D_MODEL, D_MODEL)

    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([w_q, widen(w_k), widen(w_v)]))
        mha.proj.weight.copy_(gqa.proj.weight)
    x = inputs()
    torch.testing.assert_close(gqa(x, ctx()), mha(x, ctx()), atol=1e-6, rtol=1e-5)


def test_mqa_parameter_count():
    hd = D_MODEL // H
    assert attn(n_kv_heads=1).qkv.weight.shape == (D_MODEL + 2 * hd, D_MODEL)
    assert attn(n_kv_heads=2).qkv.weight.shape == (D_MODEL + 4 * hd, D_MODEL)


def test_qk_norm_makes_attention_invariant_to_qk_scale():
    """QK-norm RMS-normalizes q and k per head: scaling W_q and W_k changes nothing (it does without QK-norm)."""
    for qk_norm in (True, False):
        m = attn(qk_norm=qk_norm)
        x = inputs()
        before = m(x, ctx())
        with torch.no_grad():
            m.qkv.weight[: 2 * D_MODEL] *= 5.0  # the W_q and W_k rows (MHA: d_model rows each)
        if qk_norm:
            torch.testing.assert_close(m(x, ctx()), before, atol=1e-5, rtol=1e-4)
        else:
            assert not torch.allclose(m(x, ctx()), before, atol=1e-3)


def test_qk_norm_parameters_and_formula():
    m = attn(qk_norm=True)
    hd = D_MODEL // H
    assert m.q_norm.shape == (hd,) and m.k_norm.shape == (hd,)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in attn().parameters()) + 2 * hd
    captured = {}

    class Spy(Positional):
        def rotate(self, q, k, start):  # overriding is all it takes to be called
            captured["q"], captured["k"] = q, k
            return q, k

    with torch.no_grad():
        m.q_norm.copy_(torch.linspace(0.5, 2.0, hd))
        m(inputs(), ctx(positional=Spy()))
    q = captured["q"] / m.q_norm  # undo the learned scale: what is left has unit RMS per head and position
    torch.testing.assert_close(q.pow(2).mean(-1), torch.ones(q.shape[:-1]), atol=1e-4, rtol=1e-4)
    k = captured["k"]
    torch.testing.assert_close(k.pow(2).mean(-1), torch.ones(k.shape[:-1]), atol=1e-4, rtol=1e-4)


def model_cfg(n_heads: int = 6, d_model: int = 48):
    return OmegaConf.create({"n_heads": n_heads, "d_model": d_model})


def test_check_rejects_indivisible_kv_heads_naming_both_keys():
    problems = ATTENTION.build_config({"name": "mha", "n_kv_heads": 4}).check(model_cfg(6))
    assert len(problems) == 1
    assert "model.n_heads=6" in problems[0] and "model.attention.n_kv_heads=4" in problems[0]
    for ok in (None, 1, 2, 3, 6):
        assert ATTENTION.build_config({"name": "mha", "n_kv_heads": ok}).check(model_cfg(6)) == []


@pytest.mark.parametrize("cfg, key", [
    ({"n_kv_heads": 0}, "model.attention.n_kv_heads"),
    ({"impl": "flash"}, "model.attention.impl"),
    ({"qk_norm": True, "qk_norm_eps": 0.0}, "model.attention.qk_norm_eps"),
])
def test_check_single_key_problems(cfg, key):
    problems = ATTENTION.build_config({"name": "mha", **cfg}).check(model_cfg())
    assert problems and key in problems[0]


def test_model_build_runs_the_check_naming_both_keys():
    from decoderlab.model import Decoder, ModelConfig

    with pytest.raises(ValueError, match=r"model\.n_heads=4 .*model\.attention\.n_kv_heads=3"):
        Decoder(ModelConfig(n_heads=4, d_model=32, attention={"name": "mha", "n_kv_heads": 3}), 8)


def test_composed_config_rejects_indivisible_kv_heads(compose):
    """End to end through Hydra: ``model/attention=gqa model.attention.n_kv_heads=3`` fails validation at start-up."""
    from decoderlab.config import validate
    from decoderlab.errors import ConfigError

    ok = compose(["model/attention=gqa", "model.n_heads=8"])
    bad = compose(["model/attention=gqa", "model.n_heads=8", "model.attention.n_kv_heads=3"])
    validate(ok)
    with pytest.raises(ConfigError, match=r"model\.n_heads=8 is not divisible by model\.attention\.n_kv_heads=3"):
        validate(bad)
