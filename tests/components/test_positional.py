"""Math-property tests of the positional encodings: each fails if its formula is wrong (float64 where exact)."""

from __future__ import annotations

import math

import pytest
import torch

from decoderlab.components.base import ModelDims
from decoderlab.components.positional import POSITIONAL
from decoderlab.components.positional.alibi import alibi_slopes
from decoderlab.components.positional.rope import apply_pairs
from decoderlab.components.positional.rope_scaling import (
    base_inv_freq,
    scaled_inv_freq,
    yarn_correction_range,
)
from decoderlab.components.positional.sinusoidal import sinusoid_table
from decoderlab.components.positional.t5 import t5_bucket
from decoderlab.components.positional.xpos import xpos_zeta

F64 = torch.float64


def build(name: str, head_dim: int = 8, n_heads: int = 1, block_size: int = 16, **fields):
    dims = ModelDims(d_model=head_dim * n_heads, n_heads=n_heads, n_layers=1, block_size=block_size, vocab_size=8)
    return POSITIONAL.build(POSITIONAL.default_config(name, **fields), dims=dims)


def rotated(pe, x: torch.Tensor, positions) -> torch.Tensor:
    """x (D,) placed at each position, rotated as a query: (T, D)."""
    pos = torch.as_tensor(list(positions))
    q = x.expand(1, 1, int(pos.max()) + 1, x.numel()).contiguous()  # (B=1, H=1, max + 1, D): positions 0..max
    return pe.rotate(q, q, 0)[0][0, 0][pos]


def scores(pe, q: torch.Tensor, k: torch.Tensor, n_pos: int) -> torch.Tensor:
    """S[m, n] = rot_q(q, m) . rot_k(k, n) over positions 0..n_pos-1: (T, T)."""
    qs = q.expand(1, 1, n_pos, q.numel()).contiguous()  # (1, 1, T, D)
    ks = k.expand(1, 1, n_pos, k.numel()).contiguous()
    rq, rk = pe.rotate(qs, ks, 0)
    return rq[0, 0] @ rk[0, 0].T


def interleave_perm(rot: int, dim: int) -> torch.Tensor:
    """Index map from the rotate_half layout (i <-> i + R/2) to the complex one (2i <-> 2i+1); rest unchanged."""
    half = torch.arange(rot // 2)
    return torch.cat((torch.stack((half, half + rot // 2), dim=1).flatten(), torch.arange(rot, dim)))


# --- sinusoidal -----------------------------------------------------------------------------------------------


def test_sinusoidal_matches_closed_form():
    d, n = 10, 12
    pe = sinusoid_table(n, d, 10000.0).double()
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000.0 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 17])
def test_sinusoidal_shift_is_one_fixed_block_rotation(k):
    """PE(pos + k) = M_k PE(pos) with M_k block-diagonal [[cos kw, sin kw], [-sin kw, cos kw]], w = base^(-2i/d)."""
    d, n = 8, 40
    pe = sinusoid_table(n + k, d, 10000.0).double()
    w = base_inv_freq(d, 10000.0) * k
    m = torch.zeros(d, d, dtype=F64)
    for i in range(d // 2):  # built from k alone: no position enters M_k
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[w[i].cos(), w[i].sin()], [-w[i].sin(), w[i].cos()]])
    torch.testing.assert_close(pe[k:], pe[:n] @ m.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(m @ m.T, torch.eye(d, dtype=F64))  # a rotation: norms of PE rows are kept


def test_sinusoidal_embed_scales_tokens_then_adds_table():
    pe = build("sinusoidal", head_dim=8)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(pe.embed(x, 0), x * math.sqrt(8) + sinusoid_table(5, 8, 10000.0))
    torch.testing.assert_close(pe.embed(x, 30), x * math.sqrt(8) + sinusoid_table(35, 8, 1e4)[30:])


# --- rotary: rope (all impls, partial, scaled) and xpos ------------------------------------------------------

ROTARY = [
    ("rope", {"impl": "complex"}), ("rope", {"impl": "rotate_half"}),
    ("rope", {"impl": "complex", "fraction": 0.5}), ("rope", {"impl": "rotate_half", "fraction": 0.5}),
    ("rope", {"scaling": "yarn", "factor": 4.0, "original_max_positions": 8}),
    ("xpos", {"impl": "complex", "scale_base": 8.0}), ("xpos", {"impl": "rotate_half", "scale_base": 8.0}),
]
ROTARY_IDS = [f"{n}-" + "-".join(f"{k}={v}" for k, v in f.items()) for n, f in ROTARY]


@pytest.mark.parametrize("name,fields", ROTARY, ids=ROTARY_IDS)
def test_rotary_scores_depend_only_on_distance(name, fields):
    torch.manual_seed(0)
    pe = build(name, **fields)
    q, k = torch.randn(8, dtype=F64), torch.randn(8, dtype=F64)
    s = scores(pe, q, k, 24)  # (T, T), past the 16 tabulated positions too
    for shift in (1, 5, 11):
        torch.testing.assert_close(s[shift:, shift:], s[:-shift, :-shift], atol=1e-10, rtol=1e-10)
    assert not torch.allclose(s[3, 0], s[3, 1])  # ... and does depend on the distance


@pytest.mark.parametrize("impl", ["complex", "rotate_half"])
def test_rope_position_zero_is_identity_and_norms_are_kept(impl):
    torch.manual_seed(0)
    pe = build("rope", impl=impl)
    x = torch.randn(8, dtype=F64)
    out = rotated(pe, x, range(20))
    torch.testing.assert_close(out[0], x, atol=0, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1), x.norm().expand(20), atol=1e-12, rtol=0)
    pairs = (out.view(20, 4, 2) if impl == "complex" else out.view(20, 2, 4).transpose(1, 2)).norm(dim=-1)
    x_pairs = (x.view(4, 2) if impl == "complex" else x.view(2, 4).T).norm(dim=-1)
    torch.testing.assert_close(pairs, x_pairs.expand(20, 4), atol=1e-12, rtol=0)  # each pair is a rotation


@pytest.mark.parametrize("name,fields", [("rope", {}), ("rope", {"fraction": 0.5}), ("xpos", {"scale_base": 8.0})])
def test_rotate_half_equals_complex_up_to_the_pair_permutation(name, fields):
    torch.manual_seed(0)
    rh, cx = build(name, impl="rotate_half", **fields), build(name, impl="complex", **fields)
    perm = interleave_perm(rh.rot, 8)
    q, k = torch.randn(8, dtype=F64), torch.randn(8, dtype=F64)
    torch.testing.assert_close(rotated(cx, q[perm], range(12)), rotated(rh, q, range(12))[:, perm])
    torch.testing.assert_close(scores(cx, q[perm], k[perm], 12), scores(rh, q, k, 12))  # same q.k scores


@pytest.mark.parametrize("name,fields", [("rope", {}), ("rope", {"fraction": 0.5}), ("xpos", {"scale_base": 8.0})])
def test_real_pair_form_used_under_compile_equals_the_complex_form(name, fields):
    torch.manual_seed(0)
    pe = build(name, **fields)
    q, k = torch.randn(2, 1, 12, 8, dtype=F64), torch.randn(2, 1, 12, 8, dtype=F64)
    tq, tk = pe.tables(3, 12, q, pairs=True)  # (T, D/2, 2) at positions 3..14: cis as (cos, sin)
    want_q, want_k = pe.rotate(q, k, 3)
    torch.testing.assert_close(apply_pairs(q, tq), want_q, atol=1e-14, rtol=0)
    torch.testing.assert_close(apply_pairs(k, tk), want_k, atol=1e-14, rtol=0)


def test_partial_rotary_leaves_the_pass_through_dims_untouched():
    torch.manual_seed(0)
    for impl in ("complex", "rotate_half"):
        part, full4 = build("rope", impl=impl, fraction=0.5), build("rope", impl=impl, head_dim=4)
        x = torch.randn(8, dtype=F64)
        out = rotated(part, x, range(10))
        torch.testing.assert_close(out[:, 4:], x[4:].expand(10, 4), atol=0, rtol=0)
        torch.testing.assert_close(out[:, :4], rotated(full4, x[:4], range(10)))  # = RoPE on the first R dims


def test_linear_scaling_is_rope_at_position_over_factor():
    torch.manual_seed(0)
    lin, plain = build("rope", scaling="linear", factor=4.0), build("rope")
    x = torch.randn(8, dtype=F64)
    torch.testing.assert_close(rotated(lin, x, range(0, 40, 4)), rotated(plain, x, range(10)))
    torch.testing.assert_close(scaled_inv_freq(8, 1e4, "linear", 4.0)[0], base_inv_freq(8, 1e4) / 4)


def test_ntk_scales_the_base_by_factor_to_the_d_over_d_minus_2():
    d, factor = 16, 8.0
    inv, mscale = scaled_inv_freq(d, 10000.0, "ntk", factor)
    torch.testing.assert_close(inv, base_inv_freq(d, 10000.0 * factor ** (d / (d - 2))))
    plain = base_inv_freq(d, 10000.0)
    assert inv[0] == plain[0] == 1.0 and mscale == 1.0  # the fastest pair is unchanged ...
    assert inv[-1].item() == pytest.approx(plain[-1].item() / factor, rel=1e-12)  # the slowest interpolated by s


# The last case puts both ends of the ramp at fractional pair indices (20.94, 45.03): floor/ceil matter.
YARN_CASES = [(32, 1.0, 4.0, 64), (64, 0.5, 8.0, 128), (16, 1.0, 2.0, 32), (128, 1.0, 16.0, 4096)]


@pytest.mark.parametrize("head_dim,fraction,factor,orig", YARN_CASES)
def test_yarn_matches_hf_transformers(head_dim, fraction, factor, orig):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": factor, "original_max_position_embeddings": orig,
              "partial_rotary_factor": fraction}
    hf_cfg = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                         max_position_embeddings=int(orig * factor), rope_parameters=params)
    hf_inv, hf_attn = ROPE_INIT_FUNCTIONS["yarn"](hf_cfg, "cpu")
    inv, mscale = scaled_inv_freq(int(head_dim * fraction), 10000.0, "yarn", factor, orig)
    torch.testing.assert_close(inv, hf_inv.double(), rtol=1e-6, atol=0)  # HF computes in float32
    assert mscale == pytest.approx(hf_attn, rel=1e-12)
    # ... and the module applies exactly these: rotation by pos * inv_freq, magnitude mscale on q and k.
    pe = build("rope", head_dim=head_dim, scaling="yarn", factor=factor, original_max_positions=orig,
               fraction=fraction)
    x = torch.zeros(head_dim, dtype=F64)
    x[0] = 1.0  # pair 0 = (1, 0) -> mscale * (cos(p inv_0), sin(p inv_0))
    out = rotated(pe, x, [5])[0]
    torch.testing.assert_close(out[:2], mscale * torch.stack(((5 * inv[0]).cos(), (5 * inv[0]).sin())))


def test_yarn_keeps_fast_pairs_and_interpolates_slow_pairs():
    d, orig, factor = 64, 2048, 4.0
    inv, _ = scaled_inv_freq(d, 10000.0, "yarn", factor, orig)
    plain = base_inv_freq(d, 10000.0)
    low, high = yarn_correction_range(d, 10000.0, orig, 32.0, 1.0)
    assert 0 < low < high < d // 2
    torch.testing.assert_close(inv[:low], plain[:low], atol=0, rtol=0)  # > 32 turns in context: unchanged
    torch.testing.assert_close(inv[high:], plain[high:] / factor, atol=0, rtol=1e-15)  # < 1 turn: pos / s
    wavelengths = 2 * math.pi / plain
    assert (wavelengths[:low] < orig / 32).all() and (wavelengths[high:] > orig).all()
    ratio = inv / plain
    assert (ratio[1:] <= ratio[:-1]).all()  # the ramp is monotone between the two


def test_yarn_fast_pairs_rotate_as_plain_rope_inside_and_outside_the_context():
    torch.manual_seed(0)
    pe = build("rope", head_dim=64, scaling="yarn", factor=4.0, original_max_positions=2048, block_size=256)
    plain = build("rope", head_dim=64, block_size=256)
    low, _ = yarn_correction_range(64, 10000.0, 2048, 32.0, 1.0)
    assert low == 8
    x = torch.randn(64, dtype=F64)
    got, want = rotated(pe, x, range(0, 256, 7)) / pe.mscale, rotated(plain, x, range(0, 256, 7))
    torch.testing.assert_close(got[:, : 2 * low], want[:, : 2 * low])


def test_xpos_score_is_rope_score_decayed_per_pair():
    """q.k = sum_i zeta_i^((m-n)/B) * (RoPE score of pair i): the xPos law (Sun et al. 2022)."""
    torch.manual_seed(0)
    pe, rope = build("xpos", scale_base=8.0), build("rope")
    zeta = xpos_zeta(8, 0.4)
    want_zeta = torch.tensor([(2 * i + 0.4 * 8) / (1.4 * 8) for i in range(4)], dtype=F64)  # torchscale's form
    torch.testing.assert_close(zeta, want_zeta, atol=1e-15, rtol=0)
    assert (zeta < 1).all() and (zeta[1:] > zeta[:-1]).all()  # decays fastest on the fastest pairs
    q, k = torch.randn(8, dtype=F64), torch.randn(8, dtype=F64)
    for m, n in [(5, 2), (9, 9), (15, 0), (20, 11)]:
        pair_scores = []
        for i in range(4):  # RoPE's score restricted to pair i (complex layout: dims 2i, 2i+1)
            mask = torch.zeros(8, dtype=F64)
            mask[2 * i : 2 * i + 2] = 1
            pair_scores.append(scores(rope, q * mask, k * mask, 24)[m, n])
        want = sum(zeta[i] ** ((m - n) / 8.0) * pair_scores[i] for i in range(4))
        torch.testing.assert_close(scores(pe, q, k, 24)[m, n], want)


# --- ALiBi ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [1, 2, 4, 8, 16, 32])
def test_alibi_slopes_are_geometric_for_powers_of_two(n_heads):
    want = [2.0 ** (-8.0 / n_heads * (i + 1)) for i in range(n_heads)]
    assert alibi_slopes(n_heads) == pytest.approx(want, rel=1e-12)


def test_alibi_slopes_for_other_head_counts_follow_the_paper():
    # 6 heads: the 4-head sequence, then every other slope of the 8-head one (its odd powers of 2^-1).
    assert alibi_slopes(6) == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3], rel=1e-12)
    assert alibi_slopes(12) == pytest.approx([2 ** (-i) for i in range(1, 9)] + [2**-0.5, 2**-1.5, 2**-2.5,
                                                                                  2**-3.5], rel=1e-12)


@pytest.mark.parametrize("n_heads", range(1, 17))
def test_alibi_slopes_match_bloom(n_heads):
    pytest.importorskip("transformers")
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    alibi = build_alibi_tensor(torch.ones(1, 3), n_heads, torch.float64)  # (H, 1, T) = slope_h * position
    assert alibi_slopes(n_heads) == pytest.approx(alibi[:, 0, 1].tolist(), rel=1e-6)


def test_alibi_bias_is_minus_slope_times_distance():
    pe = build("alibi", head_dim=2, n_heads=4)
    pos = torch.arange(10)
    b = pe.bias(10, 10)  # (1, H, T, T)
    assert b.shape == (1, 4, 10, 10)
    dist = (pos[:, None] - pos[None, :]).double()
    for h, slope in enumerate(alibi_slopes(4)):
        lower = torch.tril(torch.ones(10, 10, dtype=torch.bool))
        torch.testing.assert_close(b[0, h].double()[lower], (-slope * dist)[lower])
    d2 = b[0, :, 5, :6].double().diff(n=2, dim=-1)  # linear in distance: zero second difference
    torch.testing.assert_close(d2, torch.zeros_like(d2), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe.bias(2, 12), build("alibi", 2, 4).bias(12, 12)[:, :, -2:])  # last 2 queries


# --- T5 -------------------------------------------------------------------------------------------------------


def test_t5_buckets_exact_then_logarithmic_then_last():
    nb, md = 32, 128
    d = torch.arange(0, 400)
    b = t5_bucket(d, nb, md)
    assert b[:16].tolist() == list(range(16))  # one bucket per distance below num_buckets / 2
    for n in range(16, md):
        assert b[n] == min(16 + int(math.log(n / 16) / math.log(md / 16) * 16), nb - 1), n
    assert (b[md:] == nb - 1).all()  # everything beyond max_distance shares the last bucket
    assert (b.diff() >= 0).all()  # monotone non-decreasing in distance


def test_t5_buckets_are_causal_and_match_hf():
    pytest.importorskip("transformers")
    from transformers.models.t5.modeling_t5 import T5Attention

    q = torch.arange(200)[:, None]
    k = torch.arange(200)[None, :]
    ours = t5_bucket(q - k, 32, 128)
    assert (ours[k.expand(200, 200) > q] == 0).all()  # a future key never gets a bucket of its own
    hf = T5Attention._relative_position_bucket(k - q, bidirectional=False, num_buckets=32, max_distance=128)
    assert torch.equal(ours, hf)


# --- none, learned --------------------------------------------------------------------------------------------


def test_none_is_the_identity():
    pe = build("none")
    x, q, k = torch.randn(2, 5, 8), torch.randn(2, 1, 5, 8), torch.randn(2, 1, 5, 8)
    assert not (pe.embeds or pe.rotates or pe.biases or pe.has_score_mod) and pe.max_positions is None
    assert pe.position_free
    assert pe.embed(x, 0) is x and pe.rotate(q, k, 0) == (q, k) and pe.bias(5, 5) is None
    assert list(pe.state_dict()) == []
