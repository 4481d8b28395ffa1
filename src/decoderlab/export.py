"""Export a trained decoder to a Hugging Face ``transformers`` model directory: ``decoderlab-export``.

    decoderlab-export RUN_DIR_or_CKPT --format hf OUT_DIR

Every architecture with a ``transformers`` equivalent is written with ``save_pretrained`` (safetensors) next to its
tokenizer (``tokenizer.json`` + ``tokenizer_config.json``), so ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and
``AutoTokenizer.from_pretrained(OUT_DIR)`` load it with no decoderlab installed:

- ``gpt2`` (GPT2LMHeadModel): learned positions, pre-norm LayerNorm blocks, MLP (gelu/gelu_exact/relu/silu);
- ``openai-gpt`` (OpenAIGPTLMHeadModel, GPT-1): learned positions, post-norm, 4x MLP (gelu/relu/silu), tied head;
- ``llama`` (LlamaForCausalLM): RoPE (scaling none/linear/ntk/yarn), pre-norm RMSNorm, SwiGLU, GQA/MQA.

Biases decoderlab left out (``model.bias=false``, LayerNorm without bias) are written as zeros where the HF class
always has them: the function is unchanged. Anything else is refused with one line naming the component and value.

The name maps below serve both directions: :func:`to_hf` (export) and :func:`from_hf` (tests/test_parity_hf.py
loads perturbed HF reference models into decoderlab models through it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from decoderlab import checkpoint
from decoderlab.components import ATTENTION, FFN, NORM, PLACEMENT, POSITIONAL
from decoderlab.components.tokenizers import Tokenizer
from decoderlab.errors import UserError, exit_on_user_error
from decoderlab.model import Decoder

log = logging.getLogger("decoderlab")
FAMILIES = {"gpt2": "learned + pre", "openai-gpt": "learned + post", "llama": "rope + pre"}
GPT_ACTIVATIONS = {"gpt2": {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"},
                   "openai-gpt": {"gelu": "gelu", "relu": "relu", "silu": "silu"}}  # OpenAIGPT's gelu is tanh


class ExportError(UserError):
    """The model has no ``transformers`` equivalent (the message names the component and its value)."""


def load_model(path: str | Path) -> tuple[Decoder, Tokenizer]:
    """The trained model (eval mode) and its bound tokenizer from a run directory or a checkpoint file."""
    model, tokenizer, _ = checkpoint.load_model(path)
    return model, tokenizer


def components(model: Decoder) -> dict[str, Any]:
    """The typed config of every slot of ``model`` (defaults filled in)."""
    c = model.cfg
    return {"positional": POSITIONAL.build_config(c.positional), "placement": PLACEMENT.build_config(c.placement),
            "norm": NORM.build_config(c.norm), "ffn": FFN.build_config(c.ffn),
            "attention": ATTENTION.build_config(c.attention)}


def _refuse(slot: str, value: Any, family: str | None, why: str = "") -> ExportError:
    target = f"the {family} export" if family else "transformers (gpt2, openai-gpt, llama)"
    return ExportError(f"cannot export: model/{slot}={value} has no equivalent in {target}{why}")


def family_of(model: Decoder) -> str:
    """``gpt2``, ``openai-gpt`` or ``llama``; an :class:`ExportError` naming the first component that fits none."""
    comp = components(model)
    pos, place = comp["positional"].name, comp["placement"].name
    if pos not in ("learned", "rope"):
        raise _refuse("positional", pos, None, " (learned or rope only)")
    family = {("learned", "pre"): "gpt2", ("learned", "post"): "openai-gpt", ("rope", "pre"): "llama"}.get((pos, place))
    if family is None:
        raise _refuse("placement", place, None, f" with model/positional={pos} ({', '.join(FAMILIES.values())})")
    if family == "llama" and comp["positional"].fraction != 1.0:
        raise _refuse("positional", f"rope fraction={comp['positional'].fraction}", family, " (full rotary only)")
    attn, norm, ffn = comp["attention"], comp["norm"], comp["ffn"]
    if attn.name != "mha" or attn.qk_norm:
        raise _refuse("attention", f"{attn.name} (qk_norm={attn.qk_norm})", family)
    want_norm, want_ffn = ("rmsnorm", "swiglu") if family == "llama" else ("layernorm", "mlp")
    if norm.name != want_norm:
        raise _refuse("norm", norm.name, family, f" (needs {want_norm})")
    if ffn.name != want_ffn:
        raise _refuse("ffn", ffn.name, family, f" (needs {want_ffn})")
    if family == "llama":
        return family
    if ffn.activation not in GPT_ACTIVATIONS[family]:
        raise _refuse("ffn", f"mlp activation={ffn.activation}", family)
    if (attn.n_kv_heads or model.cfg.n_heads) != model.cfg.n_heads:
        raise _refuse("attention", f"mha n_kv_heads={attn.n_kv_heads}", family, " (llama only)")
    if family == "openai-gpt" and model.blocks[0].ffn.fc.out_features != 4 * model.cfg.d_model:
        raise _refuse("ffn", f"mlp hidden={model.blocks[0].ffn.fc.out_features}", family, " (4 * d_model only)")
    return family


def rope_parameters(model: Decoder) -> dict[str, Any]:
    """HF ``rope_parameters`` equal to the model's RoPE (static NTK becomes the plain RoPE of the scaled base)."""
    rope = components(model)["positional"]
    base, dim = float(rope.base), model.cfg.d_model // model.cfg.n_heads
    if rope.scaling == "none":
        return {"rope_type": "default", "rope_theta": base}
    if rope.scaling == "ntk":
        return {"rope_type": "default", "rope_theta": base * rope.factor ** (dim / (dim - 2))}
    if rope.scaling == "linear":
        return {"rope_type": "linear", "rope_theta": base, "factor": float(rope.factor)}
    return {"rope_type": "yarn", "rope_theta": base, "factor": float(rope.factor),
            "original_max_position_embeddings": int(rope.original_max_positions), "beta_fast": float(rope.beta_fast),
            "beta_slow": float(rope.beta_slow), "attention_factor": float(model.positional.mscale)}


def hf_config(model: Decoder, family: str) -> Any:
    """The ``transformers`` config of the equivalent HF model."""
    import transformers

    c, comp = model.cfg, components(model)
    common = {"vocab_size": model.tok_emb.weight.shape[0], "tie_word_embeddings": bool(c.tie_embeddings),
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if family == "llama":
        return transformers.LlamaConfig(
            hidden_size=c.d_model, intermediate_size=model.blocks[0].ffn.hidden, num_hidden_layers=c.n_layers,
            num_attention_heads=c.n_heads, num_key_value_heads=model.blocks[0].attn.n_kv_heads,
            max_position_embeddings=c.block_size, rms_norm_eps=comp["norm"].eps, attention_bias=bool(c.bias),
            mlp_bias=bool(c.bias), rope_parameters=rope_parameters(model), **common)
    sizes = {"n_positions": model.positional.wpe.weight.shape[0], "n_embd": c.d_model, "n_layer": c.n_layers,
             "n_head": c.n_heads, "layer_norm_epsilon": comp["norm"].eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
             "attn_pdrop": 0.0}
    act = GPT_ACTIVATIONS[family][comp["ffn"].activation]
    if family == "gpt2":
        return transformers.GPT2Config(activation_function=act, n_inner=model.blocks[0].ffn.fc.out_features,
                                       **sizes, **common)
    return transformers.OpenAIGPTConfig(afn=act, **sizes, **common)


def name_map(family: str, n_layers: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(our key, HF keys, how): ``copy``, ``T`` (HF Conv1D stores the transpose), ``qkv`` / ``halves`` (split)."""
    if family == "llama":
        top = [("tok_emb.weight", ("model.embed_tokens.weight",), "copy"), ("norm_f.weight", ("model.norm.weight",),
               "copy"), ("head.weight", ("lm_head.weight",), "copy")]
        per = [("attn.qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "qkv"),
               ("attn.proj", ("self_attn.o_proj",), "copy"), ("norm1", ("input_layernorm",), "copy"),
               ("norm2", ("post_attention_layernorm",), "copy"), ("ffn.gate_up", ("mlp.gate_proj", "mlp.up_proj"),
               "halves"), ("ffn.proj", ("mlp.down_proj",), "copy")]
        layer = "model.layers.{i}."
    else:
        wte, wpe = ("wte", "wpe") if family == "gpt2" else ("tokens_embed", "positions_embed")
        top = [("tok_emb.weight", (f"transformer.{wte}.weight",), "copy"), ("head.weight", ("lm_head.weight",), "copy"),
               ("positional.wpe.weight", (f"transformer.{wpe}.weight",), "copy")]
        if family == "gpt2":
            top += [(f"norm_f.{p}", (f"transformer.ln_f.{p}",), "copy") for p in ("weight", "bias")]
        per = [("norm1", ("ln_1",), "copy"), ("attn.qkv", ("attn.c_attn",), "T"), ("attn.proj", ("attn.c_proj",), "T"),
               ("norm2", ("ln_2",), "copy"), ("ffn.fc", ("mlp.c_fc",), "T"), ("ffn.proj", ("mlp.c_proj",), "T")]
        layer = "transformer.h.{i}."
    out = list(top)
    for i in range(n_layers):
        for ours, hf, how in per:
            for p in ("weight", "bias"):
                out.append((f"blocks.{i}.{ours}.{p}", tuple(layer.format(i=i) + f"{h}.{p}" for h in hf), how))
    return out


def rope_row_order(impl: str, head_dim: int) -> torch.Tensor:
    """Our q/k row order within a head that matches HF's rotate_half pairing (i with i + D/2).

    ``rotate_half`` is HF's own layout (identity); ``complex`` pairs 2i with 2i+1, so our row 2i is HF's row i and
    our row 2i+1 is HF's row i + D/2: ``ours[:, j] = hf[:, order[j]]`` per head.
    """
    if impl == "rotate_half":
        return torch.arange(head_dim)
    half = torch.arange(head_dim // 2)
    return torch.stack([half, half + head_dim // 2], dim=1).flatten()


def _per_head(w: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    hd = order.numel()
    return w.reshape(-1, hd, *w.shape[1:])[:, order].reshape(w.shape)  # (heads * hd, ...), rows reordered per head


def _qkv_split(model: Decoder) -> tuple[list[int], torch.Tensor]:
    attn = model.blocks[0].attn
    impl = components(model)["positional"].impl
    return list(attn.qkv.qkv_split), rope_row_order(impl, attn.head_dim)


def to_hf(model: Decoder, family: str) -> dict[str, torch.Tensor]:
    """The model's weights under the HF model's names and layouts."""
    state, out = model.state_dict(), {}
    split, order = _qkv_split(model) if family == "llama" else (None, None)
    inverse = torch.argsort(order) if order is not None else None
    for ours, hf, how in name_map(family, model.cfg.n_layers):
        if ours not in state:
            continue  # a bias decoderlab does not have (zero-filled by export) or an untied head
        w = state[ours]
        if how == "T":
            parts = [w.T if w.dim() == 2 else w]
        elif how == "qkv":
            q, k, v = w.split(split, dim=0)
            parts = [_per_head(q, inverse), _per_head(k, inverse), v]
        else:
            parts = list(w.chunk(len(hf), dim=0))
        out.update({name: p.contiguous() for name, p in zip(hf, parts)})
    return out


def from_hf(model: Decoder, family: str, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF weights under our names and layouts (the inverse of :func:`to_hf`), for ``model.load_state_dict``."""
    mine, out = model.state_dict(), {}
    split, order = _qkv_split(model) if family == "llama" else (None, None)
    for ours, hf, how in name_map(family, model.cfg.n_layers):
        if ours not in mine or hf[0] not in hf_state:
            continue
        parts = [hf_state[h] for h in hf]
        if how == "T":
            w = parts[0].T if parts[0].dim() == 2 else parts[0]
        elif how == "qkv":
            w = torch.cat([_per_head(parts[0], order), _per_head(parts[1], order), parts[2]])
        else:
            w = torch.cat(parts)
        out[ours] = w
    return out


def to_hf_model(model: Decoder) -> Any:
    """An equivalent ``transformers`` causal LM (float32, eval mode) holding the model's weights."""
    import transformers

    family = family_of(model)
    cfg = hf_config(model, family)
    hf = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    state = {k: v.float() for k, v in to_hf(model, family).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    zero = [k for k in missing if k.endswith(".bias")]
    left = sorted(set(missing) - tied - set(zero))
    if left or unexpected:
        raise ExportError(f"cannot export ({family}): weights left unmapped: {left[:3]} / {unexpected[:3]}")
    with torch.no_grad():
        params = dict(hf.named_parameters())
        for k in (k for k in zero if k in params):  # HF always has these biases; decoderlab's model had none: zero keeps the function
            params[k].zero_()
    if cfg.tie_word_embeddings:
        hf.tie_weights()
    return hf.eval()


def save_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """``tokenizer.json`` (+ decoderlab's record) and ``tokenizer_config.json`` so AutoTokenizer loads it."""
    tokenizer.save(out)
    if tokenizer.hf_export() is None:
        log.warning("tokenizer %s has no Hugging Face form: only decoderlab's record is written", tokenizer.describe())
        return
    import transformers

    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"),
                                                clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(out))


def output_problem(out: Path) -> str | None:
    """Why ``out`` cannot become the export directory (a file is there, or on its way), else None; checked before
    the conversion so a mistake costs nothing. Permissions are left to the write itself (root ignores them)."""
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a directory"
    for parent in out.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, so {out} cannot be a directory under it"
    return None


def export_hf(model: Decoder, tokenizer: Tokenizer, out: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` as a ``transformers`` model directory (safetensors); an output path that
    cannot be written is a :class:`UserError` naming it."""
    out = Path(out)
    problem = output_problem(out)
    if problem:
        raise UserError(f"cannot export to {out}: {problem}; give a new or existing directory")
    hf = to_hf_model(model)
    try:
        out.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(str(out))
        save_tokenizer(tokenizer, out)
    except Exception as e:  # read-only, full, vanished: the path and the reason, not a traceback
        if not (isinstance(e, OSError) or type(e).__name__ == "SafetensorError"):  # safetensors' I/O errors
            raise
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror + (f" ({e.filename})" if e.filename and str(e.filename) != str(out) else "")
        else:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot export to {out}: {reason}") from None
    log.info("exported %s model (%s) to %s", hf.config.model_type, type(hf).__name__, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``decoderlab-export RUN_DIR_or_CKPT --format hf OUT_DIR``."""
    parser = argparse.ArgumentParser(prog="decoderlab-export", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a run directory (checkpoints/last.ckpt) or a checkpoint file")
    parser.add_argument("out", help="the directory to write")
    parser.add_argument("--format", choices=["hf"], default="hf", help="hf: a transformers model directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("decoderlab-export: needs transformers (pip install 'decoderlab[hf]')", file=sys.stderr)
        return 2
    with exit_on_user_error(2):
        model, tokenizer = load_model(args.source)
        export_hf(model, tokenizer, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
