"""Sizing (decoderlab.sizing): variants matched to one parameter budget, and the same data order for the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY
from decoderlab.errors import ConfigError
from decoderlab.model import Decoder
from decoderlab.sizing import build_model_config

SMALL = ["model.n_layers=2", "model.n_heads=2", "model.d_model=64", "model.block_size=32"]
VOCAB = 65


def non_embedding(compose, overrides: list[str]) -> tuple[int, int]:
    """(non-embedding parameters, FFN hidden width) of the model a config builds, on the CPU for real."""
    model = Decoder(build_model_config(compose(overrides), VOCAB), VOCAB)
    return model.param_counts()["non_embedding"], model.blocks[0].ffn.proj.in_features


VARIANTS = [["model/ffn=mlp", "model/positional=learned"], ["model/ffn=swiglu", "model/positional=learned"],
            ["model/ffn=mlp", "model/positional=rope"], ["model/ffn=swiglu", "model/positional=rope"],
            ["model/ffn=mlp", "model/positional=t5"], ["model/ffn=mlp", "model/positional=sinusoidal"]]


@pytest.mark.parametrize("budget", [60_000, 123_457])
def test_param_budget_matches_every_variant_within_one_percent(budget: int, compose):
    sizes = {tuple(v): non_embedding(compose, [*SMALL, *v, f"param_budget={budget}"]) for v in VARIANTS}
    for variant, (count, _) in sizes.items():
        assert abs(count - budget) <= 0.01 * budget, (variant, count)
    plain, _ = non_embedding(compose, [*SMALL, *VARIANTS[0]])
    assert abs(plain - budget) > 0.05 * budget  # it did size them: the unmatched model is far off the budget
    hidden = {v[0]: h for v, (_, h) in sizes.items() if v[1] == "model/positional=learned"}
    assert hidden["model/ffn=swiglu"] < hidden["model/ffn=mlp"]  # three matrices: a narrower hidden layer


def test_without_a_budget_the_model_config_is_untouched(compose):
    cfg = compose([*SMALL, "model/ffn=swiglu"])
    assert build_model_config(cfg, VOCAB).ffn.hidden is None


@pytest.mark.parametrize("value, message", [(100, "too small"), (-5, "param_budget must be positive, got -5")])
def test_impossible_budgets_are_clear_errors(value, message, compose):
    with pytest.raises(ConfigError, match=message) as e:
        build_model_config(compose([*SMALL, f"param_budget={value}"]), VOCAB)
    assert "param_budget" in str(e.value)


def test_a_non_integer_budget_is_rejected_by_the_schema(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="param_budget"):
        compose([*SMALL, "param_budget=lots"])


def test_the_old_model_level_budget_key_says_where_it_moved(compose):
    from decoderlab.config import validate

    with pytest.raises(ConfigError, match="'model.param_budget': it is the run-level key 'param_budget'"):
        validate(compose(["++model.param_budget=800000"]))


def test_every_variant_sees_the_same_batches_for_the_same_seed(tmp_path: Path, tiny_corpus: Path, monkeypatch,
                                                               compose):
    """The batch order is a pure function of (seed, step): two different models, trained for real, are fed the
    very same token windows at every step; another seed feeds different ones."""
    from decoderlab.lit import LitDecoder
    from decoderlab.runner import run

    seen: list[torch.Tensor] = []
    original = LitDecoder.training_step

    def spy(self, batch, batch_idx):
        seen.append(batch[0].clone())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(LitDecoder, "training_step", spy)
    base = [*TINY, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]", "trainer.max_steps=4"]
    variants = {"a": ["model/positional=learned", "model/ffn=mlp", "seed=7"],
                "b": ["model/positional=rope", "model/ffn=swiglu", "model/norm=rmsnorm", "model.n_layers=2",
                      "seed=7"],
                "c": ["model/positional=learned", "model/ffn=mlp", "seed=8"]}
    batches = {}
    for name, extra in variants.items():
        seen.clear()
        run(compose([*base, *extra]), tmp_path / name)
        batches[name] = torch.stack(seen)  # (steps, B, T)
    assert batches["a"].shape[0] == 4
    assert torch.equal(batches["a"], batches["b"])
    assert not torch.equal(batches["a"], batches["c"])


def test_a_budget_sized_checkpoint_rebuilds_the_trained_model(tmp_path: Path, compose):
    """generate/eval rebuild a model from its checkpoint record alone: it must hold the solved FFN width, and
    nothing but what builds the model."""
    from decoderlab.checkpoint import load_model, write_checkpoint
    from decoderlab.components.tokenizers import TOKENIZERS

    cfg = compose(["param_budget=800000", "model/ffn=swiglu"])
    tok = TOKENIZERS.build({"name": "byte"})
    model = Decoder(build_model_config(cfg, tok.vocab_size), tok.vocab_size)
    assert model.cfg.ffn.hidden not in (None, 341)  # solved, not the default 2/3 rule
    rebuilt, _, record = load_model(write_checkpoint(tmp_path / "sized.ckpt", model, tok))
    assert "param_budget" not in record["model"] and record["model"]["ffn"]["hidden"] == model.cfg.ffn.hidden
    assert rebuilt.param_counts() == model.param_counts()
    idx = torch.randint(0, 256, (1, 8))
    torch.testing.assert_close(rebuilt(idx), model.eval()(idx))
