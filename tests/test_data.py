"""Data: held-out split never overlaps training, cached ids, exact validation coverage, pure batch order."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA, prepare
from decoderlab.data.cache import split_document
from decoderlab.data.module import TrainWindows, ValWindows, train_batch_offsets
from decoderlab.errors import DataError


def _prepared(path: Path, tok: str = "char", block: int = 16, vf: float = 0.1, cache: Path | None = None):
    cfg = {"name": "text", "paths": [str(path)], "val_fraction": vf}
    if cache:
        cfg["cache_dir"] = str(cache)
    return prepare(CORPORA.build(cfg), TOKENIZERS.build({"name": tok}), block)


def test_split_is_a_tail_cut_at_a_line_start():
    text = "".join(f"line {i}\n" for i in range(100))
    train, val = split_document(text, 0.1)
    assert train + val == text
    assert val.startswith("line ") and train.endswith("\n")
    assert 0.08 < len(val) / len(text) < 0.12


def test_train_and_val_never_overlap(tiny_corpus: Path):
    text = tiny_corpus.read_text()
    data = _prepared(tiny_corpus)
    tok = data.tokenizer
    train_text, val_text = tok.decode(data.train), tok.decode(data.val[1:])
    assert train_text + val_text == text  # a partition: no held-out character is ever trained on
    assert int(data.val[0]) == int(data.train[-1])  # the context token precedes the held-out text


def test_cache_is_reused_and_keyed_by_tokenizer(tiny_corpus: Path, tmp_path: Path):
    a = _prepared(tiny_corpus, cache=tmp_path)
    mtime = (a.directory / "train.bin").stat().st_mtime_ns
    b = _prepared(tiny_corpus, cache=tmp_path)
    assert b.directory == a.directory and (b.directory / "train.bin").stat().st_mtime_ns == mtime
    assert b.tokenizer.chars == a.tokenizer.chars
    c = _prepared(tiny_corpus, tok="byte", cache=tmp_path)
    assert c.directory != a.directory
    tiny_corpus.write_text(tiny_corpus.read_text() + "new text\n")
    d = _prepared(tiny_corpus, cache=tmp_path)
    assert d.directory != a.directory  # the key hashes the corpus content


@pytest.mark.parametrize("tok", ["char", "byte"])
def test_validation_targets_cover_every_held_out_byte_once(tiny_corpus: Path, tok: str):
    data = _prepared(tiny_corpus, tok=tok, block=16)
    val = ValWindows(data.val, 16)
    bytes_per = data.tokenizer.token_bytes()
    covered = []
    for i in range(len(val)):
        x, y = val[i]
        assert torch.equal(x[1:][y[:-1] >= 0], y[:-1][y[:-1] >= 0])  # y is x shifted by one
        covered.append(y[y >= 0])
    targets = torch.cat(covered).numpy()
    assert len(targets) == data.meta["n_val"]
    np.testing.assert_array_equal(np.sort(targets), np.sort(np.asarray(data.val[1:], dtype=np.int64)))
    assert bytes_per[targets].sum() == data.meta["val_bytes"]


def test_val_max_windows_spreads_evenly(tiny_corpus: Path):
    data = _prepared(tiny_corpus, vf=0.5)
    full = ValWindows(data.val, 16)
    some = ValWindows(data.val, 16, max_windows=3)
    assert len(some) == 3 and some.index[0] == 0 and some.index[-1] == len(full) - 1


def test_batch_order_is_a_pure_function_of_seed_step_rank():
    a = train_batch_offsets(7, 123, 10_000, 64, 12)
    assert np.array_equal(a, train_batch_offsets(7, 123, 10_000, 64, 12))
    assert not np.array_equal(a, train_batch_offsets(7, 124, 10_000, 64, 12))
    assert not np.array_equal(a, train_batch_offsets(8, 123, 10_000, 64, 12))
    ranks = [train_batch_offsets(7, 5, 10_000, 64, 6, rank=r, world_size=2) for r in range(2)]
    both = train_batch_offsets(7, 5, 10_000, 64, 12)
    assert np.array_equal(np.concatenate(ranks), both)  # ranks split one global draw: disjoint slices


def test_windows_reach_the_last_token_and_never_past_it():
    """A window is block_size+1 ids: starts cover 0..n-T-1 exactly (an off-by-one either way fails)."""
    n, T = 19, 16  # starts 0, 1, 2
    starts = np.concatenate([train_batch_offsets(0, step, n, T, 8) for step in range(50)])
    assert set(starts.tolist()) == {0, 1, 2}
    ids = np.arange(n)
    windows = TrainWindows(ids, T, 8, seed=0)
    for step in range(20):
        x, y = windows.batch(step)
        assert x.shape == y.shape == (8, T)
        assert torch.equal(y, x + 1)  # consecutive ids: y is x shifted by one, never a short window


def test_resumed_stream_equals_uninterrupted(tiny_corpus: Path):
    data = _prepared(tiny_corpus)
    full = TrainWindows(data.train, 16, 4, seed=3)
    it = iter(full)
    batches = [next(it) for _ in range(6)]
    resumed = TrainWindows(data.train, 16, 4, seed=3)
    resumed.start_step = 4
    it2 = iter(resumed)
    for want in batches[4:]:
        got = next(it2)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_corpus_errors_say_what_and_how_much(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.txt: empty shard: the file holds no text"):
        _prepared(empty)
    short = tmp_path / "short.txt"
    short.write_text("hello world\n" * 3)
    with pytest.raises(DataError, match=r"training split has \d+ tokens, fewer than one block of "
                                        r"model.block_size\+1 = 65"):
        _prepared(short, block=64)
    with pytest.raises(DataError, match="file not found"):
        _prepared(tmp_path / "nope.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text \(byte 3: "):
        _prepared(bad)


def _prepare_in_child(args: tuple) -> str:
    """One sweep job: all start ``prepare`` together (barrier), and a build takes long enough to overlap."""
    from decoderlab.data.tokenize import ShardEncoder

    path, cache, barrier = args
    real = ShardEncoder.__call__

    def slow(self, texts):
        time.sleep(1.0)
        return real(self, texts)

    ShardEncoder.__call__ = slow
    barrier.wait()
    data = _prepared(Path(path), cache=Path(cache))
    return f"{data.directory}:{len(data.train)}:{len(data.val)}:{data.built}"


@pytest.mark.slow
def test_parallel_jobs_on_a_cold_cache_build_it_once(tiny_corpus: Path, tmp_path: Path):
    """Sweep jobs started together share one cache entry: one builds it, the others wait and read it."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(3) as pool:
        barrier = manager.Barrier(3)
        results = pool.map(_prepare_in_child, [(str(tiny_corpus), str(tmp_path), barrier)] * 3)
    assert sorted(r.split(":")[-1] for r in results) == ["False", "False", "True"]  # built once, read twice
    assert len({r.rsplit(":", 1)[0] for r in results}) == 1
    entry = Path(results[0].split(":")[0])
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "tokenizer.decoderlab.json", "tokenizer.json", "train.bin",
                                                 "val.bin"]
