"""Parity with an independent implementation: HF ``transformers`` reference models (random init, no download).

Each test builds a tiny reference from its config, perturbs every parameter (so LayerNorm gains/biases are not
the trivial 1/0), copies the weights into a decoderlab model built from components, and compares the logits of
both in float64: max |diff| <= 1e-5. Measured: ~1e-15 for GPT-1/GPT-2 (the masks differ in form, -1e4 / min-float /
-inf, and all give exactly zero weight in float64); ~5e-7 for Llama, because both implementations build their RoPE
cos/sin tables in float32 (HF does so by design, whatever the model dtype).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from decoderlab.components.positional.rope import RopeConfig  # noqa: E402
from decoderlab.components.positional.t5 import t5_bucket  # noqa: E402
from decoderlab.model import Decoder, ModelConfig  # noqa: E402

V, T, D, H, L = 53, 16, 32, 4, 2
TOL = 1e-5


def perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    return model


def put(dst: torch.Tensor, src: torch.Tensor) -> None:
    assert dst.shape == src.shape, (dst.shape, src.shape)
    with torch.no_grad():
        dst.copy_(src)


def put_linear(dst: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    put(dst.weight, weight)
    if bias is not None:
        put(dst.bias, bias)


def put_conv1d(dst: nn.Linear, src: nn.Module) -> None:
    """HF's GPT Conv1D stores (in, out): the transpose of nn.Linear's weight."""
    put_linear(dst, src.weight.T, src.bias)


def put_norm(dst: nn.Module, src: nn.Module) -> None:
    put(dst.weight, src.weight)
    if getattr(src, "bias", None) is not None:
        put(dst.bias, src.bias)


def compare(ours: Decoder, ref: nn.Module) -> None:
    ids = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    ours, ref = ours.double().eval(), ref.double().eval()
    with torch.no_grad():
        a, b = ours(ids), ref(input_ids=ids).logits
    assert a.shape == b.shape == (3, T, V)
    diff = (a - b).abs().max().item()
    assert diff <= TOL, f"max |logits diff| = {diff:.3g}"
    assert b.std().item() > 0.1  # the comparison is not between two near-constant outputs


def gpt_model(placement: str, activation: str) -> Decoder:
    cfg = ModelConfig(n_layers=L, n_heads=H, d_model=D, block_size=T, bias=True, tie_embeddings=True,
                      positional={"name": "learned"}, placement={"name": placement},
                      norm={"name": "layernorm", "eps": 1e-5}, ffn={"name": "mlp", "activation": activation})
    return Decoder(cfg, V)


def test_gpt1_post_norm_parity():
    """OpenAIGPTLMHeadModel: learned positions, post-norm blocks, tanh GELU, no final norm, tied head."""
    hf_cfg = transformers.OpenAIGPTConfig(vocab_size=V, n_positions=T, n_embd=D, n_layer=L, n_head=H, afn="gelu",
                                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    ref = perturb_(transformers.OpenAIGPTLMHeadModel(hf_cfg))
    ours = gpt_model("post", "gelu")
    tr = ref.transformer
    put(ours.tok_emb.weight, tr.tokens_embed.weight)
    put(ours.positional.wpe.weight, tr.positions_embed.weight)
    for blk, hb in zip(ours.blocks, tr.h):
        put_conv1d(blk.attn.qkv, hb.attn.c_attn)
        put_conv1d(blk.attn.proj, hb.attn.c_proj)
        put_norm(blk.norm1, hb.ln_1)
        put_conv1d(blk.ffn.fc, hb.mlp.c_fc)
        put_conv1d(blk.ffn.proj, hb.mlp.c_proj)
        put_norm(blk.norm2, hb.ln_2)
    assert isinstance(ours.norm_f, nn.Identity)  # GPT-1 has no final norm: post-norm output is normalized
    compare(ours, ref)


def test_gpt2_pre_norm_parity():
    """GPT2LMHeadModel: learned positions, pre-norm blocks with biases, tanh GELU, final LayerNorm, tied head."""
    hf_cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=D, n_layer=L, n_head=H,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, layer_norm_epsilon=1e-5, attn_implementation="eager",
                                     bos_token_id=0, eos_token_id=0)
    ref = perturb_(transformers.GPT2LMHeadModel(hf_cfg))
    ours = gpt_model("pre", "gelu")
    tr = ref.transformer
    put(ours.tok_emb.weight, tr.wte.weight)
    put(ours.positional.wpe.weight, tr.wpe.weight)
    for blk, hb in zip(ours.blocks, tr.h):
        put_norm(blk.norm1, hb.ln_1)
        put_conv1d(blk.attn.qkv, hb.attn.c_attn)
        put_conv1d(blk.attn.proj, hb.attn.c_proj)
        put_norm(blk.norm2, hb.ln_2)
        put_conv1d(blk.ffn.fc, hb.mlp.c_fc)
        put_conv1d(blk.ffn.proj, hb.mlp.c_proj)
    put_norm(ours.norm_f, tr.ln_f)
    compare(ours, ref)


def rope_config() -> dict:
    """RoPE in HF's rotate_half layout when the option exists (else the default, made to match by permutation)."""
    fields = {f.name for f in dataclasses.fields(RopeConfig)}
    return {"name": "rope", "impl": "rotate_half"} if "impl" in fields else {"name": "rope"}


def rope_row_order(model: Decoder, head_dim: int) -> torch.Tensor:
    """Our q/k row order within a head that matches HF's rotate_half pairing (i with i + D/2).

    Probe: rotate e_0 by one position. rotate_half moves it into dimension D/2 (identity order); an interleaved
    (complex) layout moves it into dimension 1, and then our row 2i is HF's row i and row 2i+1 is HF's i + D/2.
    """
    e0 = torch.zeros(1, 1, 1, head_dim, dtype=torch.float64)
    e0[..., 0] = 1.0
    q, _ = model.positional.rotate(e0, e0.clone(), 1)  # position 1
    half = torch.arange(head_dim // 2)
    if abs(q[0, 0, 0, head_dim // 2].item()) > 1e-6:
        return torch.arange(head_dim)
    assert abs(q[0, 0, 0, 1].item()) > 1e-6, "unknown RoPE pairing"
    return torch.stack([half, half + head_dim // 2], dim=1).flatten()


def llama_pair(n_kv: int = 2, hidden: int = 56):
    hf_cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=D, intermediate_size=hidden, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=n_kv, max_position_embeddings=T, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attn_implementation="eager")
    ref = perturb_(transformers.LlamaForCausalLM(hf_cfg))
    cfg = ModelConfig(n_layers=L, n_heads=H, d_model=D, block_size=T, bias=False, tie_embeddings=False,
                      positional=rope_config(), attention={"name": "mha", "n_kv_heads": n_kv},
                      placement={"name": "pre"}, norm={"name": "rmsnorm", "eps": 1e-6},
                      ffn={"name": "swiglu", "hidden": hidden})
    return Decoder(cfg, V).double(), ref


def per_head(w: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    hd = order.numel()
    return w.view(-1, hd, w.shape[-1])[:, order].reshape(w.shape)  # (heads * hd, d_model), rows reordered


@pytest.mark.parametrize("n_kv", [2, 1, H])
def test_llama_parity(n_kv):
    """LlamaForCausalLM: RoPE, RMSNorm, SwiGLU, grouped-query attention (GQA, MQA, MHA), untied head."""
    ours, ref = llama_pair(n_kv)
    order = rope_row_order(ours, D // H)
    m = ref.model
    put(ours.tok_emb.weight, m.embed_tokens.weight)
    for blk, hl in zip(ours.blocks, m.layers):
        a = hl.self_attn
        qkv = torch.cat([per_head(a.q_proj.weight, order), per_head(a.k_proj.weight, order), a.v_proj.weight])
        put_linear(blk.attn.qkv, qkv)
        put_linear(blk.attn.proj, a.o_proj.weight)
        put_norm(blk.norm1, hl.input_layernorm)
        put_norm(blk.norm2, hl.post_attention_layernorm)
        put_linear(blk.ffn.gate_up, torch.cat([hl.mlp.gate_proj.weight, hl.mlp.up_proj.weight]))
        put_linear(blk.ffn.proj, hl.mlp.down_proj.weight)
    put_norm(ours.norm_f, m.norm)
    put_linear(ours.head, ref.lm_head.weight)
    compare(ours, ref)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 64), (8, 20), (64, 256), (2, 8)])
def test_t5_bucket_parity(num_buckets, max_distance):
    """Our causal bucket of q - k equals HF's unidirectional bucket of k - q, past max_distance and in the future."""
    rel = torch.arange(-40, 600)
    ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        rel, bidirectional=False, num_buckets=num_buckets, max_distance=max_distance)
    assert torch.equal(t5_bucket(-rel, num_buckets, max_distance), ref)


def test_t5_bias_matrix_parity():
    """The whole bias: our t5 encoding's (1, H, Tq, Tk) matrix equals a T5 decoder self-attention's compute_bias."""
    hf_cfg = transformers.T5Config(d_model=D, d_kv=D // H, num_heads=H, relative_attention_num_buckets=32,
                                   relative_attention_max_distance=128, is_decoder=True)
    ref = transformers.models.t5.modeling_t5.T5Attention(hf_cfg, has_relative_attention_bias=True)
    perturb_(ref)
    ours = Decoder(ModelConfig(n_layers=1, n_heads=H, d_model=D, block_size=T, positional={"name": "t5"}), V)
    table = [p for p in ours.positional.parameters() if p.shape == (32, H)]
    assert len(table) == 1, "t5 encoding should hold one (num_buckets, n_heads) table"
    put(table[0], ref.relative_attention_bias.weight)
    n = 200
    with torch.no_grad():
        torch.testing.assert_close(ours.positional.bias(n, n), ref.compute_bias(n, n), rtol=0, atol=0)
