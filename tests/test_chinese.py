"""Chinese end to end: 《三国演义》 with a char tokenizer trains and generates Chinese; byte-level BPE round-trips it
exactly; extending an English vocabulary with its characters shrinks its token count."""

from __future__ import annotations

import re

import pytest

from conftest import TINY, run_cli
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA

CJK = re.compile("[\u4e00-\u9fff]")


def chapters(n: int) -> list[str]:
    docs = CORPORA.build({"name": "sanguo"}).documents()
    return [next(docs).text for _ in range(n)]


def test_bpe_round_trips_sanguo_exactly():
    first, second, unseen = chapters(3)
    tok = TOKENIZERS.build({"name": "bpe", "vocab_size": 600})
    tok.fit([first, second])
    tb = tok.token_bytes()
    for text in (first, second, unseen):  # the third chapter was not seen in training
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tb[ids].sum()) == len(text.encode("utf-8"))
    assert len(tok.encode(first)) < len(first.encode("utf-8")) / 2  # merges cover whole characters and more


def test_extending_english_bpe_with_sanguo_characters_shrinks_chinese(tmp_path):
    english = TOKENIZERS.build({"name": "bpe", "vocab_size": 300})
    english.fit(["the quick brown fox jumps over the lazy dog. " * 50])
    english.save(tmp_path)
    texts = chapters(2)
    ext = TOKENIZERS.build({"name": "extend", "base": str(tmp_path), "min_frequency": 3})
    ext.fit(texts)
    report = ext.report()
    assert report["added_tokens"] > 500 and report["token_shrink"] > 0.5
    assert all(ext.decode(ext.encode(t)) == t for t in texts)


@pytest.mark.slow
def test_sanguo_char_trains_and_generates_chinese(tmp_path):
    run = tmp_path / "run"
    res = run_cli(["decoderlab-train", *TINY, "logger=csv", "data=sanguo", "tokenizer=char", "sample.max_new_tokens=20",
                   f"hydra.run.dir={run}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    sample = (run / "sample.txt").read_text(encoding="utf-8")
    assert len(CJK.findall(sample)) > len("话说天下大势")  # the prompt plus generated characters
    res = run_cli(["decoderlab-generate", str(run), "--prompt", "却说曹操", "--max-new-tokens", "30", "--seed", "1",
                   "--threads", "1"], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.rstrip("\n")
    assert out.startswith("却说曹操") and len(out) == 4 + 30  # one character per token
    assert CJK.search(out[4:])
