"""Config composition: every option of every group composes, validates and builds; bad configs are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from decoderlab.cli import all_registries
from decoderlab.config import register_schema, validate
from decoderlab.errors import ConfigError
from decoderlab.runner import build_model

REGISTRIES = all_registries()  # core + plugins, as the CLI sees them
register_schema()
OPTIONS = [(g, n) for g, r in REGISTRIES.items() for n in r.names()]


@pytest.mark.parametrize("group,name", OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_every_option_composes_and_validates(group, name, compose):
    overrides = [f"{group}={name}"]
    if group == "data" and name == "text":
        overrides.append("data.paths=[x.txt]")
    if group == "data" and name == "hf":
        overrides.append("data.path=corpus")  # composing does not read it (tests/test_data_corpora.py)
    if group == "tokenizer" and name == "pretrained":
        overrides.append("tokenizer.path=tokenizer.json")  # composing does not read it (tests/test_tokenizers.py)
    if group == "tokenizer" and name == "extend":
        overrides.append("tokenizer.base=byte")
    cfg = compose(overrides)
    assert cfg[group.split("/")[0]] is not None
    validate(cfg)
    if group.startswith("model/"):
        assert cfg.model[group.split("/")[1]].name == name
        model = build_model(cfg, vocab_size=32)
        assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 32)


def test_defaults_are_nanogpt_cpu_recipe(compose):
    cfg = compose([])
    assert (cfg.model.n_layers, cfg.model.n_heads, cfg.model.d_model, cfg.model.block_size) == (4, 4, 128, 64)
    assert cfg.loader.batch_size == 12 and cfg.tokenizer.name == "char" and cfg.data.name == "shakespeare"
    assert set(cfg.logger) == {"csv", "wandb"}


def test_component_field_override_is_typed(compose):
    cfg = compose(["model/positional=rope", "model.positional.base=500000"])
    assert cfg.model.positional.base == 500000.0
    with pytest.raises(Exception, match="model.positional.base"):
        compose(["model/positional=rope", "model.positional.base=abc"])


def test_plus_added_unknown_keys_are_rejected_by_name(compose):
    cfg = compose(["+model.n_layr=4", "+trainer.max_stepz=3", "+model.positional.foo=1"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    for key in ("model.n_layr", "trainer.max_stepz", "model.positional.foo"):
        assert f"unknown key '{key}'" in msg


def test_a_logger_entry_without_a_target_is_refused_before_anything_runs(compose):
    """It used to reach Lightning as a plain dict and fail with a traceback once the data was prepared."""
    with pytest.raises(ConfigError) as e:
        validate(compose(["+logger.foo={a: 1}", "+logger.bar=3"]))
    for key in ("foo", "bar"):
        assert f"logger.{key}: a logger needs a _target_ (a Lightning logger class, e.g. " \
               "lightning.pytorch.loggers.CSVLogger) or null to switch it off" in str(e.value)
    validate(compose(["logger=csv", "+logger.off=null"]))


def test_all_missing_values_reported_at_once(compose):
    cfg = compose(["data=text", "model.d_model=???"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "missing value(s), set them on the command line: data.paths, model.d_model" in str(e.value)


def test_indivisible_heads_named(compose):
    cfg = compose(["model.d_model=130"])
    with pytest.raises(ConfigError, match="model.d_model=130 must be divisible by model.n_heads=4"):
        validate(cfg)


def test_saved_config_never_resolves_logger_secrets(monkeypatch, compose):
    from decoderlab.runner import saved_config

    monkeypatch.setenv("DECODERLAB_TEST_SECRET", "s3cr3t-value")
    cfg = compose(["+logger.wandb.api_key=${oc.env:DECODERLAB_TEST_SECRET}", "model.n_layers=3"])
    text = saved_config(cfg)
    assert "s3cr3t-value" not in text and "${oc.env:DECODERLAB_TEST_SECRET}" in text
    assert "n_layers: 3" in text  # everything else is resolved


@pytest.mark.parametrize("override,message", [
    ("model.n_heads=0", r"model.n_heads=0 is out of range: allowed \[1, inf\)"),
    ("optim.lr=0", r"optim.lr=0.0 is out of range: allowed \(0, inf\)"),
    ("seed=-1", r"seed=-1 is out of range: allowed \[0, inf\)"),
])
def test_sizes_lr_and_seed_are_checked_before_anything_divides_by_them(override, message, compose):
    with pytest.raises(ConfigError, match=message):
        validate(compose([override, "model/positional=rope"]))  # rope's check() would divide by n_heads


EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name, compose):
    cfg = compose([f"experiment={name}"])
    validate(cfg)
    if name.endswith("_ablation"):
        assert cfg.param_budget == 800000 and "param_budget" not in cfg.model  # a run-level key
