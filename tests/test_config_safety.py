"""Configs cannot run arbitrary code or leak secrets: an allowlist for ``_target_``, literal secrets refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY, run_cli
from decoderlab.config import check_no_secret_overrides, validate
from decoderlab.errors import ConfigError


@pytest.mark.parametrize("target", ["torch.load", "os.system", "builtins.eval", "lightning.pytorch.Trainer"])
def test_a_target_outside_the_allowlist_is_named(target: str, compose):
    with pytest.raises(ConfigError, match=f"logger.csv._target_={target}: not an allowed _target_"):
        validate(compose([f"logger.csv._target_={target}"]))


def test_lightning_loggers_are_allowed(compose):
    validate(compose(["logger=[csv,tensorboard,wandb]"]))


@pytest.mark.parametrize("key", ["logger.wandb.api_key", "logger.wandb.token", "logger.csv.password"])
def test_a_literal_secret_is_refused_and_an_env_reference_is_not(key: str, compose):
    with pytest.raises(ConfigError, match=f"{key}: a literal secret is refused") as err:
        validate(compose([f"+{key}=hunter2"]))
    assert "hunter2" not in str(err.value)
    validate(compose([f"+{key}=" + "${oc.env:SOME_VAR,x}"]))
    with pytest.raises(ConfigError, match="a literal secret on the command line is refused"):
        check_no_secret_overrides([f"+{key}=hunter2"])
    check_no_secret_overrides([f"+{key}=" + "${oc.env:SOME_VAR}", "model.n_layers=2"])


@pytest.mark.slow
def test_a_secret_on_the_command_line_is_refused_before_anything_is_written(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "+logger.wandb.api_key=hunter2"], cwd=tmp_path)
    assert out.returncode == 1 and "literal secret" in " ".join(out.stderr.split()) and not run.exists()
    assert "hunter2" not in out.stderr + out.stdout
