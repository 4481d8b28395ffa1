"""Configs cannot run arbitrary code or leak secrets: an allowlist for ``_target_``, literal secrets refused."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("arg,key", [("+logger.x={password:hunter2},{password:other}", "logger.x.password"),
                                     ("+logger.x={opts:[1,{token:hunter2}]}", "logger.x.opts[1].token"),
                                     ("hydra.job.env_set.WANDB_API_KEY=hunter2", "hydra.job.env_set.WANDB_API_KEY")])
def test_a_secret_inside_a_value_or_a_sweep_on_the_command_line_is_refused(arg: str, key: str):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: a literal secret on the command line is refused") as e:
        check_no_secret_overrides(["-m", arg])
    assert "hunter2" not in str(e.value)
    check_no_secret_overrides(["-m", "seed=1,2", "+logger.x={password:${oc.env:P}}", "lr=interval(0,1)"])


@pytest.mark.slow
def test_a_secret_on_the_command_line_is_refused_before_anything_is_written(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "+logger.wandb.api_key=hunter2"], cwd=tmp_path)
    assert out.returncode == 1 and "literal secret" in " ".join(out.stderr.split()) and not run.exists()
    assert "hunter2" not in out.stderr + out.stdout


LEAKY = {"logger.wandb.api_key": "# @package _global_\nlogger:\n  wandb:\n    api_key: hunter2\n",
         "hydra.job.env_set.WANDB_API_KEY": "# @package _global_\nhydra:\n  job:\n    env_set:\n"
                                            "      WANDB_API_KEY: hunter2\n"}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(LEAKY))
@pytest.mark.parametrize("multirun", [False, True])
def test_a_secret_in_a_yaml_file_is_refused_before_hydra_saves_the_config(tmp_path: Path, multirun: bool, key: str):
    """Hydra saves the composed config (.hydra/config.yaml, multirun.yaml) before the task runs: the refusal comes
    from a Hydra callback, first, and nothing holding the secret is written."""
    (tmp_path / "confs" / "experiment").mkdir(parents=True)
    (tmp_path / "confs" / "experiment" / "leaky.yaml").write_text(LEAKY[key])
    where = ["seed=1,2", "hydra.sweep.dir=out"] if multirun else ["hydra.run.dir=out"]
    out = run_cli(["decoderlab-train", *(["-m"] if multirun else []), *TINY, *where, f"hydra.searchpath=[file://{tmp_path / 'confs'}]",
                   "experiment=leaky"], cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert f"error: the configuration is refused before anything is written:\n  - {key}: a literal " \
           "secret is refused" in text
    assert not (tmp_path / "out").exists() and "hunter2" not in text


def test_options_in_added_config_dirs_count_as_valid(tmp_path: Path):
    from decoderlab.config import check_group_choices, extra_config_dirs
    from decoderlab.train import conf_dir

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 3\n")
    conf = Path(conf_dir())
    for added in ([f"hydra.searchpath=[file://{tmp_path}]"], ["-cd", str(tmp_path)], [f"--config-dir={tmp_path}"]):
        assert extra_config_dirs(added) == [tmp_path]
        check_group_choices([*added, "experiment=mine"], conf)
    with pytest.raises(ConfigError, match="experiment=mine: unknown option of group experiment"):
        check_group_choices(["experiment=mine"], conf)
    assert extra_config_dirs(["hydra.searchpath=[pkg://elsewhere.conf]"]) is None  # Hydra alone judges then
    check_group_choices(["hydra.searchpath=[pkg://elsewhere.conf]", "experiment=mine"], conf)


def test_a_searchpath_in_the_primary_config_counts_too(tmp_path: Path):
    """A primary config in an added directory (train.yaml, or -cn NAME) may list more directories under its own
    hydra.searchpath: Hydra reads them, so the up-front check must too."""
    from decoderlab.config import check_group_choices, extra_config_dirs
    from decoderlab.train import conf_dir

    more, mine = tmp_path / "more", tmp_path / "mine"
    (more / "experiment").mkdir(parents=True)
    (more / "experiment" / "far.yaml").write_text("# @package _global_\nseed: 5\n")
    mine.mkdir()
    (mine / "lab.yaml").write_text(f"defaults:\n  - train\n  - _self_\nhydra:\n  searchpath:\n    - file://{more}\n")
    conf = Path(conf_dir())
    assert extra_config_dirs(["-cd", str(mine), "-cn", "lab"], conf) == [mine, more]
    check_group_choices(["-cd", str(mine), "-cn", "lab", "experiment=far"], conf)
    assert extra_config_dirs(["-cd", str(mine)], conf) == [mine]  # train.yaml (the default name) is not there
    with pytest.raises(ConfigError, match="experiment=far: unknown option of group experiment"):
        check_group_choices(["-cd", str(mine), "experiment=far"], conf)
    (mine / "lab.yaml").write_text("hydra:\n  searchpath: [pkg://elsewhere.conf]\n")
    assert extra_config_dirs(["-cd", str(mine), "--config-name=lab"], conf) is None  # Hydra alone judges then
    (mine / "lab.yaml").write_text("hydra: [unclosed\n")
    assert extra_config_dirs(["-cd", str(mine), "-cn", "lab"], conf) is None  # Hydra names the broken file
