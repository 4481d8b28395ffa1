"""Lightning plumbing: the wandb mode decision, logger config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decoderlab.errors import ConfigError
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
