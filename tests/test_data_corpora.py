"""Real corpus shapes: JSONL (plain, gzip, zstd), JSON arrays, Parquet and Hugging Face datasets, Chinese included.

Properties: every format gives the same token stream; the stream does not depend on ``data.num_proc``; the document
split never puts a document on both sides; bits-per-byte counts exactly the held-out bytes; bad records are errors
naming file and line/row, or skipped and counted; an interrupted build leaves no complete-looking cache."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA, prepare
from decoderlab.data.tokenize import ShardEncoder
from decoderlab.errors import DataError

ZH = ["话说天下大势，分久必合，合久必分。", "滚滚长江东逝水，浪花淘尽英雄。", "是非成败转头空，青山依旧在。"]


def documents(n: int = 600) -> list[str]:
    """Distinct one-line documents, English and Chinese, with a few exact duplicates."""
    docs = [f"doc {i}: {ZH[i % 3] if i % 2 else 'the quick brown fox jumps over the lazy dog'} {i * 7}\n"
            for i in range(n)]
    return docs + docs[:20]  # duplicates must land on the same side as their original


def write(path: Path, docs: list[str], key: str = "text") -> Path:
    """``docs`` in the format ``path``'s name says."""
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({key: docs}), path, row_group_size=97)
    elif name.endswith(".json"):
        path.write_text(json.dumps([{key: d} for d in docs], ensure_ascii=False), encoding="utf-8")
    else:
        blob = "".join(json.dumps({key: d, "id": i}, ensure_ascii=False) + "\n" for i, d in enumerate(docs)).encode()
        if name.endswith(".gz"):
            blob = gzip.compress(blob)
        elif name.endswith(".zst"):
            blob = zstandard.ZstdCompressor().compress(blob)
        path.write_bytes(blob)
    return path


def build(data: dict, tok: str = "byte", block: int = 8, **tok_cfg):
    return prepare(CORPORA.build(data), TOKENIZERS.build({"name": tok, **tok_cfg}), block)


def text_data(path: Path | list, tmp_path: Path, **kw) -> dict:
    paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]
    return {"name": "text", "paths": paths, "cache_dir": str(tmp_path / "cache"), "num_proc": 1, **kw}


def streams(data) -> tuple[bytes, bytes]:
    return np.asarray(data.train).tobytes(), np.asarray(data.val).tobytes()


def test_every_format_gives_the_same_token_stream(tmp_path: Path):
    docs = documents()
    ref = build(text_data(write(tmp_path / "a.jsonl", docs), tmp_path))
    for name in ["b.jsonl.gz", "c.jsonl.zst", "d.json", "e.parquet", "f.json.zst"]:
        got = build(text_data(write(tmp_path / name, docs), tmp_path))
        assert got.directory != ref.directory and streams(got) == streams(ref), name
    ds_dir = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(ds_dir))
    for path in [ds_dir, tmp_path / "a.jsonl"]:  # save_to_disk, and local files through load_dataset
        got = build({"name": "hf", "path": str(path), "cache_dir": str(tmp_path / "cache"), "num_proc": 1})
        assert streams(got) == streams(ref), path
    assert ref.meta["holdout"]["rule"] == "document" and ref.meta["n_docs"] == len(docs)


def test_token_stream_is_the_same_for_any_num_proc(tmp_path: Path):
    path = write(tmp_path / "a.jsonl.zst", documents())
    runs = [build(text_data(path, tmp_path / str(n), num_proc=n, shard_chars=900), tok="bpe", vocab_size=300)
            for n in (1, 2, 3)]
    assert runs[0].meta["n_train"] > 1000
    assert streams(runs[1]) == streams(runs[0]) and streams(runs[2]) == streams(runs[0])
    tok = runs[0].tokenizer  # the stream is the documents' own encodings, in corpus order
    train_docs = [d for d in documents() if d in tok.decode(runs[0].train)]
    assert np.array_equal(np.concatenate([tok.encode(d) for d in train_docs]), np.asarray(runs[0].train))


def test_document_split_never_puts_a_document_on_both_sides(tmp_path: Path):
    docs = documents(2000)
    data = build(text_data(write(tmp_path / "a.parquet", docs), tmp_path), tok="char")
    train = Counter(data.tokenizer.decode(data.train).splitlines(keepends=True))
    val = Counter(data.tokenizer.decode(data.val[1:]).splitlines(keepends=True))
    assert not set(train) & set(val)  # duplicates included: equal text, same side
    assert train + val == Counter(docs)  # nothing lost, nothing added
    assert 0.07 < sum(val.values()) / len(docs) < 0.13
    assert data.meta["holdout"] == {"rule": "document", "val_fraction": 0.1, "val_docs": sum(val.values()),
                                    "train_docs": sum(train.values())}
    assert int(data.val[0]) == int(data.train[-1])  # one context token before the held-out ids


@pytest.mark.parametrize("tok,cfg", [("bpe", {"vocab_size": 300}), ("char", {}), ("byte", {})])
def test_bits_per_byte_counts_exactly_the_held_out_bytes(tmp_path: Path, tok: str, cfg: dict):
    docs = documents()
    data = build(text_data(write(tmp_path / "a.jsonl", docs), tmp_path, num_proc=2, shard_chars=2000), tok, **cfg)
    held_out = data.tokenizer.decode(data.val[1:])
    assert data.meta["val_bytes"] == len(held_out.encode("utf-8")) > 0
    assert int(data.tokenizer.token_bytes()[np.asarray(data.val[1:])].sum()) == data.meta["val_bytes"]
    assert data.meta["val_token_bytes"] == data.meta["val_bytes"]


def test_holdout_rule_follows_the_corpus_shape_or_the_config(tmp_path: Path):
    txt = tmp_path / "book.txt"
    txt.write_text("".join(documents()), encoding="utf-8")
    assert build(text_data(txt, tmp_path)).meta["holdout"]["rule"] == "tail"  # few long documents
    jsonl = write(tmp_path / "a.jsonl", ["".join(documents()[i::10]) for i in range(10)])  # 10 long records
    assert build(text_data(jsonl, tmp_path)).meta["holdout"]["rule"] == "document"
    assert build(text_data(jsonl, tmp_path, holdout="tail")).meta["holdout"]["rule"] == "tail"
    with pytest.raises(DataError, match="data.holdout must be one of"):
        build(text_data(jsonl, tmp_path, holdout="random"))


def test_a_long_text_file_streams_in_pieces_with_every_byte_kept(tmp_path: Path):
    txt = tmp_path / "book.txt"
    txt.write_text("".join(documents()) * 3, encoding="utf-8")
    data = build(text_data(txt, tmp_path, shard_chars=5000))
    assert data.meta["n_docs"] > 10  # pieces cut at line ends
    assert data.meta["n_train"] + data.meta["n_val"] == txt.stat().st_size  # byte tokenizer: every byte once
    assert 0.08 < data.meta["n_val"] / txt.stat().st_size < 0.12


BAD = {  # file name, its content, the location and reason the error must name
    "bad_json": ("a.jsonl", '{"text": "ok"}\n{"text": "ok"}\n{"text": oops}\n', ":3: invalid JSON"),
    "missing_key": ("a.jsonl", '{"text": "ok"}\n{"body": "x"}\n', ":2: missing text key 'text'"),
    "non_string": ("a.jsonl", '{"text": "ok"}\n\n{"text": 5}\n', ":3: non-string 'text': int"),
    "not_object": ("a.jsonl", '{"text": "ok"}\n["text"]\n', ":2: not a JSON object"),
    "bad_utf8": ("a.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', ":2: invalid JSON"),
    "bad_json_array": ("a.json", '[{"text": "ok"}, {"text": "ok"}, {"text": oops}]', "a.json item 2: invalid JSON"),
    "bad_array_item": ("a.json", '[{"text": "ok"}, {"text": 5}]', "a.json item 1: non-string 'text': int"),
    "empty_shard": ("a.jsonl", "", "a.jsonl: empty shard"),
    "bad_parquet": ("a.parquet", b"PAR1 not really parquet", "a.parquet row 0: unreadable Parquet file"),
    "empty_txt": ("a.txt", "", "a.txt: empty shard"),
    "latin1_txt": ("a.txt", "caf\xe9".encode("latin-1"), "a.txt: not UTF-8 text (byte 3"),
}


KIND = {"bad_json": "invalid JSON", "missing_key": "missing text key 'text'", "non_string": "non-string 'text'",
        "not_object": "not a JSON object", "bad_utf8": "invalid JSON", "bad_json_array": "invalid JSON",
        "bad_array_item": "non-string 'text'", "empty_shard": "empty shard", "bad_parquet": "unreadable Parquet file",
        "empty_txt": "empty shard", "latin1_txt": "not UTF-8 text"}


def bad_beside_good(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """The bad file of ``case`` and a good JSONL file beside it."""
    name, content, _ = BAD[case]
    bad = tmp_path / name
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    return bad, write(tmp_path / "good.jsonl", documents())


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records_are_errors_naming_file_and_line(tmp_path: Path, case: str):
    name, _, where = BAD[case]
    bad, good = bad_beside_good(tmp_path, case)
    with pytest.raises(DataError) as e:
        build(text_data([good, bad], tmp_path))
    expected = f"{bad}{where[len(name):]}" if where.startswith(name) else f"{bad}{where}"
    assert expected in str(e.value)


@pytest.mark.parametrize("case", sorted(BAD))
def test_skipped_bad_records_are_counted_and_nothing_else_is_lost(tmp_path: Path, case: str):
    content = BAD[case][1]
    bad, good = bad_beside_good(tmp_path, case)
    ref = build(text_data(good, tmp_path, holdout="document"))
    data = build(text_data([good, bad], tmp_path, on_bad_record="skip", holdout="document"))
    skipped = data.meta["skipped_records"]
    assert skipped["count"] == 1 and str(bad) in skipped["first"][0]
    assert skipped["reasons"] == {KIND[case]: 1}  # counted by kind: no cut-off detail, no byte offset
    extra_docs = content.count(b"ok" if isinstance(content, bytes) else "ok")
    assert data.meta["n_docs"] == ref.meta["n_docs"] + extra_docs


def test_an_interrupted_build_leaves_no_complete_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path / "a.jsonl", documents())
    cfg = text_data(path, tmp_path, shard_chars=1000)
    real, calls = ShardEncoder.__call__, []

    def dies_on_third_shard(self, texts):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(ShardEncoder, "__call__", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        build(cfg)
    entry = next((tmp_path / "cache").glob("text-*"))
    assert not (entry / "meta.json").exists() and not (entry / "train.bin").exists()
    monkeypatch.setattr(ShardEncoder, "__call__", real)
    data = build(cfg)
    assert data.built and data.directory == entry
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "tokenizer.decoderlab.json", "tokenizer.json", "train.bin", "val.bin"]


def test_hf_never_downloads_and_names_what_is_missing(tmp_path: Path):
    with pytest.raises(DataError, match="never the Hugging Face Hub at run time"):
        build({"name": "hf", "path": "someone/some-dataset", "cache_dir": str(tmp_path)})
    with pytest.raises(DataError) as e:  # a missing local path is not a Hub name: no load_dataset advice
        build({"name": "hf", "path": str(tmp_path / "gone"), "cache_dir": str(tmp_path)})
    assert str(e.value) == f"data.path={tmp_path / 'gone'}: no such local directory or file."
    ds_dir = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["a"]})}).save_to_disk(str(ds_dir))
    with pytest.raises(DataError, match=r"data.dataset_split=test: .* has splits \['train'\]"):
        build({"name": "hf", "path": str(ds_dir), "dataset_split": "test", "cache_dir": str(tmp_path)})
    with pytest.raises(DataError, match=r"data.text_key=text: .* has columns \['body'\]"):
        build({"name": "hf", "path": str(ds_dir), "cache_dir": str(tmp_path)})


def test_paths_take_folders_and_globs_in_order(tmp_path: Path):
    docs = documents()
    (tmp_path / "corpus").mkdir()
    write(tmp_path / "corpus" / "part-0.jsonl.gz", docs[:300])
    write(tmp_path / "corpus" / "part-1.parquet", docs[300:])
    (tmp_path / "corpus" / "README.md").write_text("not data")
    ref = build(text_data(write(tmp_path / "all.jsonl", docs), tmp_path))
    for paths in ([tmp_path / "corpus"], [str(tmp_path / "corpus" / "part-*")]):
        assert streams(build(text_data(paths, tmp_path))) == streams(ref)
    with pytest.raises(DataError, match="matches no file"):
        build(text_data([str(tmp_path / "nothing-*.jsonl")], tmp_path))
    with pytest.raises(DataError, match="unsupported file type"):
        build(text_data([tmp_path / "corpus" / "README.md"], tmp_path))


@pytest.mark.slow
def test_training_on_a_folder_of_jsonl_records_the_holdout_rule(tmp_path: Path):
    """The README command: ``data=text data.paths=[folder]`` trains, and the run's summary names the rule."""
    from conftest import TINY, run_cli

    (tmp_path / "corpus").mkdir()
    docs = documents()
    write(tmp_path / "corpus" / "a.jsonl.zst", docs[:300])
    write(tmp_path / "corpus" / "b.parquet", docs[300:])
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, "data=text", f"data.paths=[{tmp_path / 'corpus'}]", "tokenizer=byte",
                   f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["holdout"]["rule"] == "document" and summary["data"]["n_docs"] == len(docs)
    assert "held-out rule 'document'" in out.stderr + out.stdout


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst"])
def test_workers_reading_mid_file_name_the_exact_line(tmp_path: Path, name: str):
    """Workers start mid-file (small shards, 2 processes): errors still name the file's own line numbers, and
    skipped records are counted in corpus order whatever the number of workers."""
    lines = [json.dumps({"text": d}, ensure_ascii=False) for d in documents()]
    for i in (123, 401, 557):  # 1-based lines 124, 402, 558
        lines[i] = '{"text": oops}'
    blob = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(zstandard.ZstdCompressor().compress(blob) if name.endswith(".zst") else blob)
    with pytest.raises(DataError, match=rf"{name}:124: invalid JSON"):
        build(text_data(path, tmp_path, num_proc=2, shard_chars=700))
    runs = [build(text_data(path, tmp_path / str(n), num_proc=n, shard_chars=700, on_bad_record="skip"))
            for n in (1, 2)]
    for data in runs:
        skipped = data.meta["skipped_records"]
        assert skipped["count"] == 3 and [f.split(": ")[0] for f in skipped["first"]] == [
            f"{path}:124", f"{path}:402", f"{path}:558"]
        assert data.meta["n_docs"] == len(lines) - 3
    assert streams(runs[0]) == streams(runs[1])


def test_a_text_line_longer_than_a_piece_is_cut_between_characters(tmp_path: Path):
    """A .txt line over 1 MiB is read in pieces cut at a UTF-8 character boundary: no byte lost or broken."""
    txt = tmp_path / "one-line.txt"
    txt.write_text("x" + "三国演义" * 100_000 + "\n", encoding="utf-8")  # 1.2 MB, no newline until the end
    data = build(text_data(txt, tmp_path, num_proc=2, shard_chars=1000))
    assert data.meta["n_docs"] == 2 and data.meta["skipped_records"]["count"] == 0
    assert data.meta["n_train"] + data.meta["n_val"] == txt.stat().st_size  # byte tokenizer: every byte once


def test_a_json_array_is_streamed_one_record_at_a_time(tmp_path: Path):
    """Planning a 20 MB .json array holds a few records, not the file (json.load would hold all 20 MB as objects)."""
    import tracemalloc

    path = tmp_path / "big.json"
    docs = [f"record {i}: " + "the quick brown fox " * 50 for i in range(20_000)]
    path.write_text(json.dumps([{"text": d} for d in docs]), encoding="utf-8")
    corpus = CORPORA.build(text_data(path, tmp_path))
    tracemalloc.start()
    try:
        n = sum(1 for part in corpus.parts() if part.kind == "texts")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == len(docs)
    assert peak < 2_000_000, f"planning held {peak / 1e6:.1f} MB"


def test_a_json_array_takes_what_python_json_writes(tmp_path: Path):
    """Numbers of any size, NaN and Infinity (json.dump's defaults), a UTF-8 byte order mark: every record read."""
    docs = documents(40)
    records = [{"text": d, "id": 2**64 - 1 - i, "score": [math.nan, math.inf, 1e400][i % 3]} for i, d in
               enumerate(docs)]
    (tmp_path / "a.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"text": d} for d in docs]).encode())
    for name in ("a.json", "b.json"):
        data = build(text_data(tmp_path / name, tmp_path, holdout="document"))
        assert data.meta["n_docs"] == len(docs) and data.meta["skipped_records"]["count"] == 0, name


def test_a_syntax_error_in_a_json_array_says_the_rest_of_the_file_is_not_read(tmp_path: Path):
    bad = tmp_path / "a.json"
    bad.write_text('[{"text": "one"}, {"text": "two"}, {"text": oops}, {"text": "four"}]')
    good = write(tmp_path / "good.jsonl", documents())
    data = build(text_data([good, bad], tmp_path, on_bad_record="skip", holdout="document"))
    skipped = data.meta["skipped_records"]
    assert skipped["count"] == 1
    assert skipped["first"][0].startswith(f"{bad} item 2: invalid JSON: Expecting value: line 1 column 45")
    assert skipped["first"][0].endswith("; the rest of the file after item 1 cannot be read")
