"""Corpora, tokenized caches and the Lightning data module."""

from decoderlab.data.cache import TokenizedCorpus, prepare
from decoderlab.data.corpora import CORPORA, Corpus, DataConfig, Document
from decoderlab.data.module import DecoderDataModule, train_batch_offsets

__all__ = [
    "CORPORA", "Corpus", "DataConfig", "Document", "DecoderDataModule", "TokenizedCorpus", "prepare",
    "train_batch_offsets",
]
