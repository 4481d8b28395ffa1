"""``data=text``: your own files: plain text, JSON lines / JSON (optionally ``.gz`` or ``.zst``) and Parquet.

``data.paths`` takes files, folders (every supported file under them, sorted) and globs (``corpus/**/*.jsonl.zst``).
A ``.txt`` file is one document (a file longer than ``data.shard_chars`` is read in pieces cut at line ends);
every JSON record or Parquet row is one document, its text under ``data.text_key``. Everything streams: the main
process plans pieces of about ``data.shard_chars`` bytes cut at line ends (counting lines, so errors name the exact
line) or groups of Parquet row groups, and each worker reads, decompresses what is left and parses its own piece. The fingerprint hashes the files' bytes
in 1 MiB chunks, so it never parses the corpus.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ijson
from omegaconf import MISSING

from decoderlab.data.corpora import CORPORA, Corpus, DataConfig, Document, Part, documents_from_parts
from decoderlab.errors import DataError

BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark (some Windows tools write one)
FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".zst")
LONG_LINE = 1 << 20  # a .txt piece ends at the first newline after shard_chars bytes, or this many bytes later
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


def files_fingerprint(header: list[Any], files: Iterable[str | Path], stat: bool = True) -> str:
    """16 hex digits of sha256 over ``header`` (as JSON) and every file's bytes, read in chunks and never parsed;
    ``stat`` also hashes each file's suffixes and size (the cache key of a corpus of files)."""
    h = hashlib.sha256(json.dumps(header).encode())
    for f in map(Path, files):
        if stat:
            h.update(f"{''.join(f.suffixes)}:{f.stat().st_size}:".encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


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
        return files_fingerprint([self.cfg.name, self.cfg.text_key], self.files())

    def documents(self) -> Iterator[Document]:
        return documents_from_parts(self)

    def parts(self) -> Iterator[Part]:
        """Plan the files: pieces of text/JSON-lines files cut at line ends, Parquet row groups; a JSON array is
        read here."""
        base = 0
        for f in self.files():
            fmt, comp = file_format(f)
            if fmt == "parquet":
                yield from self._parquet_parts(f, base)
            else:
                with open(f, "rb") as raw:
                    stream = open_binary(raw, comp)
                    head = stream.peek(64) if fmt == "json" and hasattr(stream, "peek") else b""
                    bom = head.startswith(BOM)
                    if head[len(BOM) if bom else 0:].lstrip().startswith(b"["):
                        stream.read(len(BOM) if bom else 0)  # a UTF-8 byte order mark is not JSON
                        yield from self._json_array(f, stream)
                    else:
                        yield from self._line_parts(f, "txt" if fmt == "txt" else "jsonl", comp, raw, stream, base)
            base += f.stat().st_size

    def _line_parts(self, path: Path, kind: str, comp: str, raw: IO[bytes], stream: IO[bytes],
                    base: int) -> Iterator[Part]:
        """Pieces of about ``shard_chars`` bytes cut after a newline, as (start byte, first line number, length,
        bytes): a worker reads a plain file's range itself, a compressed file's bytes are decompressed here. A .txt
        line longer than 1 MiB is cut at a character boundary; a JSON line is never cut."""
        start, line, carry = 0, 1, b""
        try:
            while True:
                data = stream.read(self.cfg.shard_chars)
                if not data and not carry:
                    break
                tail = stream.readline(LONG_LINE if kind == "txt" else -1) if data else b""
                chunk = carry + data + tail
                cut = _char_boundary(chunk) if len(tail) == LONG_LINE and not tail.endswith(b"\n") else len(chunk)
                chunk, carry = chunk[:cut], chunk[cut:]
                yield Part(kind, str(path), (start, line, len(chunk), chunk if comp else None), len(chunk),
                           base + raw.tell())
                start, line = start + len(chunk), line + chunk.count(b"\n")
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz/.zst
            yield Part("bad", str(path), (str(path), f"unreadable compressed file: {e}"))
        if kind == "txt" and start == 0:
            yield Part("bad", str(path), (str(path), "empty shard: the file holds no text"))
        elif kind == "jsonl":
            yield Part("end", str(path), ("empty shard: no records",))

    def _json_array(self, path: Path, stream: IO[bytes]) -> Iterator[Part]:
        """A ``.json`` file holding one JSON array of records, streamed (ijson): one record in memory at a time,
        whatever the file's size; numbers of any size are read (as Decimal: only the text key is used)."""
        n = 0
        try:
            for rec in ijson.items(stream, "item"):
                yield from self._json_record(path, rec, n)
                n += 1
        except (ijson.JSONError, UnicodeDecodeError):  # also what Python's json reads but yajl refuses: NaN
            yield from self._json_array_whole(path, n)
            return
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz/.zst
            yield Part("bad", str(path), (str(path), f"unreadable compressed file: {e}"))
            return
        if not n:
            yield Part("bad", str(path), (str(path), "empty shard: no records"))

    def _json_array_whole(self, path: Path, done: int) -> Iterator[Part]:
        """After ijson stopped at item ``done``: the file read whole by Python's json (it also takes NaN and
        Infinity), items from ``done`` on; a real syntax error names the item and says the rest is not read."""
        with open(path, "rb") as raw:
            try:
                records = json.load(open_binary(raw, file_format(path)[1]))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                rest = "the file" if not done else f"the rest of the file after item {done - 1}"
                yield Part("bad", str(path), (f"{path} item {done}", f"invalid JSON: {e}; {rest} cannot be read"))
                return
        for i in range(done, len(records)):
            yield from self._json_record(path, records[i], i)
        if not records:
            yield Part("bad", str(path), (str(path), "empty shard: no records"))

    def _json_record(self, path: Path, rec: Any, i: int) -> Iterator[Part]:
        text = self._field(rec, f"{path} item {i}")
        if text is not None:
            yield Part("texts", str(path), (text,), len(text))

    def read_part(self, part: Part) -> list[str]:
        if part.kind == "parquet":
            return self._read_parquet(part)
        if part.kind not in ("txt", "jsonl"):
            return super().read_part(part)
        start, line, length, data = part.args
        if data is None:
            with open(part.source, "rb") as f:
                f.seek(start)
                data = f.read(length)
        if part.kind == "jsonl":
            return self._read_jsonl(part.source, data, line)
        try:
            return [data.decode("utf-8")]
        except UnicodeDecodeError as e:  # a bad byte anywhere in a piece drops the piece
            self.bad_record(part.source, f"not UTF-8 text (byte {start + e.start}: {e.reason})")
            return []

    def _read_jsonl(self, path: str, data: bytes, first_line: int) -> list[str]:
        out = []
        for lineno, line in enumerate(data.split(b"\n"), first_line):
            if line.strip():
                text = self._record_text(line, f"{path}:{lineno}")
                if text is not None:
                    out.append(text)
        return out

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

    def _parquet_parts(self, path: Path, base: int) -> Iterator[Part]:
        """Groups of consecutive row groups of about ``shard_chars`` bytes, as (row groups, first row)."""
        pa, pq = _pyarrow()
        key, size = self.cfg.text_key, path.stat().st_size
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as e:
            yield Part("bad", str(path), (f"{path} row 0", f"unreadable Parquet file: {e}"))
            return
        names = meta.schema.to_arrow_schema().names
        if key not in names:
            yield Part("bad", str(path), (str(path), f"missing text column '{key}' (columns: {names[:10]}; "
                                                     f"set data.text_key)"))
            return
        if meta.num_rows == 0:
            yield Part("bad", str(path), (str(path), "empty shard: no rows"))
        groups: list[int] = []
        nbytes, rows, first = 0, 0, 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            nbytes, rows = nbytes + meta.row_group(g).total_byte_size, rows + meta.row_group(g).num_rows
            if nbytes >= self.cfg.shard_chars or g == meta.num_row_groups - 1:
                yield Part("parquet", str(path), (tuple(groups), first), nbytes,
                           base + size * rows // max(meta.num_rows, 1))
                groups, nbytes, first = [], 0, rows

    def _read_parquet(self, part: Part) -> list[str]:
        pa, pq = _pyarrow()
        (groups, row), key = part.args, self.cfg.text_key
        try:
            column = pq.ParquetFile(part.source).read_row_groups(list(groups), columns=[key]).column(0)
        except (pa.ArrowException, OSError) as e:
            self.bad_record(f"{part.source} row {row}", f"unreadable Parquet file: {e}")
            return []
        out = []
        for i, text in enumerate(column.to_pylist()):
            if isinstance(text, str):
                out.append(text)
            else:
                self.bad_record(f"{part.source} row {row + i}", f"non-string '{key}': {type(text).__name__}")
        return out


def _pyarrow():
    return optional("pyarrow", "Parquet files"), importlib.import_module("pyarrow.parquet")


def _char_boundary(b: bytes) -> int:
    """Length of the longest prefix of ``b`` that does not end inside a UTF-8 character."""
    for k in range(1, min(4, len(b)) + 1):
        c = b[-k]
        if c & 0xC0 != 0x80:  # an ASCII or lead byte, k bytes from the end
            need = 1 if c < 0x80 else 2 if c < 0xE0 else 3 if c < 0xF0 else 4
            return len(b) if need <= k else len(b) - k
    return len(b)
