"""Generation: the KV cache gives the tokens generation without it gives, for every registered positional encoding;
prompts longer than the context are cropped with a warning; contexts an encoding cannot represent are a clear
error; sampling filters; ``decoderlab-generate`` and the tokenizer bound to a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from decoderlab.checkpoint import write_checkpoint
from decoderlab.components import POSITIONAL
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.errors import PositionRangeError, UserError
from decoderlab.generate import generate_text, load_for_generation
from decoderlab.model import Decoder, ModelConfig, sample_next
from decoderlab.plugins import load_plugins

load_plugins()  # every registered encoding, plugins' included
BLOCK, VOCAB = 8, 13


def random_model(positional: str, seed: int = 0) -> Decoder:
    """A tiny model with large random weights: logits far apart, so float noise cannot flip a token."""
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32, block_size=BLOCK, positional={"name": positional})
    model = Decoder(cfg, VOCAB).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def generate_recording(model: Decoder, *args, **kwargs) -> tuple[torch.Tensor, list[int]]:
    """``model.generate(...)`` and the number of tokens of every forward pass it made."""
    seen: list[int] = []
    hook = model.tok_emb.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    try:
        return model.generate(*args, **kwargs), seen
    finally:
        hook.remove()


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
@pytest.mark.parametrize("positional", POSITIONAL.names())
def test_kv_cache_gives_the_same_tokens(positional, temperature):
    model = random_model(positional)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1))
    contexts = [None] + ([3 * BLOCK] if model.positional.max_positions is None else [])
    for context in contexts:  # block_size (the window slides), and past it for encodings that extrapolate
        runs = {}
        for use_cache in (True, False):
            runs[use_cache] = generate_recording(
                model, prompt, 20, temperature, top_k=5 if temperature else None, use_cache=use_cache,
                generator=torch.Generator().manual_seed(2), context=context)
        assert torch.equal(runs[True][0], runs[False][0]), f"{positional} context={context}: the cache changed tokens"
        assert runs[True][0].shape == (2, 25)
        window = context or BLOCK
        fits = window - 5  # steps after the prefill while the sequence still fits the window
        assert runs[True][1] == [5] + [1] * fits + [window] * (19 - fits)  # prefill, 1 token/step, then slide
        assert runs[False][1] == [min(5 + i, window) for i in range(20)]  # the reference re-encodes every step


def test_long_prompt_is_cropped_with_a_warning(caplog):
    model = random_model("rope")
    prompt = torch.randint(0, VOCAB, (1, 3 * BLOCK))
    with caplog.at_level(logging.WARNING):
        out = model.generate(prompt, 4, temperature=0.0)
    assert "longer than the context" in caplog.text
    assert torch.equal(out[:, :BLOCK], prompt[:, -BLOCK:]) and out.shape == (1, BLOCK + 4)
    reference = model.generate(prompt[:, -BLOCK:], 4, temperature=0.0)
    assert torch.equal(out, reference)


def test_context_past_a_learned_table_is_a_clear_error():
    model = random_model("learned")
    with pytest.raises(PositionRangeError, match="represents only 8 positions.*cannot extrapolate"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, context=2 * BLOCK)
    out = model.generate(torch.zeros(1, 2, dtype=torch.long), 3 * BLOCK, temperature=0.0)  # slides past 8
    assert out.shape == (1, 2 + 3 * BLOCK)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]])
    greedy = sample_next(logits, 0.0, None, None, None)
    assert greedy.item() == 1
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, 2, None, gen).item() for _ in range(200)}
    assert draws == {1, 2}  # top-k = 2 keeps exactly the two likeliest
    draws = {sample_next(logits, 1.0, None, 0.3, gen).item() for _ in range(100)}
    assert draws == {1}  # the likeliest token alone already holds 30% of the mass
    draws = {sample_next(logits, 5.0, None, None, gen).item() for _ in range(300)}
    assert draws == {0, 1, 2, 3, 4}  # a high temperature reaches every token


def fake_run(directory: Path, positional: str = "rope", text: str = "hello world, hello there.\n") -> Path:
    """A run directory as decoderlab-train leaves it (checkpoint with its bound tokenizer, tokenizer.json)."""
    tok = TOKENIZERS.build({"name": "char"})
    tok.fit([text])
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=BLOCK, positional={"name": positional})
    write_checkpoint(directory / "checkpoints" / "last.ckpt", Decoder(cfg, tok.vocab_size), tok)
    tok.save(directory)
    return directory


def test_checkpoint_is_bound_to_its_tokenizer(tmp_path):
    run = fake_run(tmp_path / "run")
    model, tok, _ = load_for_generation(run)
    other = TOKENIZERS.build({"name": "char"})
    other.fit(["completely different text"])
    other.save(tmp_path / "other")
    with pytest.raises(UserError, match=r"tokenizer mismatch: checkpoint .*last\.ckpt.*tokenizer .*other"):
        load_for_generation(run, tmp_path / "other")
    other.save(run)  # a run directory whose tokenizer.json was swapped
    with pytest.raises(UserError, match="tokenizer mismatch"):
        load_for_generation(run)
    texts = generate_text(model, tok, "hello", 6, temperature=0.0)
    assert texts[0].startswith("hello") and len(texts[0]) == 11


@pytest.mark.slow
def test_generate_cli(tmp_path):
    run = fake_run(tmp_path / "run")
    model, tok, _ = load_for_generation(run)
    expected = generate_text(model, tok, "hello", 12, temperature=0.7, top_k=5, top_p=0.9, seed=3)[0]
    args = ["decoderlab-generate", str(run), "--prompt", "hello", "--max-new-tokens", "12", "--temperature", "0.7",
            "--top-k", "5", "--top-p", "0.9", "--seed", "3", "--threads", "1"]
    res = run_cli(args, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected + "\n"
    res = run_cli(["decoderlab-generate", str(run / "checkpoints" / "last.ckpt"), "--prompt", "hello zebra"],
                  cwd=tmp_path, timeout=120)
    assert res.returncode == 1 and "'z'" in res.stderr and "position 6" in res.stderr  # unknown character
    assert "Traceback" not in res.stderr
