"""Tokenizers: the ``tokenizer`` slot.

Contract (:class:`Tokenizer`):

- ``encode(str) -> np.ndarray`` of int64 ids, ``decode(ids) -> str``, ``vocab_size``; round trips are exact where
  the scheme allows (byte, byte-level BPE, char without unknowns, extensions of those).
- ``token_bytes()``: (vocab_size,) UTF-8 bytes each id stands for, so bits-per-byte compares runs across
  tokenizers (special tokens 0). Summed over the ids of a text it equals the text's UTF-8 length.
- ``fit(texts)`` for tokenizers learned from the corpus; ``fit_on`` says which split ("all" or "train").
- ``to_json()`` / :func:`tokenizer_from_json`: the full record saved beside (and inside) checkpoints.
  ``save(dir)`` writes ``tokenizer.json`` (a Hugging Face ``tokenizer.json`` for HF-backed tokenizers, with the
  decoderlab record beside it as ``tokenizer.decoderlab.json``); :func:`load_tokenizer` reads either.
- ``cache_key()``: what decides the ids before fitting (the data cache keys on it with the corpus hash);
  ``fingerprint()``: a hash of what decides the ids after fitting (two tokenizers with equal fingerprints
  give every text the same ids; checkpoints are bound to it).
- ``report()``: figures worth logging (``<unk>`` count, tokens added by ``extend``, ...).

Builders are called as ``builder(cfg)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from decoderlab.errors import UserError
from decoderlab.registry import Registry, RegistryError
from decoderlab.rundir import atomic_write

DECODERLAB_FILE = "tokenizer.decoderlab.json"  # full record beside an HF tokenizer.json


class Tokenizer:
    """Base class; see the module docstring for the contract."""

    fit_on: str | None = None  # None: fixed vocabulary; "all" or "train": learned from that part of the corpus

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def fit(self, texts: Iterable[str]) -> None:
        """Learn the vocabulary (no-op for fixed vocabularies)."""

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: how many UTF-8 bytes of text each token id stands for."""
        raise NotImplementedError

    def state(self) -> dict:
        """Fitted state as plain JSON values (the config is saved separately)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def report(self) -> dict[str, Any]:
        """Figures for the log and the run summary; empty by default."""
        return {}

    def to_json(self) -> str:
        return json.dumps({"decoderlab_tokenizer": asdict(self.cfg), "state": self.state()}, ensure_ascii=False)

    def hf_export(self) -> str | None:
        """A Hugging Face ``tokenizer.json`` text for HF-backed tokenizers, else None."""
        return None

    def cache_key(self) -> dict:
        """What decides the ids before fitting: the config (file-based tokenizers add the file's hash)."""
        return asdict(self.cfg)

    def identity(self) -> dict:
        """What decides the ids once fitted (not where a file came from): hashed by :meth:`fingerprint`."""
        return {"cfg": asdict(self.cfg), "state": self.state()}

    def fingerprint(self) -> str:
        """A hash of everything that decides the ids a text gets."""
        blob = json.dumps(self.identity(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line naming the tokenizer, for messages: ``bpe (vocab 512, fingerprint 1a2b...)``."""
        return f"{self.cfg.name} (vocab {self.vocab_size}, fingerprint {self.fingerprint()})"

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` (and ``tokenizer.decoderlab.json`` for HF-backed tokenizers) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        hf = self.hf_export()
        record = directory / DECODERLAB_FILE
        if hf is None:
            record.unlink(missing_ok=True)
            _write(directory / "tokenizer.json", self.to_json())
        else:
            _write(record, self.to_json())
            _write(directory / "tokenizer.json", hf)
        return directory / "tokenizer.json"


def _write(path: Path, text: str) -> None:
    atomic_write(path, text)


TOKENIZERS: Registry[Tokenizer] = Registry("tokenizer", Tokenizer)


def tokenizer_from_json(text: str, source: str = "<string>") -> Tokenizer:
    """Rebuild a tokenizer saved by :meth:`Tokenizer.to_json`."""
    try:
        blob = json.loads(text)
        cfg = blob["decoderlab_tokenizer"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{source}: not a decoderlab tokenizer record ({type(e).__name__}: {e})") from None
    try:
        tok = TOKENIZERS.build(cfg)
    except RegistryError as e:
        raise UserError(f"{source}: {e} (is the plugin that registers it installed?)") from None
    tok.load_state(blob.get("state", {}))
    return tok


def read_json_file(path: Path, what: str = "tokenizer file") -> Any:
    """Parsed JSON of ``path``; a missing or corrupt file is a :class:`UserError` naming it."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer: a run/cache directory, a decoderlab record, or any Hugging Face ``tokenizer.json``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / DECODERLAB_FILE if (path / DECODERLAB_FILE).is_file() else path / "tokenizer.json"
    blob = read_json_file(path)
    if isinstance(blob, dict) and "decoderlab_tokenizer" in blob:
        return tokenizer_from_json(json.dumps(blob), str(path))
    if isinstance(blob, dict) and "model" in blob:  # a plain HF tokenizer.json
        from decoderlab.components.tokenizers.hf import PretrainedConfig, PretrainedTokenizer

        tok = PretrainedTokenizer(PretrainedConfig(name="pretrained", path=str(path)))
        tok.load_state({"hf": blob}, source=str(path))
        return tok
    raise UserError(f"{path} is neither a decoderlab tokenizer record nor a Hugging Face tokenizer.json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# Core tokenizers register themselves on import.
from decoderlab.components.tokenizers.char import ByteTokenizer, CharConfig, CharTokenizer  # noqa: E402
from decoderlab.components.tokenizers.extend import ExtendConfig, ExtendTokenizer  # noqa: E402
from decoderlab.components.tokenizers.hf import (  # noqa: E402
    BPEConfig,
    BPETokenizer,
    HFTokenizer,
    PretrainedConfig,
    PretrainedTokenizer,
)

__all__ = [
    "TOKENIZERS", "Tokenizer", "load_tokenizer", "tokenizer_from_json", "CharConfig", "CharTokenizer",
    "ByteTokenizer", "BPEConfig", "BPETokenizer", "HFTokenizer", "PretrainedConfig", "PretrainedTokenizer",
    "ExtendConfig", "ExtendTokenizer",
]
