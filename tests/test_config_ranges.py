"""Every numeric field of the run schema has a range, checked at composition with one line naming key, value, range."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from conftest import TINY, run_cli
from decoderlab.config import TrainConfig, validate
from decoderlab.errors import ConfigError
from decoderlab.ranges import RANGES, in_range


def _numeric_fields(typ: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(typ):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _numeric_fields(type(default), f"{prefix}{f.name}.")
        elif any(t in str(f.type) for t in ("int", "float")):
            out.append(prefix + f.name)
    return out


NUMERIC = _numeric_fields(TrainConfig)


def test_every_numeric_field_of_the_schema_has_a_range():
    assert NUMERIC and sorted(set(NUMERIC) - set(RANGES)) == []


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("value", [0, -3])
def test_zero_and_negative_values_are_clean_errors_unless_in_range(key: str, value: int, compose):
    cfg = compose([f"{key}={value}"])
    if in_range(value, RANGES[key]):
        validate(cfg)  # an allowed value (e.g. dropout 0, warm-up 0) passes
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    lines = [line for line in str(err.value).splitlines() if key in line]
    assert len(lines) == 1 and f"{key}=" in lines[0] and str(value) in lines[0]
    assert f"allowed {RANGES[key]}" in lines[0]


def test_warmup_longer_than_the_run_warns(compose, caplog):
    with caplog.at_level(logging.WARNING, logger="decoderlab"):
        validate(compose(["optim.warmup_steps=50", "trainer.max_steps=50"]))
    assert "optim.warmup_steps=50 >= trainer.max_steps=50" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("override", ["loader.batch_size=0", "trainer.max_steps=0", "threads=-1"])
def test_bad_values_through_the_cli_end_before_a_run_directory(tmp_path: Path, override: str):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, "logger=csv", f"hydra.run.dir={run}", override], cwd=tmp_path)
    err = " ".join(out.stderr.split())
    assert out.returncode == 1 and "Traceback" not in out.stderr and f"{override} is out of range" in err, err
    assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()


@pytest.mark.parametrize("arg,valid", [("model/attention=flashh", "gqa, mha, mqa, qk_norm"),
                                       ("logger=[csv,tensorbord]", "csv, default, none, tensorboard, wandb")])
def test_an_unknown_option_of_a_group_lists_the_valid_names(arg: str, valid: str):
    from decoderlab.config import check_group_choices
    from decoderlab.train import conf_dir

    bad = arg.split("=")[1].strip("[]").split(",")[-1]
    with pytest.raises(ConfigError, match=f"={bad}: unknown option of group .*; valid: {valid}$"):
        check_group_choices([arg], Path(conf_dir()))
    check_group_choices(["model/attention=gqa", "logger=[csv,tensorboard]", "-m", "seed=1,2"], Path(conf_dir()))
    check_group_choices(["logger='csv'", 'model/positional="rope",learned'], Path(conf_dir()))  # quoted, as Hydra


def test_an_option_set_as_a_value_says_how_to_pick_it(compose):
    with pytest.raises(ConfigError, match="model.attention=flashh: pick an option with model/attention=<name>"):
        validate(compose(["model.attention=flashh"]))


def _component_numeric_fields() -> list[tuple[str, str, str]]:
    """(config key, option, field) of every numeric field of every registered component config, plugins included."""
    from decoderlab.cli import all_registries

    out = []
    for group, registry in all_registries().items():
        for entry in registry:
            for f in dataclasses.fields(entry.config_cls):
                if any(t in str(f.type) for t in ("int", "float")) and "bool" not in str(f.type):
                    out.append((group.replace("/", "."), entry.name, f.name))
    return out


COMPONENT_NUMERIC = _component_numeric_fields()


def test_every_numeric_field_of_every_component_config_has_a_range():
    from decoderlab.cli import all_registries
    from decoderlab.ranges import declared_ranges

    registries = all_registries()
    missing = [f"{key}/{name}.{field}" for key, name, field in COMPONENT_NUMERIC
               if field not in declared_ranges(registries[key.replace(".", "/")].get(name).config_cls)]
    assert COMPONENT_NUMERIC and missing == []


@pytest.mark.parametrize("key, name, field", COMPONENT_NUMERIC, ids=lambda v: str(v))
@pytest.mark.parametrize("value", [0, -3])
def test_component_fields_at_zero_and_negative_are_one_line_errors_unless_in_range(key, name, field, value):
    from decoderlab.cli import all_registries
    from decoderlab.ranges import component_range_problems, declared_ranges

    registry = all_registries()[key.replace(".", "/")]
    entry = registry.get(name)
    spec = declared_ranges(entry.config_cls)[field]
    typed = dataclasses.replace(registry.default_config(name), **{field: value})
    problems = component_range_problems(key, typed)
    if in_range(value, spec):
        assert problems == []
    else:
        assert problems == [f"{key}.{field}={value} is out of range: allowed {spec}"]


@pytest.mark.parametrize("overrides, line", [
    (["model/positional=rope", "model.positional.base=0"], "model.positional.base=0.0 is out of range: allowed (1, inf)"),
    (["model/positional=t5", "model.positional.num_buckets=-3"],
     "model.positional.num_buckets=-3 is out of range: allowed [2, inf)"),
    (["model.norm.eps=0"], "model.norm.eps=0.0 is out of range: allowed (0, inf)"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is out of range: allowed (0, 1)"),
])
def test_component_ranges_are_checked_when_a_run_is_validated(overrides, line, compose):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    key = line.split("=")[0]
    assert [ln.strip(" -") for ln in str(err.value).splitlines() if key + "=" in ln] == [line]


@pytest.mark.parametrize("spec", ["0..1", "[1, 0]", "(a, 1)", "[0, 1, 2]", "0, 1"])
def test_a_malformed_range_is_a_value_error_saying_the_form(spec: str):
    from decoderlab.ranges import parse

    with pytest.raises(ValueError, match=re.escape(f"range {spec!r} is not of the form '[low, high)'")):
        parse(spec)


def _config_cls(ranges: dict[str, str]) -> type:
    from decoderlab.registry import ComponentConfig

    @dataclasses.dataclass
    class KConfig(ComponentConfig):
        RANGES = ranges
        k: float = 0.5
        n: int | None = None
        flag: bool = True

    return KConfig


@pytest.mark.parametrize("ranges, said", [({"k": "0..1", "n": "[1, inf)"}, "RANGES['k']: range '0..1' is not"),
                                          ({"k": "[0, 1]", "n": "[1, inf)", "kk": "[0, 1]"},
                                           "RANGES names 'kk', which is not a field")])
def test_registering_a_component_with_malformed_ranges_is_refused_naming_it(ranges, said):
    from decoderlab.registry import Registry, RegistryError

    registry = Registry("test/ranges")
    with pytest.raises(RegistryError, match="test/ranges/k .*" + re.escape(said)):
        registry.register("k", _config_cls(ranges))(lambda cfg: None)
    assert "k" not in registry


def test_a_numeric_field_without_a_declared_range_is_a_warning_naming_it():
    from decoderlab.registry import Registry

    registry = Registry("test/ranges")
    with pytest.warns(UserWarning, match="test/ranges/k .*numeric field\\(s\\) n declare no range"):
        registry.register("k", _config_cls({"k": "[0, 1]"}))(lambda cfg: None)
    assert "k" in registry


def test_a_malformed_declared_range_at_composition_is_a_line_not_a_crash():
    from decoderlab.ranges import component_range_problems

    typed = _config_cls({"k": "0..1"})(name="k")
    assert component_range_problems("model.norm", typed) == [
        "model.norm.k: the component's declared range '0..1' is not of the form '[low, high)' ('[' / '(' closed / "
        "open, low <= high, e.g. '(0, inf)')"]
