"""``data=text``: your own files: plain text, JSON lines / JSON (optionally ``.gz`` or ``.zst``) and Parquet.

``data.paths`` takes files, folders (every supported file under them, sorted) and globs (``corpus/**/*.jsonl.zst``).
A ``.txt`` file is one document (a file longer than ``data.shard_chars`` is read in pieces cut at line ends);
every JSON record or Parquet row is one document, its text under ``data.text_key``. Everything streams: a reader
holds one text piece, one JSON line or one Parquet record batch at a time. The fingerprint hashes the files' bytes
in 1 MiB chunks, so it never parses the corpus.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import importlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from omegaconf import MISSING

from decoderlab.data.corpora import CORPORA, Corpus, DataConfig, Document, Skipped
from decoderlab.errors import DataError

FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".zst")
SUPPORTED = ".txt, .jsonl, .json (each optionally .gz or .zst) and .parquet"


def file_format(path: Path) -> tuple[str, str]:
    """(format, compression) from the file name: ``a.jsonl.zst`` -> ("jsonl", ".zst")."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else ""
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (fmt == "parquet" and comp):
        raise DataError(f"data.paths: {path}: unsupported file type; supported: {SUPPORTED}")
    return fmt, comp


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named by ``data.paths``: files, folders (their supported files, sorted) and globs, in order given."""
    if not patterns:
        raise DataError("data.paths is empty: give files, folders or globs, e.g. data.paths=[corpus/*.jsonl]")
    out: list[Path] = []
    for p in patterns:
        p = os.path.expanduser(str(p))
        if glob.has_magic(p):
            found = [Path(f) for f in sorted(glob.glob(p, recursive=True)) if Path(f).is_file()]
        elif Path(p).is_dir():
            found = [f for f in sorted(Path(p).rglob("*")) if f.is_file() and _supported(f)]
        elif Path(p).is_file():
            found = [Path(p)]
        else:
            raise DataError(f"data.paths: file not found: {p}")
        if not found:
            raise DataError(f"data.paths: '{p}' matches no file (supported: {SUPPORTED})")
        out.extend(found)
    for f in out:
        file_format(f)
    return out


def _supported(path: Path) -> bool:
    try:
        file_format(path)
    except DataError:
        return False
    return True


def optional(module: str, what: str):
    """Import an optional reader (the ``corpora`` extra), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading {what} needs the '{module}' package: pip install 'decoderlab[corpora]'") from None


def open_binary(raw: IO[bytes], comp: str) -> IO[bytes]:
    """A decompressing binary reader over ``raw`` (``raw.tell()`` still counts compressed bytes read)."""
    if comp == ".gz":
        return gzip.GzipFile(fileobj=raw)
    if comp == ".zst":
        zstandard = optional("zstandard", ".zst files")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


@dataclass
class TextConfig(DataConfig):
    paths: list[str] = MISSING  # files, folders or globs: .txt, .jsonl/.json (.gz/.zst), .parquet
    text_key: str = "text"  # JSON key / Parquet column holding the text


@CORPORA.register("text", TextConfig)
class TextFiles(Corpus):
    """Your own files: ``data=text data.paths=[corpus/*.jsonl.zst]``; a .txt file or a JSON/Parquet record each
    make one document."""

    def __init__(self, cfg: TextConfig):
        super().__init__(cfg)
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = expand_paths(list(self.cfg.paths))
        return self._files

    def holdout_rule(self) -> str:
        return "document" if any(file_format(f)[0] != "txt" for f in self.files()) else "tail"

    def size_hint(self) -> int:
        return sum(f.stat().st_size for f in self.files())

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.cfg.name, self.cfg.text_key]).encode())
        for f in self.files():
            h.update(f"{''.join(f.suffixes)}:{f.stat().st_size}:".encode())
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        return h.hexdigest()[:16]

    def documents(self) -> Iterator[Document]:
        self.skipped = Skipped()  # counts of this pass only
        base = 0
        for f in self.files():
            fmt, comp = file_format(f)
            if fmt == "parquet":
                yield from self._parquet(f, base)
            else:
                with open(f, "rb") as raw:
                    reader = {"txt": self._txt, "jsonl": self._jsonl, "json": self._json}[fmt]
                    yield from reader(f, raw, open_binary(raw, comp), base)
            base += f.stat().st_size

    def _txt(self, path: Path, raw: IO[bytes], stream: IO[bytes], base: int) -> Iterator[Document]:
        """One document per file; a file longer than ``shard_chars`` bytes in pieces cut after a newline."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, n = 0, 0
        while True:
            chunk = stream.read(self.cfg.shard_chars)
            chunk += stream.readline(1 << 20) if chunk else b""
            try:  # decoded whole before it is yielded: a bad byte anywhere in a piece drops the piece
                text = decoder.decode(chunk, final=not stream.peek(1))
            except UnicodeDecodeError as e:
                self.bad_record(str(path), f"not UTF-8 text (byte {offset + e.start}: {e.reason})")
                return
            if text:
                yield Document(str(path) if offset == 0 else f"{path}@{offset}", text, base + raw.tell())
                n += 1
            offset += len(chunk)
            if not chunk:
                break
        if n == 0:
            self.bad_record(str(path), "empty shard: the file holds no text")

    def _jsonl(self, path: Path, raw: IO[bytes], stream: IO[bytes], base: int) -> Iterator[Document]:
        n = 0
        try:
            for lineno, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                text = self._record_text(line, f"{path}:{lineno}")
                if text is not None:
                    n += 1
                    yield Document(f"{path}:{lineno}", text, base + raw.tell())
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz/.zst
            self.bad_record(str(path), f"unreadable compressed file: {e}")
        if n == 0:
            self.bad_record(str(path), "empty shard: no records")

    def _json(self, path: Path, raw: IO[bytes], stream: IO[bytes], base: int) -> Iterator[Document]:
        """A ``.json`` file is JSON lines, or one JSON array of records (read whole: not streamed)."""
        head = stream.peek(64) if hasattr(stream, "peek") else b""
        if not head.lstrip().startswith(b"["):
            yield from self._jsonl(path, raw, stream, base)
            return
        try:
            records = json.load(stream)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.bad_record(str(path), f"invalid JSON: {e}")
            return
        for i, rec in enumerate(records):
            text = self._field(rec, f"{path} item {i}")
            if text is not None:
                yield Document(f"{path} item {i}", text, base + raw.tell())
        if not records:
            self.bad_record(str(path), "empty shard: no records")

    def _record_text(self, line: bytes, where: str) -> str | None:
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.bad_record(where, f"invalid JSON: {e}")
            return None
        return self._field(rec, where)

    def _field(self, rec: Any, where: str) -> str | None:
        key = self.cfg.text_key
        if not isinstance(rec, dict):
            self.bad_record(where, f"not a JSON object: {type(rec).__name__}")
        elif key not in rec:
            self.bad_record(where, f"missing text key '{key}' (keys: {sorted(rec)[:10]}; set data.text_key)")
        elif not isinstance(rec[key], str):
            self.bad_record(where, f"non-string '{key}': {type(rec[key]).__name__}")
        else:
            return rec[key]
        return None

    def _parquet(self, path: Path, base: int) -> Iterator[Document]:
        pa = optional("pyarrow", "Parquet files")
        pq = importlib.import_module("pyarrow.parquet")
        key, size, row = self.cfg.text_key, path.stat().st_size, 0
        try:
            pf = pq.ParquetFile(path)
            if key not in pf.schema_arrow.names:
                self.bad_record(str(path), f"missing text column '{key}' (columns: {pf.schema_arrow.names[:10]}; "
                                           f"set data.text_key)")
                return
            n_rows = pf.metadata.num_rows
            for batch in pf.iter_batches(batch_size=1024, columns=[key]):
                for text in batch.column(0).to_pylist():
                    where = f"{path} row {row}"
                    row += 1
                    if not isinstance(text, str):
                        self.bad_record(where, f"non-string '{key}': {type(text).__name__}")
                        continue
                    yield Document(where, text, base + size * row // max(n_rows, 1))
        except (pa.ArrowException, OSError) as e:
            self.bad_record(f"{path} row {row}", f"unreadable Parquet file: {e}")
            return
        if row == 0:
            self.bad_record(str(path), "empty shard: no rows")
