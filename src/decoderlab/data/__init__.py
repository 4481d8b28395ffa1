"""Corpora, tokenized caches and the Lightning data module (``decoderlab.data.module``, imported lazily:
``import lightning`` costs seconds that ``--help`` and config errors should not pay)."""

from decoderlab.data import files, hf  # noqa: F401  (register data=text and data=hf)
from decoderlab.data.cache import TokenizedCorpus, prepare
from decoderlab.data.corpora import CORPORA, Corpus, DataConfig, Document

__all__ = ["CORPORA", "Corpus", "DataConfig", "Document", "TokenizedCorpus", "prepare"]
