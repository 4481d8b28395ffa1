"""FlexAttention path of ``mha``: encodings with a ``score_mod`` (T5, ALiBi) give the SDPA float-mask reference's
outputs and gradients; ``impl=auto`` picks it only where it trains (CUDA, no attention dropout)."""

from __future__ import annotations

import warnings

import pytest
import torch

import decoderlab.components.attention as attention
from decoderlab.components.attention import AttnContext
from decoderlab.components.positional import POSITIONAL
from decoderlab.model import Decoder, KVCache, ModelConfig

SCORE_MOD = ["alibi", "t5"]


def pair(pe: str, n_kv_heads: int | None = None, device: str = "cpu", **sizes) -> tuple[Decoder, Decoder]:
    """The same weights twice: attention through SDPA's float mask, and through FlexAttention."""
    models = []
    for impl in ("sdpa", "flex"):
        cfg = ModelConfig(**{"n_layers": 2, "n_heads": 4, "d_model": 32, "block_size": 16, **sizes},
                          positional={"name": pe}, attention={"name": "mha", "impl": impl, "n_kv_heads": n_kv_heads})
        torch.manual_seed(0)
        models.append(Decoder(cfg, 37).to(device))
    with torch.no_grad():  # T5's table starts random but a trained one differs per head: make it so
        for m in models:
            for p in m.positional.parameters():
                p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p))
    return models[0], models[1]


def ids(device: str = "cpu", t: int = 16) -> torch.Tensor:
    return torch.randint(0, 37, (2, t), generator=torch.Generator().manual_seed(1)).to(device)


@pytest.mark.parametrize("n_kv_heads", [None, 2])
@pytest.mark.parametrize("pe", SCORE_MOD)
def test_flex_forward_equals_sdpa_on_cpu_with_and_without_cache(pe, n_kv_heads, monkeypatch):
    """CPU runs FlexAttention's forward (no backward in torch 2.13): full sequence and KV-cached decoding."""
    ref, flex = pair(pe, n_kv_heads)
    calls = []
    real = attention.flex
    monkeypatch.setattr(attention, "flex", lambda *a: calls.append(1) or real(*a))
    x = ids()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile": the eager reference
        want = ref.eval()(x)
        got = flex.eval()(x)
        caches = [KVCache() for _ in flex.blocks]
        inc = torch.cat([flex(x[:, :6], caches)] + [flex(x[:, t:t + 1], caches) for t in range(6, 16)], dim=1)
    assert calls, "the flex path was not taken"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inc, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pe", SCORE_MOD)
def test_score_mod_is_the_bias(pe):
    """score_mod(score=0) at every (query, key) pair reproduces bias() below the diagonal, queries offset by a cache."""
    from decoderlab.components.base import ModelDims

    enc = POSITIONAL.build({"name": pe}, dims=ModelDims(d_model=32, n_heads=4, n_layers=1, block_size=16,
                                                        vocab_size=8))
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn_like(p))
        t_q, t_k = 3, 10
        fn = enc.score_mod(t_q, t_k)
        b, h, q, k = torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(4), torch.arange(t_q),
                                    torch.arange(t_k), indexing="ij")
        got = fn(torch.zeros(b.shape), b, h, q, k)  # (1, H, Tq, Tk)
    keep = torch.arange(t_k)[None, :] <= torch.arange(t_k - t_q, t_k)[:, None]  # causal: key <= query position
    torch.testing.assert_close(got[..., keep], enc.bias(t_q, t_k)[..., keep])


def test_t5_score_mod_gradients_reach_the_bucket_table_as_the_bias_does():
    """The score_mod's per-distance lookup is differentiable into the same bucket table: equal gradients."""
    from decoderlab.components.base import ModelDims

    enc = POSITIONAL.build({"name": "t5", "num_buckets": 8, "max_distance": 20},
                           dims=ModelDims(d_model=32, n_heads=4, n_layers=1, block_size=64, vocab_size=8))
    t_q, t_k = 5, 40
    weights = torch.randn(1, 4, t_q, t_k, generator=torch.Generator().manual_seed(0))
    keep = torch.arange(t_k)[None, :] <= torch.arange(t_k - t_q, t_k)[:, None]
    grads = []
    for via_score_mod in (False, True):
        enc.zero_grad()
        if via_score_mod:
            b, h, q, k = torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(4), torch.arange(t_q),
                                        torch.arange(t_k), indexing="ij")
            out = enc.score_mod(t_q, t_k)(torch.zeros(b.shape), b, h, q, k)
        else:
            out = enc.bias(t_q, t_k)
        (out * weights)[..., keep].sum().backward()
        grads.append(enc.rel_bias.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])


def test_auto_takes_flex_only_where_it_trains():
    m, _ = pair("alibi", d_model=64)  # head_dim 16
    mha = m.blocks[0].attn
    mha.impl = "auto"
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    ctx = AttnContext(positional=m.positional)
    assert mha.resolved_impl(ctx, cuda) == "flex" and mha.resolved_impl(ctx, cpu) == "sdpa"
    mha.dropout = 0.1
    assert mha.train().resolved_impl(ctx, cuda) == "sdpa"  # flex has no attention dropout
    assert mha.eval().resolved_impl(ctx, cuda) == "flex"
    bias_only = AttnContext(positional=POSITIONAL.build({"name": "rope"}, dims=m.dims))
    assert mha.resolved_impl(bias_only, cuda) == "sdpa"  # nothing for flex to do
    narrow, _ = pair("alibi", d_model=16)  # head_dim 4: under the 16 FlexAttention's CUDA kernel needs
    assert narrow.blocks[0].attn.eval().resolved_impl(ctx, cuda) == "sdpa"


def test_flex_with_dropout_is_a_config_error():
    with pytest.raises(ValueError, match="model.attention.impl=flex has no attention dropout"):
        Decoder(ModelConfig(dropout=0.1, positional={"name": "t5"}, attention={"name": "mha", "impl": "flex"}), 8)


def test_gqa_through_enable_gqa_is_exact_against_the_math_oracle():
    """SDPA's enable_gqa (no copies of K/V) gives what the oracle's explicit repeat_interleave gives."""
    outs = []
    for impl in ("sdpa", "math"):
        torch.manual_seed(0)
        cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32, block_size=16, positional={"name": "t5"},
                          attention={"name": "mha", "impl": impl, "n_kv_heads": 2})
        m = Decoder(cfg, 37)
        x = ids()
        m.loss(x[:, :-1], x[:, 1:]).backward()
        outs.append((m(x), m.blocks[0].attn.qkv.weight.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-6, rtol=1e-5)


# --- CUDA: deselected without a GPU (tests/conftest.py) ---------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("n_kv_heads", [None, 2])
@pytest.mark.parametrize("pe", SCORE_MOD)
def test_cuda_flex_outputs_and_gradients_equal_sdpa(pe, n_kv_heads):
    ref, flex = pair(pe, n_kv_heads, device="cuda", block_size=256, d_model=64)
    x = ids("cuda", t=256)
    for m in (ref, flex):
        m.train().loss(x[:, :-1], x[:, 1:]).backward()
    torch.testing.assert_close(flex(x), ref(x), atol=2e-4, rtol=2e-4)
    grads = {n: p.grad for n, p in ref.named_parameters()}
    for name, p in flex.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=2e-4, rtol=2e-3, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("pe", SCORE_MOD)
def test_cuda_auto_compiles_flex_in_one_graph(pe):
    """impl=auto on CUDA: the whole model, FlexAttention included, is one Inductor graph, forward and backward."""
    ref, _ = pair(pe, device="cuda", block_size=128, d_model=64)  # head_dim 16: the least flex's kernel takes
    torch._dynamo.reset()
    model = Decoder(ModelConfig(n_layers=2, n_heads=4, d_model=64, block_size=128, positional={"name": pe}), 37)
    model.load_state_dict(ref.state_dict())
    model.cuda().train()
    x = ids("cuda", t=128)
    loss = torch.nn.functional.cross_entropy(
        torch.compile(model, fullgraph=True)(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    torch.testing.assert_close(loss, ref.train().loss(x[:, :-1], x[:, 1:]), atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("pe", SCORE_MOD)
def test_cuda_cached_decoding_and_generation_through_flex_equal_sdpa(pe, monkeypatch):
    """Generation on a GPU: a prompt, then one query at a time over a growing KV cache through FlexAttention
    (compiled flex_attention, a causal block mask per step): the logits of SDPA's full forward, the same tokens."""
    ref, flex = pair(pe, device="cuda", block_size=64, d_model=64)
    calls = []
    real = attention.flex
    monkeypatch.setattr(attention, "flex", lambda *a: calls.append(a[0].shape[-2]) or real(*a))
    x = ids("cuda", t=64)
    with torch.no_grad():
        want = ref.eval()(x)
        caches = [KVCache() for _ in flex.blocks]
        inc = torch.cat([flex.eval()(x[:, :20], caches)] + [flex(x[:, t:t + 1], caches) for t in range(20, 64)], 1)
    assert 1 in calls and 20 in calls, "decoding did not go through FlexAttention"
    torch.testing.assert_close(inc, want, atol=2e-4, rtol=2e-4)
    greedy = [m.generate(x[:, :8], 24, temperature=0) for m in (ref, flex)]  # greedy: no sampling noise
    assert greedy[0].shape == (2, 32) and torch.equal(greedy[0], greedy[1])
