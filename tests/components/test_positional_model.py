"""Positional encodings inside a model and a config: range errors, KV-cache consistency, the rotate_half/complex
equivalence with permuted weights, config-time checks and the YAML presets. (Order sensitivity, "我爱你" vs "你爱我",
is tests/test_permutation.py; generation semantics past a learned table are tests/test_generate.py.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from decoderlab.components.positional import POSITIONAL
from decoderlab.config import validate
from decoderlab.errors import ConfigError, PositionRangeError
from decoderlab.model import Decoder, KVCache, ModelConfig
from decoderlab.plugins import load_plugins

load_plugins()  # plugin encodings are parametrized like core ones

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf/model/positional").glob("*.yaml"))


def tiny(positional: dict, block_size: int = 16, n_heads: int = 2, d_model: int = 16, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=2, n_heads=n_heads, d_model=d_model, block_size=block_size, positional=positional)
    return Decoder(cfg, vocab_size=11).double().eval()


def test_learned_past_its_table_is_a_clear_error():
    model = tiny({"name": "learned"}, block_size=8)
    model(torch.zeros(1, 8, dtype=torch.long))  # the whole table is fine
    with pytest.raises(PositionRangeError, match=r"table of 8 positions.*position 8 was requested.*never trained"):
        model(torch.zeros(1, 9, dtype=torch.long))  # evaluating a longer window
    caches = [KVCache() for _ in model.blocks]
    model(torch.zeros(1, 8, dtype=torch.long), caches)
    with pytest.raises(PositionRangeError, match="Crop the context to 8 tokens"):
        model(torch.zeros(1, 1, dtype=torch.long), caches)  # decoding one token past it with a KV cache


@pytest.mark.parametrize("name", POSITIONAL.names())
def test_kv_cache_decoding_equals_the_full_forward(name):
    """Rotations, biases and embeddings at offset positions agree with one pass over the whole sequence."""
    model = tiny({"name": name})
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    full = model(idx)
    caches = [KVCache() for _ in model.blocks]
    steps = [model(idx[:, :5], caches)] + [model(idx[:, t : t + 1], caches) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fields", [{"name": "rope"}, {"name": "rope", "fraction": 0.5}, {"name": "xpos"}])
def test_rotate_half_and_complex_models_agree_with_permuted_qk_weights(fields):
    """The two layouts define the same models: permuting each head's q/k output rows maps one onto the other."""
    n_heads, d_model = 2, 16
    rh = tiny(dict(fields, impl="rotate_half"), n_heads=n_heads, d_model=d_model)
    cx = tiny(dict(fields, impl="complex"), n_heads=n_heads, d_model=d_model, seed=1)
    head_dim, rot = d_model // n_heads, rh.positional.rot
    half = torch.arange(rot // 2)
    perm = torch.cat((torch.stack((half, half + rot // 2), dim=1).flatten(), torch.arange(rot, head_dim)))
    rows = torch.arange(3 * d_model)
    for start in range(0, 2 * d_model, head_dim):  # every q head, then every k head
        rows[start : start + head_dim] = start + perm
    state = rh.state_dict()
    for i in range(len(rh.blocks)):
        key = next(k for k in state if k.startswith(f"blocks.{i}.") and k.endswith("qkv.weight"))
        state[key] = state[key][rows]  # (3 d_model, d_model): q and k rows permuted, v rows kept
    cx.load_state_dict(state)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(cx(idx), rh(idx), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(tiny(dict(fields, impl="complex"), seed=0)(idx), rh(idx))  # unpermuted: differ


def test_rotary_runs_in_bfloat16_and_float32():
    for dtype in (torch.float32, torch.bfloat16):
        for impl in ("complex", "rotate_half"):
            model = tiny({"name": "rope", "impl": impl, "fraction": 0.5}).to(dtype)
            out = model(torch.randint(0, 11, (2, 8)))
            assert out.dtype == dtype and torch.isfinite(out).all()


# --- config-time checks ----------------------------------------------------------------------------------------

MODEL = SimpleNamespace(d_model=128, n_heads=4, block_size=64)  # head_dim 32
BAD = [
    ("rope", {"scaling": "linear"}, ["model.positional.factor=1.0", "model.positional.scaling=linear"]),
    ("rope", {"scaling": "ntk", "factor": 0.5}, ["model.positional.factor=0.5", "must be > 1"]),
    ("rope", {"factor": 4.0}, ["model.positional.factor=4.0", "model.positional.scaling=none"]),
    ("rope", {"scaling": "yarn", "factor": 4.0}, ["model.positional.original_max_positions"]),
    ("rope", {"scaling": "linear", "factor": 2.0, "original_max_positions": 64},
     ["model.positional.original_max_positions", "scaling=yarn"]),
    ("rope", {"fraction": 0.0}, ["model.positional.fraction=0.0", "(0, 1]"]),
    ("rope", {"fraction": 1.5}, ["model.positional.fraction=1.5"]),
    ("rope", {"fraction": 0.3}, ["model.positional.fraction=0.3", "= 9 rotated dims", "model.n_heads"]),
    ("rope", {"impl": "fast"}, ["model.positional.impl='fast'"]),
    ("rope", {"scaling": "ntx", "factor": 2.0}, ["model.positional.scaling='ntx'"]),
    ("rope", {"scaling": "yarn", "factor": 2.0, "original_max_positions": 64, "beta_fast": 1.0},
     ["model.positional.beta_slow", "model.positional.beta_fast"]),
    ("rope", {"mscale": 1.2}, ["model.positional.mscale", "scaling=yarn"]),
    ("rope", {"base": 1.0}, ["model.positional.base"]),
    ("xpos", {"gamma": 0.0}, ["model.positional.gamma"]),
    ("t5", {"num_buckets": 32, "max_distance": 8}, ["model.positional.num_buckets", "model.positional.max_distance"]),
    ("learned", {"max_positions": 32}, ["model.positional.max_positions=32", "model.block_size=64"]),
]


@pytest.mark.parametrize("name,fields,needles", BAD, ids=[f"{n}-{sorted(f)}" for n, f, _ in BAD])
def test_nonsense_is_rejected_at_config_time_naming_the_keys(name, fields, needles):
    cfg = POSITIONAL.default_config(name, **fields)
    text = "\n".join(cfg.check(MODEL))
    for needle in needles:
        assert needle in text, text
    # Building a model without validate() runs the same check, once, in the model (not in the constructor).
    with pytest.raises(ValueError, match="model.positional"):
        Decoder(ModelConfig(d_model=128, n_heads=4, block_size=64, positional={"name": name, **fields}), 8)


def test_sinusoidal_check_names_d_model():
    assert "model.d_model" in POSITIONAL.default_config("sinusoidal").check(SimpleNamespace(d_model=7, n_heads=1))[0]


@pytest.mark.parametrize("name", POSITIONAL.names())
def test_defaults_pass_their_own_check(name):
    cfg = POSITIONAL.default_config(name)
    assert not (cfg.check(MODEL) if hasattr(cfg, "check") else [])


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_validate_and_build(preset, compose):
    cfg = compose([f"model/positional={preset}"])
    if preset == "rope_yarn":  # the trained context is required: reported by name until it is set
        with pytest.raises(ConfigError, match="model.positional.original_max_positions"):
            validate(cfg)
        cfg = compose([f"model/positional={preset}", "model.positional.original_max_positions=64"])
    validate(cfg)
    pe = POSITIONAL.build(cfg.model.positional, dims=tiny({"name": "none"}).dims)
    assert pe.rotates and cfg.model.positional.name == "rope"


def test_validate_reports_rope_nonsense_from_the_command_line(compose):
    cfg = compose(["model/positional=rope", "model.positional.fraction=0.3", "model.positional.scaling=ntk"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert "model.positional.fraction=0.3" in msg and "model.n_heads" in msg
    assert "model.positional.factor=1.0 must be > 1 with model.positional.scaling=ntk" in msg
