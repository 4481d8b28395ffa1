"""Tokenizers: the ``tokenizer`` slot.

Contract (:class:`Tokenizer`): ``encode(str) -> np.ndarray`` of ids, ``decode(ids) -> str``, ``vocab_size``,
``token_bytes()`` (UTF-8 bytes each id stands for, so bits-per-byte compares runs across tokenizers),
``fit(texts)`` for tokenizers learned from the corpus (``fit_on`` says which split), and ``to_json()`` /
:func:`load_tokenizer` so a run's tokenizer is saved beside (and inside) its checkpoints. Round trips are exact
where the scheme allows. Builders are called as ``builder(cfg)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from decoderlab.errors import DataError, UserError
from decoderlab.registry import ComponentConfig, Registry


class Tokenizer:
    """Base class; see the module docstring for the contract."""

    fit_on: str | None = None  # None: fixed vocabulary; "all" or "train": learned from that part of the corpus

    def __init__(self, cfg: ComponentConfig):
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

    def to_json(self) -> str:
        return json.dumps({"decoderlab_tokenizer": asdict(self.cfg), "state": self.state()}, ensure_ascii=False)

    def cache_key(self) -> dict:
        """What decides the ids before fitting: the config (file-based tokenizers add the file's hash)."""
        return asdict(self.cfg)

    def fingerprint(self) -> str:
        """A hash of everything that decides the ids a text gets."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path


TOKENIZERS: Registry[Tokenizer] = Registry("tokenizer", Tokenizer)


def tokenizer_from_json(text: str, source: str = "<string>") -> Tokenizer:
    """Rebuild a tokenizer saved by :meth:`Tokenizer.to_json`."""
    try:
        blob = json.loads(text)
        cfg = blob["decoderlab_tokenizer"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{source}: not a decoderlab tokenizer file ({e})") from None
    tok = TOKENIZERS.build(cfg)
    tok.load_state(blob.get("state", {}))
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    return tokenizer_from_json(path.read_text(encoding="utf-8"), str(path))


@dataclass
class CharConfig(ComponentConfig):
    # What to do with a character that is not in the vocabulary: "error" (name it) or "unk" (map to <unk>).
    unknown: str = "error"


@TOKENIZERS.register("char", CharConfig)
class CharTokenizer(Tokenizer):
    """One id per Unicode code point seen in the corpus (suits Chinese: no byte fallback needed)."""

    fit_on = "all"
    UNK = "<unk>"

    def __init__(self, cfg: CharConfig):
        super().__init__(cfg)
        if cfg.unknown not in ("error", "unk"):
            raise ValueError(f"tokenizer.unknown must be 'error' or 'unk', got '{cfg.unknown}'")
        self.chars: list[str] = []
        self._cps = np.zeros(0, dtype=np.uint32)
        self.unk_count = 0

    @property
    def _offset(self) -> int:
        return 1 if self.cfg.unknown == "unk" else 0  # id 0 is <unk> when the policy allows unknowns

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + self._offset

    def fit(self, texts: Iterable[str]) -> None:
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        self.load_state({"chars": sorted(seen)})

    def state(self) -> dict:
        return {"chars": self.chars}

    def load_state(self, state: dict) -> None:
        self.chars = list(state.get("chars", []))
        self._cps = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    def encode(self, text: str) -> np.ndarray:
        if not self.chars:
            raise UserError("char tokenizer has no vocabulary: fit it on a corpus or load a saved one")
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,) code points
        idx = np.searchsorted(self._cps, cps).clip(max=len(self._cps) - 1)
        known = self._cps[idx] == cps
        if not known.all():
            bad = int(np.argmin(known))
            if self.cfg.unknown == "error":
                raise DataError(
                    f"character {text[bad]!r} (U+{ord(text[bad]):04X}) at position {bad} is not in the char "
                    f"tokenizer's vocabulary of {len(self.chars)} characters; set tokenizer.unknown=unk to map "
                    f"unknown characters to <unk>"
                )
            self.unk_count += int((~known).sum())
        ids = idx.astype(np.int64) + self._offset
        if self._offset:
            ids[~known] = 0
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        off = self._offset
        return "".join(self.UNK if i < off else self.chars[i - off] for i in (int(i) for i in ids))

    def token_bytes(self) -> np.ndarray:
        # <unk> stands for one unknown character; counted as one byte (the smallest it can be).
        lengths = [len(c.encode("utf-8")) for c in self.chars]
        return np.array([1] * self._offset + lengths, dtype=np.int64)


@TOKENIZERS.register("byte", ComponentConfig)
class ByteTokenizer(Tokenizer):
    """Raw UTF-8 bytes: a vocabulary of 256, nothing is ever unknown."""

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        return np.ones(256, dtype=np.int64)
