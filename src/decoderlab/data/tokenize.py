"""Hold out validation text and tokenize a streamed corpus in parallel, into ordered token shards.

The main process plans the corpus as parts (``Corpus.parts``: byte ranges of files cut at line ends, Parquet row
groups, dataset row ranges), grouped into shards of about ``data.shard_chars`` characters. Each of ``data.num_proc``
worker processes reads and parses its shard itself (``Corpus.read_part``), splits it into training and validation
text (:func:`split_text`) and tokenizes it (HF ``encode_batch_fast`` for Hugging Face tokenizers), returning numpy
ids, counts and skipped records; the main process only appends the token shards to the cache files in shard order.
The plan depends on the corpus alone, so the token stream is the same for any number of workers, and at most
``2 * num_proc`` shards are in flight: memory is bounded by the shard size, not the corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from decoderlab.components.tokenizers import HFTokenizer, Tokenizer, tokenizer_from_json
from decoderlab.data.corpora import Corpus, Part, Skipped

log = logging.getLogger(__name__)


def split_document(text: str, val_fraction: float) -> tuple[str, str]:
    """Hold out the tail ``val_fraction`` of a document, cut at a line start when one is near."""
    cut = int(len(text) * (1 - val_fraction))
    nl = text.find("\n", cut)
    if nl != -1 and nl - cut < 200:
        cut = nl + 1
    return text[:cut], text[cut:]


def is_val_document(text: str, val_fraction: float) -> bool:
    """Document rule: a document is held out when a hash of its text falls below ``val_fraction`` (so equal
    documents always land on the same side)."""
    return is_val_bytes(text.encode("utf-8"), val_fraction)


def is_val_bytes(data: bytes, val_fraction: float) -> bool:
    """:func:`is_val_document` of a document's UTF-8 bytes."""
    h = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(h, "little") < val_fraction * 2**64


def split_text(text: str, rule: str, val_fraction: float) -> tuple[str, str]:
    """(training text, validation text) of one document under the ``tail`` or ``document`` rule."""
    if rule == "tail":
        return split_document(text, val_fraction)
    return ("", text) if is_val_document(text, val_fraction) else (text, "")


def encode_concat(tok: Tokenizer, texts: list[str], dtype: np.dtype) -> np.ndarray:
    """The ids of ``texts``, one after another; Hugging Face tokenizers encode the batch in one Rust call (ids
    only: ``encode_batch_fast`` tracks no offsets)."""
    texts = [t for t in texts if t]
    if isinstance(tok, HFTokenizer) and type(tok).encode is HFTokenizer.encode:
        encode = getattr(tok.hf, "encode_batch_fast", tok.hf.encode_batch)
        ids = [e.ids for e in encode(texts, add_special_tokens=False)]
        return np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=sum(map(len, ids)))
    parts = [tok.encode(t) for t in texts]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


@dataclass
class ShardIds:
    """One tokenized shard: its training and validation ids and the figures the cache metadata sums."""

    train: np.ndarray  # (n_train,) ids of the training text of the shard's documents, in order
    val: np.ndarray  # (n_val,)
    docs: int = 0
    val_docs: int = 0  # documents contributing validation text
    chars: int = 0
    text_bytes: int = 0  # UTF-8 bytes of all the shard's text
    val_bytes: int = 0
    val_token_bytes: int = 0  # bytes the validation ids stand for (== val_bytes for exact tokenizers)
    report: dict = field(default_factory=dict)  # changes of the tokenizer's numeric report() figures
    skipped: Skipped = field(default_factory=Skipped)  # bad records skipped while reading the shard
    records: Counter = field(default_factory=Counter)  # documents read, per source file


class ShardEncoder:
    """Split and tokenize one shard of documents (runs in a worker, or in-process for one shard)."""

    def __init__(self, tok: Tokenizer, rule: str, val_fraction: float, dtype: str):
        self.tok, self.rule, self.vf, self.dtype = tok, rule, val_fraction, np.dtype(dtype)

    def __call__(self, texts: list[str]) -> ShardIds:
        before = self.tok.report()
        data = [t.encode("utf-8") for t in texts]
        n_bytes = [len(b) for b in data]
        if self.rule == "tail":
            pairs = [split_document(t, self.vf) for t in texts]
        else:  # one UTF-8 encoding per document, for the hash and the byte count
            pairs = [("", t) if is_val_bytes(b, self.vf) else (t, "") for t, b in zip(texts, data)]
        del data
        val_texts = [va for _, va in pairs]
        out = ShardIds(encode_concat(self.tok, [tr for tr, _ in pairs], self.dtype),
                       encode_concat(self.tok, val_texts, self.dtype), docs=len(texts),
                       val_docs=sum(1 for v in val_texts if v), chars=sum(map(len, texts)))
        out.text_bytes = sum(n_bytes)
        out.val_bytes = sum(n if v is t else len(v.encode("utf-8")) for n, v, t in zip(n_bytes, val_texts, texts))
        out.val_token_bytes = int(self.tok.token_bytes()[out.val].sum())
        after = self.tok.report()
        out.report = {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int | float)}
        return out


def read_and_encode(corpus: Corpus, encoder: ShardEncoder, parts: list[Part]) -> ShardIds:
    """Read a shard's parts, split and tokenize them; the records it skipped and read per file come with its ids."""
    saved, corpus.skipped = corpus.skipped, Skipped()
    try:
        texts: list[str] = []
        records: Counter = Counter()
        for p in parts:
            if p.kind != "end":  # "end" is checked by the main process, which sees every shard of the file
                got = corpus.read_part(p)
                records[p.source] += len(got)
                texts += got
        out = encoder(texts)
        out.skipped, out.records = corpus.skipped, records
        return out
    finally:
        corpus.skipped = saved


_WORKER: tuple[Corpus, ShardEncoder] | None = None  # one per worker process, built by _init_worker


def _init_worker(corpus: Corpus, tok_json: str, rule: str, val_fraction: float, dtype: str) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallelism comes from the processes, not Rust threads
    _WORKER = corpus, ShardEncoder(tokenizer_from_json(tok_json), rule, val_fraction, dtype)


def _encode_in_worker(parts: list[Part]) -> ShardIds:
    assert _WORKER is not None
    return read_and_encode(_WORKER[0], _WORKER[1], parts)


@dataclass
class Shard:
    parts: list[Part]
    pos: int  # source bytes read up to the shard's last part


def shards(parts: Iterator[Part], max_chars: int) -> Iterator[Shard]:
    """Consecutive parts grouped into shards of about ``max_chars`` characters (never fewer than one part)."""
    group: list[Part] = []
    n, pos = 0, 0
    for p in parts:
        group.append(p)
        n, pos = n + p.size, max(pos, p.pos)
        if n >= max_chars:
            yield Shard(group, pos)
            group, n = [], 0
    if group:
        yield Shard(group, pos)


def encode_shards(items: Iterator[Shard], corpus: Corpus, encoder: ShardEncoder,
                  num_proc: int) -> Iterator[tuple[Shard, ShardIds]]:
    """Each shard with its ids, in order; a pool of ``num_proc`` workers starts only when there are two shards.
    The shards yielded with pool results keep only their ``end`` parts (the rest may hold bytes)."""
    first, second = next(items, None), next(items, None)
    if first is None:
        return
    if second is None or num_proc <= 1:
        for s in _chain(first, second, items):
            yield s, read_and_encode(corpus, encoder, s.parts)
        return
    init = (corpus, encoder.tok.to_json(), encoder.rule, encoder.vf, encoder.dtype.name)
    # fork where there is one: a spawned worker would re-import torch (seconds) through the tokenizer registry.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init_worker, initargs=init)
    pending: deque[tuple[Shard, Future]] = deque()
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # forked workers: no Rust thread pool (and no fork warning)
    try:
        for s in _chain(first, second, items):
            ends = [p for p in s.parts if p.kind == "end"]
            pending.append((Shard(ends, s.pos), pool.submit(_encode_in_worker, s.parts)))
            while len(pending) >= 2 * num_proc:
                meta, fut = pending.popleft()
                yield meta, fut.result()
        while pending:
            meta, fut = pending.popleft()
            yield meta, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


def _chain(first: Shard, second: Shard | None, rest: Iterator[Shard]) -> Iterator[Shard]:
    yield first
    if second is not None:
        yield second
        yield from rest


def progress(total: int | None) -> Progress:
    """The build's progress bar: source MB read, text MB/s, documents, tokens, ETA (shown on a terminal only)."""
    p = Progress(
        TextColumn("[bold]tokenizing"), BarColumn(), TextColumn("{task.fields[mb]:,.0f} MB"),
        TextColumn("{task.fields[rate]:,.1f} MB/s"), TextColumn("{task.fields[docs]:,} docs"),
        TextColumn("{task.fields[tokens]:,} tokens"), TimeRemainingColumn(), transient=True,
    )
    p.disable = not p.console.is_terminal
    return p


class Rate:
    """Running totals of a build, for the progress bar and the final log line."""

    def __init__(self) -> None:
        self.t0, self.text_bytes, self.docs, self.tokens = time.perf_counter(), 0, 0, 0

    def add(self, ids: ShardIds) -> dict:
        self.text_bytes += ids.text_bytes
        self.docs += ids.docs
        self.tokens += len(ids.train) + len(ids.val)
        return {"mb": self.text_bytes / 1e6, "rate": self.text_bytes / 1e6 / self.seconds(), "docs": self.docs,
                "tokens": self.tokens}

    def seconds(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)


def default_num_proc(num_proc: int | None) -> int:
    """``data.num_proc``, or every core this process may use."""
    if num_proc is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return num_proc


def corpus_shards(corpus: Corpus) -> Iterator[Shard]:
    """The corpus's plan, in shards of about ``data.shard_chars`` characters."""
    return shards(corpus.parts(), corpus.cfg.shard_chars)
