"""``extend``: a base tokenizer plus new tokens, base ids unchanged (new ids are appended after them).

The seed's case: an English-centric vocabulary sees a Chinese character as 2-3 byte tokens; adding the corpus's
frequent CJK characters as single tokens shrinks the token count of Chinese text, and a model trained with the
base tokenizer can be grown into it (``init_from``: old embedding rows copied, new rows initialized at the
mean of the old ones, see :mod:`decoderlab.vocab`).

Bases: a tokenizer file (a run or cache directory, a decoderlab record or any HF ``tokenizer.json``), or a
registered name (``bpe``, ``char``, ``byte``) fitted on the training split with its defaults. HF-backed bases get
HF "added tokens" (matched before the base's own splitting); ``byte`` becomes a merge-free byte-level BPE with the
same ids; ``char`` appends characters.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import MISSING

from decoderlab.components.tokenizers import (
    TOKENIZERS,
    Tokenizer,
    file_sha256,
    load_tokenizer,
    tokenizer_from_json,
)
from decoderlab.components.tokenizers.char import ByteTokenizer, CharTokenizer
from decoderlab.components.tokenizers.hf import HFTokenizer, bytes_to_unicode, hf_from_blob
from decoderlab.errors import ConfigError, DataError, UserError
from decoderlab.registry import ComponentConfig

log = logging.getLogger(__name__)

# CJK ideographs (URO, extensions A-F, compatibility), CJK symbols and punctuation, full-width forms.
CJK_RE = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
    "\U00020000-\U0002ebef\U0002f800-\U0002fa1f]"
)
NAMED_BASES = ("bpe", "char", "byte")


@dataclass
class ExtendConfig(ComponentConfig):
    RANGES = {  # allowed values, checked at composition (decoderlab.ranges)
        "min_frequency": "[1, inf)",
        "max_added": "[1, inf)",
    }
    # The tokenizer to extend: a file / run directory (tokenizer.json) or a name (bpe, char, byte) fitted here.
    base: str = MISSING
    add_cjk: bool = True  # add the training split's CJK characters that the base splits into several tokens
    min_frequency: int = 5  # ... that occur at least this often
    max_added: int | None = None  # keep at most this many new tokens (token file first, then most frequent CJK)
    tokens_file: str | None = None  # UTF-8 file, one token per line, added (in order) before the CJK characters


def is_single_token(tok: Tokenizer, text: str) -> bool:
    """Whether ``tok`` already encodes ``text`` as one id that decodes back to it."""
    try:
        ids = tok.encode(text)
    except DataError:  # char base with unknown=error
        return False
    return len(ids) == 1 and tok.decode(ids) == text


def byte_level_identity() -> HFTokenizer:
    """A merge-free byte-level BPE whose ids are the raw byte values: ``byte`` in a form HF can add tokens to."""
    vocab = {c: b for b, c in bytes_to_unicode().items()}
    blob = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                            "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": []},
    }
    out = HFTokenizer(ComponentConfig(name="byte"))
    out.set_hf(hf_from_blob(blob, "byte-level identity"))
    return out


def add_tokens(base: Tokenizer, tokens: list[str]) -> Tokenizer:
    """A tokenizer with ``base``'s ids and ``tokens`` appended as ids ``base.vocab_size + i``."""
    if isinstance(base, CharTokenizer):
        long = [t for t in tokens if len(t) != 1]
        if long:
            raise ConfigError(f"tokenizer=extend: a char base can only add single characters, got {long[0]!r}")
        return base.with_chars(tokens)
    if isinstance(base, ByteTokenizer):
        base = byte_level_identity()
    if not isinstance(base, HFTokenizer):
        raise ConfigError(f"tokenizer=extend: cannot add tokens to a '{base.cfg.name}' base; "
                          f"use a char, byte or Hugging Face-backed base (bpe, pretrained, a tokenizer.json)")
    from tokenizers import AddedToken

    hf = hf_from_blob(json.loads(base.hf.to_str()), "extend base")
    v0 = len(base.token_bytes())
    hf.add_tokens([AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False) for t in tokens])
    out = HFTokenizer(ComponentConfig(name="extend"))
    out.set_hf(hf)
    bad = [t for i, t in enumerate(tokens) if hf.token_to_id(t) != v0 + i]
    if bad:
        raise DataError(f"tokenizer=extend: token {bad[0]!r} did not get a new id after the base's {v0}")
    return out


@TOKENIZERS.register("extend", ExtendConfig)
class ExtendTokenizer(Tokenizer):
    """A base tokenizer plus new tokens (e.g. the corpus's CJK characters); base ids unchanged."""

    fit_on = "train"

    def __init__(self, cfg: ExtendConfig):
        super().__init__(cfg)
        if cfg.min_frequency < 1:
            raise ConfigError(f"tokenizer.min_frequency must be >= 1, got {cfg.min_frequency}")
        if cfg.max_added is not None and cfg.max_added < 0:
            raise ConfigError(f"tokenizer.max_added must be >= 0 or null, got {cfg.max_added}")
        self.base: Tokenizer | None = None
        self.inner: Tokenizer | None = None
        self.added: list[str] = []
        self.stats: dict = {}

    # -- the contract, delegated to the extended tokenizer ------------------------------------------------
    def _inner(self) -> Tokenizer:
        if self.inner is None:
            raise UserError("tokenizer=extend has no vocabulary yet: fit it on a corpus or load a saved one")
        return self.inner

    @property
    def vocab_size(self) -> int:
        return self._inner().vocab_size

    def encode(self, text: str) -> np.ndarray:
        return self._inner().encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self._inner().decode(ids)

    def token_bytes(self) -> np.ndarray:
        return self._inner().token_bytes()

    def identity(self) -> dict:
        return self._inner().identity()

    def hf_export(self) -> str | None:
        return self._inner().hf_export()

    def report(self) -> dict:
        return {**self.stats, **(self.inner.report() if self.inner is not None else {})}

    def state(self) -> dict:
        assert self.base is not None
        return {"base": json.loads(self.base.to_json()), "added": self.added, "report": self.stats}

    def load_state(self, state: dict) -> None:
        if "base" not in state:
            return
        self.base = tokenizer_from_json(json.dumps(state["base"]), "tokenizer=extend base")
        self.added = list(state.get("added", []))
        self.inner = add_tokens(self.base, self.added)
        self.stats = dict(state.get("report", {}))

    # -- configuration ------------------------------------------------------------------------------------
    def _base_path(self) -> Path | None:
        base = str(self.cfg.base)
        path = Path(base).expanduser()
        if path.exists():
            return path
        if base in NAMED_BASES:
            return None
        raise ConfigError(f"tokenizer.base='{base}' is neither an existing tokenizer file/directory nor one of "
                          f"{', '.join(NAMED_BASES)}")

    def cache_key(self) -> dict:
        key = asdict(self.cfg)
        path = self._base_path()
        if path is not None:
            key["base_fingerprint"] = load_tokenizer(path).fingerprint()
        if self.cfg.tokens_file:
            key["tokens_file_sha256"] = file_sha256(self._tokens_path())
        return key

    def _tokens_path(self) -> Path:
        path = Path(str(self.cfg.tokens_file)).expanduser()
        if not path.is_file():
            raise UserError(f"tokenizer.tokens_file: file not found: {path}")
        return path

    def file_tokens(self) -> list[str]:
        if not self.cfg.tokens_file:
            return []
        path = self._tokens_path()
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise UserError(f"tokenizer.tokens_file: {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
        return [ln.rstrip("\r") for ln in lines if ln.rstrip("\r")]

    # -- fitting ------------------------------------------------------------------------------------------
    def load_base(self, texts: list[str]) -> Tokenizer:
        path = self._base_path()
        if path is not None:
            return load_tokenizer(path)
        base = TOKENIZERS.build({"name": self.cfg.base})
        if base.fit_on:
            base.fit(texts)
        return base

    def candidates(self, base: Tokenizer, texts: list[str]) -> tuple[list[str], int]:
        """New tokens in order (file tokens, then CJK characters by frequency) and how many came from the file."""
        out = list(dict.fromkeys(t for t in self.file_tokens() if not is_single_token(base, t)))
        n_file = len(out)
        if self.cfg.add_cjk:
            counts = Counter(ch for t in texts for ch in CJK_RE.findall(t))
            seen = set(out)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            out += [c for c, n in ranked if n >= self.cfg.min_frequency and c not in seen
                    and not is_single_token(base, c)]
        if self.cfg.max_added is not None:
            out = out[: self.cfg.max_added]
        return out, min(n_file, len(out))

    def fit(self, texts: Iterable[str]) -> None:
        texts = list(texts)
        self.base = self.load_base(texts)
        self.added, n_file = self.candidates(self.base, texts)
        self.inner = add_tokens(self.base, self.added)
        self.stats = self.measure(texts, n_file)
        self.inner = add_tokens(self.base, self.added)  # fresh counters (<unk>) for the corpus's own encoding
        s = self.stats
        shrink = f"{s['token_shrink']:.1%}" if s["token_shrink"] is not None else "n/a (the base cannot encode it)"
        log.info("tokenizer=extend: added %d tokens to %s (%d from the token file, %d CJK characters with frequency "
                 ">= %d); vocabulary %d -> %d; training split %s -> %d tokens (shrank by %s)",
                 s["added_tokens"], s["base"], n_file, s["added_tokens"] - n_file, self.cfg.min_frequency,
                 s["base_vocab_size"], s["vocab_size"], s["train_tokens_base"], s["train_tokens"], shrink)

    def measure(self, texts: list[str], n_file: int) -> dict:
        """How many tokens were added and how much the training split's token count shrank."""
        assert self.base is not None and self.inner is not None
        try:
            before: int | None = sum(len(self.base.encode(t)) for t in texts)
        except DataError:
            before = None
        after = sum(len(self.inner.encode(t)) for t in texts)
        return {
            "base": self.base.cfg.name, "added_tokens": len(self.added), "added_from_file": n_file,
            "base_vocab_size": self.base.vocab_size, "vocab_size": self.inner.vocab_size,
            "train_tokens_base": before, "train_tokens": after,
            "token_shrink": None if not before else 1 - after / before,
        }

    def base_fingerprint(self) -> str:
        assert self.base is not None
        return self.base.fingerprint()
