"""The tokenizer slot: exact round trips, exact token byte lengths, caching by corpus + settings, the
``<unk>`` policy, extension with new tokens, and checkpoints bound to their tokenizer (vocabulary growth)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from decoderlab.checkpoint import write_checkpoint
from decoderlab.components.tokenizers import (
    TOKENIZERS,
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    tokenizer_from_json,
)
from decoderlab.data import CORPORA, prepare
from decoderlab.data.cache import split_document
from decoderlab.errors import ConfigError, DataError, UserError
from decoderlab.model import Decoder, ModelConfig
from decoderlab.vocab import init_from_checkpoint, maybe_init_from

ENGLISH = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, then rests {i % 7} times.\n"
                  for i in range(200))
SAMPLES = ["hello world", "  two  spaces\tand\ttabs\r\n", "三国演义：话说天下大势，分久必合。", "emoji 😀 é ñ 𝔘",
           "", "\x00\x7f control", "龘 never seen in training"]


def fitted(name: str, texts: list[str], **cfg) -> object:
    tok = TOKENIZERS.build({"name": name, **cfg})
    if tok.fit_on:
        tok.fit(texts)
    return tok


def assert_exact(tok, texts: list[str]) -> None:
    """Round trip and bytes-per-token are exact on every text."""
    tb = tok.token_bytes()
    assert len(tb) == tok.vocab_size
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tb[ids].sum()) == len(text.encode("utf-8"))


def test_bpe_round_trips_english_and_chinese_exactly():
    tok = fitted("bpe", [ENGLISH, SAMPLES[2] * 20], vocab_size=320)
    assert tok.vocab_size == 320
    assert_exact(tok, SAMPLES + [ENGLISH])
    assert len(tok.encode("the quick brown fox")) < len(b"the quick brown fox")  # merges were learned


def test_byte_is_never_unknown():
    tok = fitted("byte", [])
    assert_exact(tok, SAMPLES)
    assert tok.vocab_size == 256


def test_bpe_settings_are_checked():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        TOKENIZERS.build({"name": "bpe", "vocab_size": 100})
    with pytest.raises(ConfigError, match="tokenizer.min_frequency"):
        TOKENIZERS.build({"name": "bpe", "min_frequency": 0})


def text_corpus(tmp_path: Path, text: str, name: str = "c.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return CORPORA.build({"name": "text", "paths": [str(path)], "cache_dir": str(tmp_path / "cache")})


def test_bpe_is_fitted_on_the_training_split_only(tmp_path):
    held_out = "zqxj " * 500  # only in the held-out tail: a BPE fitted on it would merge "zq"
    corpus = text_corpus(tmp_path, ENGLISH * 5 + "\n" + held_out)
    data = prepare(corpus, TOKENIZERS.build({"name": "bpe", "vocab_size": 400}), block_size=8)
    assert split_document(ENGLISH * 5 + "\n" + held_out, 0.1)[1].count("zqxj") == 500
    assert len(data.tokenizer.encode("zqxj")) == 4
    assert len(data.tokenizer.encode(" brown")) == 1


def test_bpe_cache_fits_once_and_second_run_loads_it(tmp_path, monkeypatch, caplog):
    calls = []
    fit = BPETokenizer.fit
    monkeypatch.setattr(BPETokenizer, "fit", lambda self, texts: (calls.append(1), fit(self, texts)))
    corpus = text_corpus(tmp_path, ENGLISH)
    first = prepare(corpus, TOKENIZERS.build({"name": "bpe", "vocab_size": 300}), block_size=8)
    with caplog.at_level(logging.INFO, logger="decoderlab.data.cache"):
        second = prepare(corpus, TOKENIZERS.build({"name": "bpe", "vocab_size": 300}), block_size=8)
    assert calls == [1]
    assert "token cache hit" in caplog.text
    assert isinstance(second.tokenizer, BPETokenizer)
    assert second.tokenizer.fingerprint() == first.tokenizer.fingerprint()
    third = prepare(corpus, TOKENIZERS.build({"name": "bpe", "vocab_size": 280}), block_size=8)  # new settings
    assert calls == [1, 1] and third.directory != first.directory


def test_bpe_saved_as_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer as HFTok

    tok = fitted("bpe", [ENGLISH], vocab_size=300)
    tok.save(tmp_path)
    hf = HFTok.from_file(str(tmp_path / "tokenizer.json"))  # a plain Hugging Face file
    assert hf.encode(ENGLISH).ids == tok.encode(ENGLISH).tolist()
    again = load_tokenizer(tmp_path)  # the directory: the full decoderlab record
    assert isinstance(again, BPETokenizer) and again.fingerprint() == tok.fingerprint()
    pre = TOKENIZERS.build({"name": "pretrained", "path": str(tmp_path / "tokenizer.json")})
    assert pre.fingerprint() == tok.fingerprint()  # same ids, wherever the file lies
    assert_exact(pre, SAMPLES)
    hf.enable_truncation(max_length=4)  # a model's max_length in the file must not cut documents short
    hf.save(str(tmp_path / "truncating.json"))
    pre = TOKENIZERS.build({"name": "pretrained", "path": str(tmp_path / "truncating.json")})
    assert np.array_equal(pre.encode(ENGLISH), tok.encode(ENGLISH))


def test_pretrained_cache_key_hashes_the_file_and_bad_files_are_named(tmp_path):
    fitted("bpe", [ENGLISH], vocab_size=300).save(tmp_path / "a")
    path = tmp_path / "a" / "tokenizer.json"
    tok = TOKENIZERS.build({"name": "pretrained", "path": str(path)})
    key = tok.cache_key()
    fitted("bpe", [ENGLISH], vocab_size=290).save(tmp_path / "a")
    assert TOKENIZERS.build({"name": "pretrained", "path": str(path)}).cache_key() != key
    missing = TOKENIZERS.build({"name": "pretrained", "path": str(tmp_path / "nope.json")})
    with pytest.raises(UserError, match="nope.json"):
        missing.encode("x")
    with pytest.raises(UserError, match="nope.json"):
        missing.cache_key()
    (tmp_path / "bad.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(UserError, match="bad.json"):
        TOKENIZERS.build({"name": "pretrained", "path": str(tmp_path / "bad.json")}).encode("x")
    (tmp_path / "trunc.json").write_text('{"model": ')
    with pytest.raises(UserError, match="trunc.json"):
        TOKENIZERS.build({"name": "pretrained", "path": str(tmp_path / "trunc.json")}).vocab_size  # noqa: B018


def test_char_unknown_error_names_character_and_position():
    tok = fitted("char", ["abc"])
    with pytest.raises(DataError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("abz")


def test_char_unk_policy_maps_and_counts():
    tok = fitted("char", ["abc"], unknown="unk")
    ids = tok.encode("azbz")
    assert ids.tolist() == [1, 0, 2, 0] and tok.decode(ids) == "a<unk>b<unk>"
    assert tok.report() == {"unk_tokens": 2}


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_every_tokenizer_survives_its_json_record(name, tmp_path):
    cfg = {"extend": {"base": "byte", "min_frequency": 1}, "pretrained": {"path": str(tmp_path / "tokenizer.json")},
           "bpe": {"vocab_size": 300}}.get(name, {})
    if name == "pretrained":
        fitted("bpe", [ENGLISH], vocab_size=300).save(tmp_path)
    tok = fitted(name, [ENGLISH, SAMPLES[2]], **cfg)
    again = tokenizer_from_json(tok.to_json())
    assert type(again) is type(tok) and again.fingerprint() == tok.fingerprint()
    assert np.array_equal(again.encode(ENGLISH), tok.encode(ENGLISH))
    assert np.array_equal(again.token_bytes(), tok.token_bytes())


def test_extend_appends_cjk_characters_keeping_base_ids(tmp_path):
    base = fitted("bpe", [ENGLISH], vocab_size=300)
    base.save(tmp_path / "base")
    chinese = "话说天下大势，分久必合，合久必分。" * 10 + "罕"  # 罕 occurs once: below min_frequency
    ext = fitted("extend", [chinese, ENGLISH], base=str(tmp_path / "base"), min_frequency=2)
    added = ext.vocab_size - base.vocab_size
    assert added == len(set(chinese) - {"罕"}) and ext.report()["added_tokens"] == added
    assert np.array_equal(ext.encode(ENGLISH), base.encode(ENGLISH))  # old ids unchanged
    assert (ext.encode("天下") >= base.vocab_size).all() and len(ext.encode("天下")) == 2
    assert_exact(ext, SAMPLES + [chinese, ENGLISH])
    report = ext.report()
    assert report["train_tokens"] < report["train_tokens_base"]
    assert report["token_shrink"] == pytest.approx(1 - report["train_tokens"] / report["train_tokens_base"])
    assert ext.base_fingerprint() == base.fingerprint()
    again = tokenizer_from_json(ext.to_json())
    assert again.fingerprint() == ext.fingerprint() and again.report() == report


def test_extend_tokens_file_and_named_bases(tmp_path):
    (tmp_path / "tokens.txt").write_text("三国\nRomeo\n\n", encoding="utf-8")
    ext = fitted("extend", ["三国 Romeo"], base="byte", tokens_file=str(tmp_path / "tokens.txt"), add_cjk=False)
    assert ext.vocab_size == 258 and ext.encode("三国Romeo").tolist() == [256, 257]
    assert ext.encode("A").tolist() == [65]  # the byte base keeps raw byte ids
    with pytest.raises(ConfigError, match="single characters"):
        fitted("extend", ["abc 三国"], base="char", tokens_file=str(tmp_path / "tokens.txt"))
    with pytest.raises(UserError, match="missing.txt"):
        fitted("extend", ["x"], base="byte", tokens_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="tokenizer.base='nonsense'"):
        fitted("extend", ["x"], base="nonsense")


def test_extend_char_base_and_unk_count_logged(tmp_path, caplog):
    english = fitted("char", [ENGLISH], unknown="unk")
    english.save(tmp_path / "base")
    text = "the fox 说了话。" * 5 + "罕见\n"
    corpus = text_corpus(tmp_path, text * 20)
    ext = TOKENIZERS.build({"name": "extend", "base": str(tmp_path / "base"), "min_frequency": 50})
    with caplog.at_level(logging.INFO, logger="decoderlab.data.cache"):
        data = prepare(corpus, ext, block_size=8)
    tok = data.tokenizer
    assert tok.encode("the")[0] == english.encode("the")[0]  # base ids unchanged
    assert tok.decode(tok.encode("说了话")) == "说了话"  # frequent: added
    assert tok.encode("罕").tolist() == [0]  # rare: <unk> under the base's policy
    assert "mapped to <unk>" in caplog.text  # the count is logged when the corpus is tokenized


def test_init_from_checkpoint_grows_vocabulary(tmp_path):
    base = fitted("bpe", [ENGLISH], vocab_size=300)
    base.save(tmp_path / "base")
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=8, tie_embeddings=False)
    old = Decoder(cfg, base.vocab_size)
    write_checkpoint(tmp_path / "old.ckpt", old, base)
    ext = fitted("extend", ["天下大势" * 6], base=str(tmp_path / "base"))
    report = init_from_checkpoint(Decoder(cfg, ext.vocab_size), tmp_path / "old.ckpt", ext)
    assert report["copied_rows"] == 300 and report["new_rows"] == 4
    run_cfg = OmegaConf.create({"init_from": str(tmp_path / "old.ckpt")})
    new = maybe_init_from(run_cfg, Decoder(cfg, ext.vocab_size), ext)  # what runner.build_model calls
    for key in ("tok_emb.weight", "head.weight"):
        w, w0 = new.state_dict()[key], old.state_dict()[key]
        assert torch.equal(w[:300], w0) and torch.allclose(w[300:], w0.mean(0).expand(4, -1))
    rest = [k for k in old.state_dict() if k not in ("tok_emb.weight", "head.weight")]
    assert rest and all(torch.equal(new.state_dict()[k], old.state_dict()[k]) for k in rest)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)  # a run directory works as load and generate take it
    (tmp_path / "old.ckpt").rename(tmp_path / "run" / "checkpoints" / "last.ckpt")
    again = maybe_init_from(OmegaConf.create({"init_from": str(tmp_path / "run")}), Decoder(cfg, ext.vocab_size), ext)
    assert torch.equal(again.state_dict()["tok_emb.weight"], new.state_dict()["tok_emb.weight"])
    with pytest.raises(ConfigError, match=f"init_from={tmp_path / 'nope'}: no such run directory or checkpoint"):
        maybe_init_from(OmegaConf.create({"init_from": str(tmp_path / "nope")}), Decoder(cfg, ext.vocab_size), ext)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").rename(tmp_path / "old.ckpt")
    unrelated = fitted("char", [ENGLISH])
    with pytest.raises(UserError, match=r"tokenizer mismatch: .*old\.ckpt.* bpe .* char"):
        init_from_checkpoint(Decoder(cfg, unrelated.vocab_size), tmp_path / "old.ckpt", unrelated)


def test_tokenizer_record_names_its_source_when_corrupt(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(UserError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    assert isinstance(fitted("char", ["a"]), CharTokenizer)


# --- Hugging Face interop: char and byte write a real tokenizer.json -------------------------------------------

HF_TEXTS = [ENGLISH[:300], SAMPLES[2], "hello 世界\n", "a\r\n\tb  c", "\x00\x7f", ""]


def hf_loaded(tok, tmp_path: Path) -> tuple[object, object]:
    """The saved tokenizer.json loaded by `tokenizers` and by `transformers.PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer as HFTok

    transformers = pytest.importorskip("transformers")
    path = tok.save(tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
    return HFTok.from_file(str(path)), fast


def assert_same_as_hf(tok, raw, fast, texts: list[str]) -> None:
    for text in texts:
        ids = tok.encode(text).tolist()
        assert raw.encode(text, add_special_tokens=False).ids == ids, text
        assert fast.encode(text, add_special_tokens=False) == ids, text
        assert raw.decode(ids) == fast.decode(ids) == tok.decode(ids), text


@pytest.mark.parametrize("unknown", ["error", "unk"])
def test_char_tokenizer_json_loads_in_hf_and_matches(tmp_path, unknown):
    """English and Chinese give the same ids and text in decoderlab, `tokenizers` and `transformers`."""
    tok = fitted("char", [t for t in HF_TEXTS], unknown=unknown)
    raw, fast = hf_loaded(tok, tmp_path)
    assert raw.get_vocab_size() == tok.vocab_size
    assert_same_as_hf(tok, raw, fast, HF_TEXTS)
    assert load_tokenizer(tmp_path).fingerprint() == tok.fingerprint()  # the full record is kept beside it


def test_char_unk_mode_maps_unknown_characters_like_hf(tmp_path):
    tok = fitted("char", ["abc<"], unknown="unk")
    raw, fast = hf_loaded(tok, tmp_path)
    texts = ["a龘b", "猫<unk>c", "😀"]  # unseen CJK, the literal "<unk>" text, a non-BMP character
    assert_same_as_hf(tok, raw, fast, texts)
    assert tok.encode("a龘b").tolist()[1] == 0 and raw.decode([0]) == "<unk>"


def test_char_error_mode_refuses_unknown_in_hf_too(tmp_path):
    tok = fitted("char", ["abc"])
    raw, _ = hf_loaded(tok, tmp_path)
    with pytest.raises(DataError):
        tok.encode("龘")
    with pytest.raises(Exception, match="UNK"):
        raw.encode("龘")


def test_byte_tokenizer_json_matches_on_every_byte_value(tmp_path):
    tok = fitted("byte", [])
    raw, fast = hf_loaded(tok, tmp_path)
    assert raw.get_vocab_size() == 256
    assert_same_as_hf(tok, raw, fast, HF_TEXTS + ["emoji 😀 é ñ 𝔘"])
    for b in range(256):  # alone (invalid UTF-8 bytes decode to U+FFFD, as bytes.decode(errors="replace"))
        assert raw.decode([b]) == fast.decode([b]) == tok.decode([b]), b
    every = list(range(256)) + list(range(255, -1, -1))
    assert raw.decode(every) == tok.decode(every)


def test_hf_export_keeps_fingerprints(tmp_path):
    """The tokenizer.json format changed, not the ids: fingerprints equal those of earlier releases."""
    char = fitted("char", ["ab我"], unknown="unk")
    assert char.fingerprint() == "8f42bb7f83bfda15"
    assert fitted("byte", []).fingerprint() == "1e4646ca88fd3209"
    char.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.decoderlab.json", "tokenizer.json"]
    assert load_tokenizer(tmp_path / "tokenizer.decoderlab.json").fingerprint() == char.fingerprint()
