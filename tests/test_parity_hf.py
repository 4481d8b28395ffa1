"""Parity with an independent implementation: HF ``transformers`` reference models (random init, no download).

Each test builds a tiny reference from its config, perturbs every parameter (so LayerNorm gains/biases are not
the trivial 1/0), copies the weights into a decoderlab model built from components (through the name maps of
decoderlab.export, which tests/test_export.py runs the other way), and compares the logits of
both in float64: max |diff| <= 1e-5. Measured: ~1e-15 for GPT-1/GPT-2 (the masks differ in form, -1e4 / min-float /
-inf, and all give exactly zero weight in float64); ~5e-7 for Llama. decoderlab's RoPE tables are float64 here; the
residual is HF's: its rotary embedding computes cos/sin in float32 whatever the model dtype, its RMSNorm casts
through float32 and its eager attention takes the softmax in float32.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from decoderlab.components.positional.t5 import t5_bucket  # noqa: E402
from decoderlab.export import family_of, from_hf  # noqa: E402
from decoderlab.model import Decoder, ModelConfig  # noqa: E402

V, T, D, H, L = 53, 16, 32, 4, 2
TOL = 1e-5


def perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)
    return model


def load_from_hf(ours: Decoder, ref: nn.Module, family: str) -> Decoder:
    """Copy the reference's weights into ours through decoderlab.export's name map (the inverse of the export)."""
    assert family_of(ours) == family
    state = from_hf(ours, family, ref.state_dict())
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return ours


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
    load_from_hf(ours, ref, "openai-gpt")
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
    load_from_hf(ours, ref, "gpt2")
    compare(ours, ref)


def llama_pair(n_kv: int = 2, hidden: int = 56, impl: str = "rotate_half"):
    hf_cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=D, intermediate_size=hidden, num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=n_kv, max_position_embeddings=T, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attn_implementation="eager")
    ref = perturb_(transformers.LlamaForCausalLM(hf_cfg))
    cfg = ModelConfig(n_layers=L, n_heads=H, d_model=D, block_size=T, bias=False, tie_embeddings=False,
                      positional={"name": "rope", "impl": impl}, attention={"name": "mha", "n_kv_heads": n_kv},
                      placement={"name": "pre"}, norm={"name": "rmsnorm", "eps": 1e-6},
                      ffn={"name": "swiglu", "hidden": hidden})
    return Decoder(cfg, V).double(), ref


@pytest.mark.parametrize("n_kv, impl", [(2, "rotate_half"), (1, "rotate_half"), (H, "rotate_half"), (2, "complex")])
def test_llama_parity(n_kv, impl):
    """LlamaForCausalLM: RoPE (both pairings), RMSNorm, SwiGLU, grouped-query attention (GQA, MQA, MHA), untied head."""
    ours, ref = llama_pair(n_kv, impl=impl)
    load_from_hf(ours, ref, "llama")
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
    with torch.no_grad():
        table[0].copy_(ref.relative_attention_bias.weight)
    n = 200
    with torch.no_grad():
        torch.testing.assert_close(ours.positional.bias(n, n), ref.compute_bias(n, n), rtol=0, atol=0)
