"""Tokenizers backed by Hugging Face ``tokenizers``: byte-level BPE trained here (``bpe``) and any
``tokenizer.json`` file (``pretrained``).

Byte-level BPE (GPT-2, https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf
§2.2) maps every UTF-8 byte to one of 256 printable characters before merging, so nothing is ever unknown and
encode/decode round-trips any text exactly, Chinese included. The byte length of a token is the length of the
byte string it maps back to.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING

from decoderlab.components.tokenizers import (
    DECODERLAB_FILE,
    TOKENIZERS,
    Tokenizer,
    file_sha256,
    read_json_file,
)
from decoderlab.errors import ConfigError, UserError
from decoderlab.registry import ComponentConfig

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (HF's ByteLevel alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _is_byte_level(blob: dict) -> bool:
    """Whether the decoder maps tokens back through the byte-level alphabet."""
    dec = blob.get("decoder") or {}
    parts = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    return any(p and p.get("type") == "ByteLevel" for p in parts)


def _model_token_bytes(token: str, byte_level: bool, blob: dict) -> int:
    """UTF-8 bytes of text one vocabulary entry stands for."""
    u2b = unicode_to_bytes()
    if byte_level and all(c in u2b for c in token):
        return len(token)  # one alphabet character per byte
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return 1  # SentencePiece byte fallback
    model = blob.get("model") or {}
    prefix = model.get("continuing_subword_prefix") or ""
    if prefix and token.startswith(prefix):
        token = token[len(prefix):]
    return len(token.replace("\u2581", " ").encode("utf-8"))  # Metaspace's "▁" is a space


def hf_token_bytes(hf: Any) -> np.ndarray:
    """(vocab_size,) bytes per id of a HF tokenizer: exact for byte-level ones; special tokens 0."""
    blob = json.loads(hf.to_str())
    byte_level = _is_byte_level(blob)
    vocab = hf.get_vocab(with_added_tokens=True)
    out = np.zeros(max(vocab.values(), default=-1) + 1, dtype=np.int64)
    for token, i in hf.get_vocab(with_added_tokens=False).items():
        out[i] = _model_token_bytes(token, byte_level, blob)
    for i, added in hf.get_added_tokens_decoder().items():
        out[i] = 0 if added.special else len(added.content.encode("utf-8"))
    return out


def hf_from_blob(blob: dict, source: str) -> Any:
    """A ``tokenizers.Tokenizer`` from a parsed tokenizer.json; a bad file is a :class:`UserError` naming it."""
    from tokenizers import Tokenizer as HFTok

    try:
        return HFTok.from_str(json.dumps(blob))
    except Exception as e:  # noqa: BLE001 - the Rust parser raises a bare Exception
        raise UserError(f"{source} is not a valid Hugging Face tokenizer.json: {e}") from None


class HFTokenizer(Tokenizer):
    """Base of tokenizers backed by a HF ``tokenizers.Tokenizer`` (also the result of extending one)."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self._hf: Any = None
        self._token_bytes: np.ndarray | None = None

    @property
    def hf(self) -> Any:
        if self._hf is None:
            self.set_hf(self._load())
        return self._hf

    def _load(self) -> Any:
        raise UserError(f"tokenizer={self.cfg.name} has no vocabulary yet: fit it on a corpus or load a saved one")

    def set_hf(self, hf: Any) -> None:
        hf.no_truncation()  # a tokenizer.json may carry a model's max_length: never cut a document short
        hf.no_padding()
        self._hf, self._token_bytes = hf, None

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        if self._token_bytes is None:
            self._token_bytes = hf_token_bytes(self.hf)
        return self._token_bytes

    def state(self) -> dict:
        return {"hf": json.loads(self.hf.to_str())}

    def load_state(self, state: dict, source: str = "tokenizer state") -> None:
        if "hf" in state:
            self.set_hf(hf_from_blob(state["hf"], source))

    def identity(self) -> dict:
        return {"hf": json.loads(self.hf.to_str())}  # where the file came from does not matter

    def hf_export(self) -> str:
        return self.hf.to_str(pretty=True)


@dataclass
class BPEConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "vocab_size": "[1, inf)",
        "min_frequency": "[1, inf)",
    }
    vocab_size: int = 1024  # including the 256 byte tokens
    min_frequency: int = 2  # a pair is merged only if it occurs at least this often in the training split


@TOKENIZERS.register("bpe", BPEConfig)
class BPETokenizer(HFTokenizer):
    """Byte-level BPE (GPT-2 style) trained on the training split with HF tokenizers; never unknown."""

    fit_on = "train"

    def __init__(self, cfg: BPEConfig):
        super().__init__(cfg)
        if cfg.vocab_size < 256:
            raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size}: byte-level BPE needs at least the 256 bytes")
        if cfg.min_frequency < 1:
            raise ConfigError(f"tokenizer.min_frequency must be >= 1, got {cfg.min_frequency}")

    def fit(self, texts: Iterable[str]) -> None:
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers, trainers

        hf = HFTok(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.cfg.vocab_size, min_frequency=self.cfg.min_frequency, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
        )
        t0 = time.perf_counter()
        hf.train_from_iterator(texts, trainer)
        self.set_hf(hf)
        log.info("trained byte-level BPE: %d tokens (asked %d, min_frequency %d) in %.1f s",
                 hf.get_vocab_size(), self.cfg.vocab_size, self.cfg.min_frequency, time.perf_counter() - t0)


@dataclass
class PretrainedConfig(ComponentConfig):
    path: str = MISSING  # a Hugging Face tokenizer.json (or a directory holding one)


@TOKENIZERS.register("pretrained", PretrainedConfig)
class PretrainedTokenizer(HFTokenizer):
    """Any Hugging Face ``tokenizer.json`` file, used as it is (its hash is part of the cache key)."""

    def file(self) -> Path:
        path = Path(self.cfg.path).expanduser()
        return path / "tokenizer.json" if path.is_dir() else path

    def _load(self) -> Any:
        path = self.file()
        blob = read_json_file(path, "tokenizer.path: tokenizer file")
        if isinstance(blob, dict) and "decoderlab_tokenizer" in blob:  # a decoderlab record: take its HF part
            if "hf" not in blob.get("state", {}):
                kind = blob["decoderlab_tokenizer"].get("name")
                raise UserError(f"tokenizer.path: {path} holds a decoderlab '{kind}' tokenizer, not a Hugging Face "
                                f"tokenizer.json; use tokenizer={kind} or tokenizer=extend tokenizer.base={path}")
            blob = blob["state"]["hf"]
        if path.name != DECODERLAB_FILE and not (isinstance(blob, dict) and "model" in blob):
            raise UserError(f"tokenizer.path: {path} is not a Hugging Face tokenizer.json (no 'model' section)")
        return hf_from_blob(blob, f"tokenizer.path: {path}")

    def cache_key(self) -> dict:
        path = self.file()
        if not path.is_file():
            raise UserError(f"tokenizer.path: tokenizer file not found: {path}")
        return {**asdict(self.cfg), "sha256": file_sha256(path)}
