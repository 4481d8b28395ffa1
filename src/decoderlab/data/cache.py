"""Split, fit the tokenizer, tokenize, and cache token ids as memory-mapped arrays.

Cache key = hash(corpus text + split settings + tokenizer settings): a second run (or every job of a sweep)
re-reads the ids at once, and the fitted tokenizer with them. Files are written to a temporary name and
renamed, so a killed run never leaves a half-written cache that looks complete.

Validation layout: ``val.bin`` starts with one context token (the last training token) followed by the ids of
the held-out text, so every held-out token is a prediction target and bits-per-byte covers exactly the
held-out bytes, whatever the tokenizer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from decoderlab.components.tokenizers import Tokenizer, load_tokenizer
from decoderlab.data.corpora import Corpus, DataConfig
from decoderlab.errors import DataError

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class TokenizedCorpus:
    train: np.ndarray  # (N_train,) memmap of ids
    val: np.ndarray  # (1 + N_val,) memmap: a context token, then the held-out ids
    tokenizer: Tokenizer
    meta: dict
    directory: Path


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("DECODERLAB_CACHE") or "~/.cache/decoderlab"
    return Path(os.path.expanduser(root))


def split_document(text: str, val_fraction: float) -> tuple[str, str]:
    """Hold out the tail ``val_fraction`` of a document, cut at a line start when one is near."""
    cut = int(len(text) * (1 - val_fraction))
    nl = text.find("\n", cut)
    if nl != -1 and nl - cut < 200:
        cut = nl + 1
    return text[:cut], text[cut:]


def _splits(corpus: Corpus, val_fraction: float) -> Iterator[tuple[str, str, str]]:
    for doc in corpus.documents():
        train, val = split_document(doc.text, val_fraction)
        yield doc.name, train, val


def _write_ids(path: Path, chunks: Iterator[np.ndarray], dtype: np.dtype) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    with open(tmp, "wb") as f:
        for ids in chunks:
            f.write(ids.astype(dtype).tobytes())
            n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return n


def prepare(corpus: Corpus, tokenizer: Tokenizer, block_size: int) -> TokenizedCorpus:
    """Tokenize ``corpus`` (or reuse its cache) and check it is long enough for ``block_size``."""
    cfg = corpus.cfg
    if not 0.0 < cfg.val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    key_src = json.dumps(
        {"v": CACHE_VERSION, "corpus": corpus.fingerprint(), "val_fraction": cfg.val_fraction,
         "tokenizer": tokenizer.cache_key()}, sort_keys=True,
    )
    directory = cache_root(cfg) / f"{cfg.name}-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"
    meta_path = directory / "meta.json"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # sweep jobs sharing a cold cache: one builds, the others then hit it
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            tokenizer = load_tokenizer(directory)
            log.info("token cache hit: %s", directory)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            tokenizer, meta = _build(corpus, tokenizer, directory)
    _log_tokenizer(cfg, meta)
    _check_length(cfg, meta, block_size)  # before mapping: an empty file cannot be memory-mapped
    train = np.memmap(directory / "train.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_train"],))
    val = np.memmap(directory / "val.bin", dtype=meta["dtype"], mode="r", shape=(meta["n_val"] + 1,))
    return TokenizedCorpus(train, val, tokenizer, meta, directory)


def _build(corpus: Corpus, tokenizer: Tokenizer, directory: Path) -> tuple[Tokenizer, dict]:
    cfg = corpus.cfg
    vf = cfg.val_fraction
    n_docs, n_chars = 0, 0
    for doc in corpus.documents():
        n_docs, n_chars = n_docs + 1, n_chars + len(doc.text)
    if n_chars == 0:
        raise DataError(f"data={cfg.name}: the corpus is empty ({n_docs} documents, 0 characters)")
    if tokenizer.fit_on == "all":
        tokenizer.fit(t for _, tr, va in _splits(corpus, vf) for t in (tr, va))
    elif tokenizer.fit_on == "train":
        tokenizer.fit(tr for _, tr, _ in _splits(corpus, vf))
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    n_train = _write_ids(directory / "train.bin", (tokenizer.encode(tr) for _, tr, _ in _splits(corpus, vf)), dtype)
    last = np.memmap(directory / "train.bin", dtype=dtype, mode="r")[-1:] if n_train else np.zeros(1, dtype)
    val_bytes = sum(len(va.encode("utf-8")) for _, _, va in _splits(corpus, vf))
    n_val = _write_ids(
        directory / "val.bin",
        (c for c in [np.asarray(last)] + [tokenizer.encode(va) for _, _, va in _splits(corpus, vf)]),
        dtype,
    ) - 1
    val_ids = np.memmap(directory / "val.bin", dtype=dtype, mode="r")[1:]
    meta = {"dtype": dtype.name, "n_train": n_train, "n_val": n_val, "val_bytes": val_bytes, "n_docs": n_docs,
            "vocab_size": tokenizer.vocab_size, "corpus": cfg.name,
            "val_token_bytes": int(tokenizer.token_bytes()[np.asarray(val_ids)].sum()),
            "tokenizer_report": tokenizer.report()}
    tokenizer.save(directory)
    tmp = directory / f".meta.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(directory / "meta.json")  # written last: its presence marks a complete cache
    log.info("tokenized %s: %d train / %d val tokens -> %s", cfg.name, n_train, n_val, directory)
    return tokenizer, meta


def _log_tokenizer(cfg: DataConfig, meta: dict) -> None:
    """The tokenizer's own figures (``<unk>`` count, tokens added, ...) and a warning when bits-per-byte is inexact."""
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
        )
