"""Fixed-alphabet tokenizers: one id per Unicode character (``char``) or per UTF-8 byte (``byte``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from decoderlab.components.tokenizers import TOKENIZERS, Tokenizer
from decoderlab.errors import ConfigError, DataError, UserError
from decoderlab.registry import ComponentConfig

log = logging.getLogger(__name__)


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
            raise ConfigError(f"tokenizer.unknown must be 'error' or 'unk', got '{cfg.unknown}'")
        self.chars: list[str] = []  # in id order (sorted when fitted; extensions append)
        self._sorted = np.zeros(0, dtype=np.uint32)  # code points, sorted, for searchsorted
        self._order = np.zeros(0, dtype=np.int64)  # id (before the <unk> offset) of each sorted code point
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
        chars = list(state.get("chars", []))
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise UserError("char tokenizer state: 'chars' must be distinct single characters")
        self.chars = chars
        cps = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(cps, kind="stable")
        self._sorted = cps[self._order]

    def with_chars(self, extra: list[str]) -> CharTokenizer:
        """A copy whose vocabulary is this one's plus ``extra`` (appended: existing ids unchanged)."""
        out = CharTokenizer(self.cfg)
        out.load_state({"chars": self.chars + list(extra)})
        return out

    def encode(self, text: str) -> np.ndarray:
        if not self.chars:
            raise UserError("char tokenizer has no vocabulary: fit it on a corpus or load a saved one")
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,) code points
        idx = np.searchsorted(self._sorted, cps).clip(max=len(self._sorted) - 1)
        known = self._sorted[idx] == cps
        ids = self._order[idx] + self._offset
        if not known.all():
            bad = int(np.argmin(known))
            if self.cfg.unknown == "error":
                raise DataError(
                    f"character {text[bad]!r} (U+{ord(text[bad]):04X}) at position {bad} is not in the char "
                    f"tokenizer's vocabulary of {len(self.chars)} characters; set tokenizer.unknown=unk to map "
                    f"unknown characters to <unk>"
                )
            n_unk = int((~known).sum())
            self.unk_count += n_unk
            log.debug("char tokenizer: %d unknown characters mapped to <unk>", n_unk)
            ids[~known] = 0
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        off = self._offset
        return "".join(self.UNK if i < off else self.chars[i - off] for i in (int(i) for i in ids))

    def token_bytes(self) -> np.ndarray:
        # <unk> stands for one unknown character; counted as one byte (the smallest it can be).
        lengths = [len(c.encode("utf-8")) for c in self.chars]
        return np.array([1] * self._offset + lengths, dtype=np.int64)

    def report(self) -> dict:
        return {"unk_tokens": self.unk_count} if self.cfg.unknown == "unk" else {}

    def hf_export(self) -> str:
        """A Hugging Face ``tokenizer.json``: one token per character (WordLevel), ``<unk>`` at id 0 in unk mode."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import models

        vocab = {c: i + self._offset for i, c in enumerate(self.chars)}
        if self._offset:
            vocab[self.UNK] = 0
        hf = HFTok(models.WordLevel(vocab, unk_token=self.UNK if self._offset else None))
        return _per_character(hf).to_str(pretty=True)


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

    def hf_export(self) -> str:
        """A Hugging Face ``tokenizer.json``: byte-level alphabet, id = byte value, no merges; lossy decode as ours."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers

        from decoderlab.components.tokenizers.hf import bytes_to_unicode

        hf = HFTok(models.BPE({ch: b for b, ch in bytes_to_unicode().items()}, []))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()  # bytes -> UTF-8 with U+FFFD for invalid sequences, as bytes.decode
        return hf.to_str(pretty=True)


def _per_character(hf: Any) -> Any:
    """Split text into single code points (newlines included) and join tokens back with nothing between them."""
    from tokenizers import Regex, decoders, pre_tokenizers

    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf
