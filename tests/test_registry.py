"""The generic registry: duplicates raise, unknown names list the valid ones, configs are typed and stored."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hydra.core.config_store import ConfigStore

from decoderlab.registry import ComponentConfig, Registry, RegistryError


@dataclass
class _Cfg(ComponentConfig):
    RANGES = {"width": "[1, inf)"}
    width: int = 3


def _registry() -> Registry:
    reg = Registry("test/slot")

    @reg.register("alpha", _Cfg)
    def alpha(cfg: _Cfg, scale: int = 1) -> int:
        """Alpha: returns width * scale."""
        return cfg.width * scale

    @reg.register("beta")
    def beta(cfg: ComponentConfig) -> str:
        return "beta"

    return reg


def test_duplicate_name_raises_naming_both_sources():
    reg = _registry()
    with pytest.raises(RegistryError, match="duplicate test/slot component 'alpha': already registered by"):
        reg.register("alpha", _Cfg)(lambda cfg: None)


def test_unknown_name_lists_valid_names():
    reg = _registry()
    with pytest.raises(RegistryError) as e:
        reg.build({"name": "gamma"})
    assert str(e.value) == "unknown test/slot 'gamma'. Valid names: alpha, beta"


def test_unknown_key_lists_valid_keys():
    reg = _registry()
    with pytest.raises(RegistryError, match="unknown key\\(s\\) wdth for test/slot/alpha; valid keys: width"):
        reg.build({"name": "alpha", "wdth": 4})


def test_build_passes_typed_config_and_context():
    reg = _registry()
    assert reg.build({"name": "alpha", "width": 5}, scale=2) == 10
    assert reg.build(reg.default_config("alpha")) == 3
    assert reg.names() == ["alpha", "beta"]
    assert reg.get("alpha").summary == "Alpha: returns width * scale."
    assert reg.get("alpha").fields() == [("width", "int", 3)]


def test_registration_stores_the_typed_config_in_hydra():
    _registry()
    node = ConfigStore.instance().load("test/slot/alpha.yaml").node
    assert node.name == "alpha" and node.width == 3


def test_config_class_must_be_a_dataclass_with_name():
    with pytest.raises(TypeError, match="must be a dataclass with a 'name' field"):
        Registry("test/other").register("x", dict)


def test_build_checks_the_object_is_an_instance_of_the_slot_base():
    class Base:
        pass

    class Good(Base):
        pass

    reg: Registry = Registry("test/based", Base)
    reg.register("good")(lambda cfg: Good())
    reg.register("stray")(lambda cfg: object())
    assert isinstance(reg.build({"name": "good"}), Good)
    with pytest.raises(TypeError, match=r"test/based/stray .* built a object, which is not a .*Base"):
        reg.build({"name": "stray"})
