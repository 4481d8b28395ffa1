"""Lightning plumbing: the wandb mode decision, logger config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decoderlab.errors import ConfigError, UserError
from decoderlab.fit import build_loggers, wandb_offline_default


@pytest.mark.parametrize("env,offline", [
    ({}, True),  # no key: offline, never a prompt
    ({"WANDB_API_KEY": "k"}, False),
    ({"WANDB_MODE": "online"}, False),
    ({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}, True),
    ({"WANDB_MODE": "disabled"}, False),  # left to wandb itself: offline=True would overwrite "disabled"
])
def test_wandb_mode_default(monkeypatch, env, offline):
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert wandb_offline_default() is offline


def test_a_logger_entry_without_target_is_named(tmp_path: Path):
    cfg = OmegaConf.create({"logger": {"foo": 1}, "project": "p", "run_name": None})
    with pytest.raises(ConfigError, match="logger.foo: expected a logger config with a _target_, got 1"):
        build_loggers(cfg, tmp_path, {})


def test_a_bad_logger_keyword_is_named(tmp_path: Path):
    cfg = OmegaConf.create({"logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "nme": "x"}},
                            "project": "p", "run_name": None})
    with pytest.raises(ConfigError, match="logger.csv: cannot create lightning.pytorch.loggers.CSVLogger"):
        build_loggers(cfg, tmp_path, {})


def test_resume_verifies_the_checkpoint(tmp_path: Path):
    """Lightning loads a resumed checkpoint through AtomicCheckpointIO: a corrupt one is an error naming it."""
    import torch

    from decoderlab.checkpoint import write_checkpoint
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.fit import AtomicCheckpointIO
    from decoderlab.model import Decoder, ModelConfig

    tok = TOKENIZERS.build({"name": "byte"})
    path = write_checkpoint(tmp_path / "last.ckpt", Decoder(ModelConfig(n_layers=1, d_model=16, n_heads=2), 256), tok)
    assert "checksum" in AtomicCheckpointIO().load_checkpoint(path)["decoderlab"]
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["model.tok_emb.weight"].zero_()
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=rf"{path}: checkpoint is corrupt"):
        AtomicCheckpointIO().load_checkpoint(path)
