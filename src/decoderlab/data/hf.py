"""``data=hf``: a local Hugging Face ``datasets`` corpus, never downloaded at run time.

``data.path`` is a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or local data
files (a file or folder) that ``datasets.load_dataset`` reads with its packaged builders (json, parquet, text,
csv). Rows stream from the memory-mapped Arrow files in ranges that the workers read themselves; every row is one
document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from decoderlab.data.cache import cache_root
from decoderlab.data.corpora import CORPORA, Corpus, DataConfig, Document, Part, documents_from_parts
from decoderlab.data.files import files_fingerprint, optional
from decoderlab.errors import DataError

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".csv": "csv"}
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
ROWS_PER_PART = 1000  # rows a worker reads at a time


@dataclass
class HFConfig(DataConfig):
    path: str = MISSING  # a save_to_disk directory, or local data files / a folder of them
    dataset_split: str = "train"  # which split of a DatasetDict
    text_key: str = "text"  # the column holding the text


@CORPORA.register("hf", HFConfig)
class HFDataset(Corpus):
    """A local Hugging Face ``datasets`` corpus: ``data=hf data.path=DIR`` (save_to_disk or data files); one row
    per document."""

    def __init__(self, cfg: HFConfig):
        super().__init__(cfg)
        self._ds: Any = None

    def holdout_rule(self) -> str:
        return "document"

    def dataset(self) -> Any:
        if self._ds is None:
            self._ds = self._load()
        return self._ds

    def _load(self) -> Any:
        path = Path(os.path.expanduser(str(self.cfg.path)))
        if not path.exists():
            given = str(self.cfg.path)
            hub_like = not given.startswith(("/", ".", "~")) and given.count("/") <= 1  # 'owner/name' or 'name'
            hint = (" data=hf reads local datasets only, never the Hugging Face Hub at run time: download once with "
                    f"datasets.load_dataset('{given}').save_to_disk('DIR') and set data.path=DIR") if hub_like else ""
            raise DataError(f"data.path={given}: no such local directory or file.{hint}")
        datasets = optional("datasets", "data=hf")
        cache_dir = str(cache_root(self.cfg) / "hf-datasets")  # load_dataset's Arrow copy, beside our cache
        try:
            if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
                ds = datasets.load_from_disk(str(path))
            elif path.is_file():
                builder = BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise DataError(f"data.path={path}: unsupported file type (use {sorted(BUILDERS)})")
                ds = datasets.load_dataset(builder, data_files=str(path), cache_dir=cache_dir)
            else:
                ds = datasets.load_dataset(str(path), cache_dir=cache_dir)
        except (FileNotFoundError, ValueError, datasets.exceptions.DatasetGenerationError) as e:
            raise DataError(f"data.path={path}: cannot load it with datasets: {e}") from None
        return self._pick(ds, path)

    def _pick(self, ds: Any, path: Path) -> Any:
        split, key = self.cfg.dataset_split, self.cfg.text_key
        if isinstance(ds, dict):  # DatasetDict
            if split not in ds:
                raise DataError(f"data.dataset_split={split}: {path} has splits {sorted(ds)}")
            ds = ds[split]
        if key not in ds.column_names:
            raise DataError(f"data.text_key={key}: {path} has columns {ds.column_names}; set data.text_key")
        return ds.select_columns([key])

    def size_hint(self) -> int | None:
        files = [f["filename"] for f in self.dataset().cache_files]
        return sum(os.path.getsize(f) for f in files) or None

    def fingerprint(self) -> str:
        files = [f["filename"] for f in self.dataset().cache_files]
        if not files:
            return super().fingerprint()
        return files_fingerprint([self.cfg.name, self.cfg.dataset_split, self.cfg.text_key], files, stat=False)

    def documents(self) -> Iterator[Document]:
        return documents_from_parts(self)

    def parts(self) -> Iterator[Part]:
        """Ranges of ``ROWS_PER_PART`` rows, as (start, end): a worker reads its rows from the Arrow files."""
        n, size = len(self.dataset()), self.size_hint() or 0
        if n == 0:
            yield Part("bad", str(self.cfg.path), (str(self.cfg.path), "empty shard: no rows"))
        per_row = size / n if size and n else 1000  # bytes per row, to group parts into shards
        for start in range(0, n, ROWS_PER_PART):
            end = min(n, start + ROWS_PER_PART)
            yield Part("hf", str(self.cfg.path), (start, end), int(per_row * (end - start)), size * end // n)

    def read_part(self, part: Part) -> list[str]:
        if part.kind != "hf":
            return super().read_part(part)
        (start, end), key = part.args, self.cfg.text_key
        out = []
        for row, text in enumerate(self.dataset()[start:end][key], start):
            if isinstance(text, str):
                out.append(text)
            else:
                self.bad_record(f"{self.cfg.path} row {row}", f"non-string '{key}': {type(text).__name__}")
        return out
