"""Split, fit the tokenizer, tokenize, and cache token ids as memory-mapped arrays.

Cache key = hash(corpus content + split settings + tokenizer settings): a second run (or every job of a sweep)
re-reads the ids at once, and the fitted tokenizer with them. A file lock per entry lets one sweep job build it
while the others wait. Files are written under temporary names and renamed, and ``meta.json`` is written last:
a killed build never leaves a cache that looks complete, and the next run rebuilds it.

Validation layout: ``val.bin`` starts with one context token (the last training token) followed by the ids of
the held-out text, so every held-out token is a prediction target and bits-per-byte covers exactly the
held-out bytes, whatever the tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from decoderlab.components.tokenizers import Tokenizer, load_tokenizer
from decoderlab.data.corpora import Corpus, DataConfig, Skipped
from decoderlab.data.tokenize import (
    Rate,
    ShardEncoder,
    corpus_shards,
    default_num_proc,
    encode_shards,
    progress,
    split_document,
    split_text,
)
from decoderlab.errors import DataError
from decoderlab.rundir import write_json

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # 3: workers read their own parts (a .txt line over 1 MiB is cut at a character boundary)
__all__ = ["TokenizedCorpus", "prepare", "split_document", "cache_root"]


@dataclass
class TokenizedCorpus:
    train: np.ndarray  # (N_train,) memmap of ids
    val: np.ndarray  # (1 + N_val,) memmap: a context token, then the held-out ids
    tokenizer: Tokenizer
    meta: dict
    directory: Path
    built: bool = False  # True when this call built the cache (False: it was there already)


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("DECODERLAB_CACHE") or "~/.cache/decoderlab"
    return Path(os.path.expanduser(root))


def holdout_rule(corpus: Corpus) -> str:
    """``data.holdout``, or the corpus's own rule when it is ``auto``."""
    return corpus.holdout_rule() if corpus.cfg.holdout == "auto" else corpus.cfg.holdout


def cache_dir_for(corpus: Corpus, tokenizer: Tokenizer, rule: str) -> Path:
    cfg = corpus.cfg
    key_src = json.dumps(
        {"v": CACHE_VERSION, "corpus": corpus.fingerprint(), "val_fraction": cfg.val_fraction, "holdout": rule,
         "shard_chars": cfg.shard_chars, "on_bad_record": cfg.on_bad_record, "tokenizer": tokenizer.cache_key()},
        sort_keys=True,
    )
    return cache_root(cfg) / f"{cfg.name}-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"


def prepare(corpus: Corpus, tokenizer: Tokenizer, block_size: int) -> TokenizedCorpus:
    """Tokenize ``corpus`` (or reuse its cache) and check it is long enough for ``block_size``."""
    cfg = corpus.cfg
    if not 0.0 < cfg.val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.shard_chars < 1 or (cfg.num_proc is not None and cfg.num_proc < 1):
        raise DataError(f"data.shard_chars and data.num_proc must be >= 1, got {cfg.shard_chars}, {cfg.num_proc}")
    rule = holdout_rule(corpus)
    directory = cache_dir_for(corpus, tokenizer, rule)
    meta_path = directory / "meta.json"
    directory.parent.mkdir(parents=True, exist_ok=True)
    built = False
    with FileLock(directory.parent / f".{directory.name}.lock"):  # sweep jobs on a cold cache: one builds
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            tokenizer = load_tokenizer(directory)
            log.info("token cache hit: %s", directory)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(".*.tmp"):  # left by a killed build; we hold the lock
                stale.unlink()
            tokenizer, meta = _build(corpus, tokenizer, directory, rule)
            built = True
    _log_meta(cfg, meta)
    _check_length(cfg, meta, block_size)  # before mapping: an empty file cannot be memory-mapped
    train = np.memmap(directory / "train.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_train"],))
    val = np.memmap(directory / "val.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_val"] + 1,))
    return TokenizedCorpus(train, val, tokenizer, meta, directory, built)


def _fit(corpus: Corpus, tokenizer: Tokenizer, rule: str) -> None:
    """Fit a learned vocabulary on the training text ("train") or all text ("all"), streamed."""
    vf, which = corpus.cfg.val_fraction, tokenizer.fit_on
    if which is None:
        return
    parts = (split_text(d.text, rule, vf) for d in corpus.documents())
    tokenizer.fit(t for tr, va in parts for t in ((tr, va) if which == "all" else (tr,)) if t)


def _build(corpus: Corpus, tokenizer: Tokenizer, directory: Path, rule: str) -> tuple[Tokenizer, dict]:
    cfg = corpus.cfg
    log.info("data=%s: held-out rule '%s' (%s), val_fraction %g", cfg.name, rule,
             "whole documents chosen by a hash of their text" if rule == "document" else "the tail of every document",
             cfg.val_fraction)
    _fit(corpus, tokenizer, rule)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    num_proc = default_num_proc(cfg.num_proc)
    tmp = {s: directory / f".{s}.bin.{os.getpid()}.tmp" for s in ("train", "val")}
    report = tokenizer.report()  # before any encoding: the shards' changes are added to it
    totals, rate = _tokenize(corpus, ShardEncoder(tokenizer, rule, cfg.val_fraction, dtype.name), num_proc, tmp,
                             report)
    if totals["chars"] == 0:
        raise DataError(f"data={cfg.name}: the corpus is empty ({totals['docs']} documents, 0 characters)")
    n_train = tmp["train"].stat().st_size // dtype.itemsize
    n_val = tmp["val"].stat().st_size // dtype.itemsize - 1
    for s, path in tmp.items():
        path.replace(directory / f"{s}.bin")
    meta = {"dtype": dtype.name, "n_train": n_train, "n_val": n_val, "val_bytes": totals["val_bytes"],
            "n_docs": totals["docs"], "n_chars": totals["chars"], "text_bytes": totals["text_bytes"],
            "vocab_size": tokenizer.vocab_size, "corpus": cfg.name, "val_token_bytes": totals["val_token_bytes"],
            "holdout": {"rule": rule, "val_fraction": cfg.val_fraction, "val_docs": totals["val_docs"],
                        "train_docs": totals["docs"] - (totals["val_docs"] if rule == "document" else 0)},
            "skipped_records": corpus.skipped.as_dict(), "tokenizer_report": report,
            "build": {"seconds": round(rate.seconds(), 3), "num_proc": num_proc,
                      "text_mb_per_s": round(totals["text_bytes"] / 1e6 / rate.seconds(), 3)}}
    tokenizer.save(directory)
    write_json(directory / "meta.json", meta)  # written last: its presence marks a complete cache
    log.info("tokenized %s: %d documents, %.1f MB of text in %.1f s (%.1f MB/s, %d processes): %d train / %d val "
             "tokens -> %s", cfg.name, totals["docs"], totals["text_bytes"] / 1e6, rate.seconds(),
             meta["build"]["text_mb_per_s"], num_proc, n_train, n_val, directory)
    return tokenizer, meta


def _tokenize(corpus: Corpus, encoder: ShardEncoder, num_proc: int, tmp: dict[str, Path],
              report: dict) -> tuple[dict, Rate]:
    """Stream the corpus's token shards into the temporary train/val files, in order; sum their figures."""
    totals = {"docs": 0, "val_docs": 0, "chars": 0, "text_bytes": 0, "val_bytes": 0, "val_token_bytes": 0}
    rate, size = Rate(), corpus.size_hint()
    corpus.skipped, records = Skipped(), Counter()  # this pass's bad records; documents read per file
    with open(tmp["train"], "wb") as ftrain, open(tmp["val"], "wb") as fval, progress(size) as bar:
        task = bar.add_task("tokenizing", total=size, mb=0.0, rate=0.0, docs=0, tokens=0)
        last = np.zeros(1, encoder.dtype)
        fval.write(last.tobytes())  # the context token, set once the last training token is known
        for shard, ids in encode_shards(corpus_shards(corpus), corpus, encoder, num_proc):
            corpus.skipped.merge(ids.skipped)
            records.update(ids.records)
            for p in shard.parts:  # a file is complete: did it give any document?
                if p.kind == "end" and not records[p.source]:
                    corpus.bad_record(p.source, p.args[0])
            ftrain.write(ids.train.tobytes())
            fval.write(ids.val.tobytes())
            last = ids.train[-1:] if len(ids.train) else last
            for k in totals:
                totals[k] += getattr(ids, k)
            for k, v in ids.report.items():
                report[k] = report.get(k, 0) + v
            bar.update(task, completed=shard.pos, **rate.add(ids))
        fval.seek(0)
        fval.write(last.tobytes())
        for f in (ftrain, fval):
            f.flush()
            os.fsync(f.fileno())
    return totals, rate


def _log_meta(cfg: DataConfig, meta: dict) -> None:
    """The held-out rule, skipped records, the tokenizer's own figures and a warning when bits-per-byte is inexact."""
    h = meta.get("holdout", {})
    log.info("data=%s: held-out rule '%s': %s of %s documents give validation text", cfg.name, h.get("rule"),
             h.get("val_docs"), meta.get("n_docs"))
    skipped = meta.get("skipped_records") or {}
    if skipped.get("count"):
        log.warning("data=%s: %d bad records were skipped (%s); the first: %s", cfg.name, skipped["count"],
                    skipped["reasons"], "; ".join(skipped.get("first", [])))
    report = meta.get("tokenizer_report") or {}
    if report:
        log.info("tokenizer on data=%s: %s", cfg.name, ", ".join(f"{k}={v}" for k, v in report.items()))
    if report.get("unk_tokens"):
        log.warning("data=%s: %d characters are not in the tokenizer's vocabulary and were mapped to <unk>",
                    cfg.name, report["unk_tokens"])
    counted = meta.get("val_token_bytes")
    if counted is not None and counted != meta["val_bytes"]:
        log.warning(
            "data=%s: the held-out tokens stand for %d bytes but the held-out text has %d UTF-8 bytes: this "
            "tokenizer does not round-trip exactly (normalization or <unk>), so val/bpb is approximate",
            cfg.name, counted, meta["val_bytes"])


def _check_length(cfg: DataConfig, meta: dict, block_size: int) -> None:
    need = block_size + 1
    if meta["n_train"] == 0 and meta["n_val"] == 0:
        raise DataError(f"data={cfg.name}: the corpus is empty (0 tokens)")
    if meta["n_train"] < need:
        raise DataError(
            f"data={cfg.name}: the training split has {meta['n_train']} tokens, fewer than one block of "
            f"model.block_size+1 = {need}; use a longer corpus or a smaller model.block_size"
        )
    if meta["n_val"] < 1:
        raise DataError(
            f"data={cfg.name}: the validation split is empty ({meta['n_val']} tokens); raise data.val_fraction"
            + (" or use data.holdout=tail (few documents)" if meta.get("holdout", {}).get("rule") == "document"
               else "")
        )
