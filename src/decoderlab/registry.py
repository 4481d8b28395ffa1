"""The one generic registry: a named slot of interchangeable components.

A registry's ``group`` is also its Hydra config group, its ``conf/`` folder and its command-line token
(``model/positional`` -> ``conf/model/positional/`` -> ``model/positional=rope``). Registering a component
stores its typed config dataclass in Hydra's ConfigStore, so the component is selectable, type-checked and
overridable with no YAML file.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


class RegistryError(ValueError):
    """A user-facing registry error (unknown or duplicate name)."""


@dataclass
class ComponentConfig:
    """Base of every component config. ``name`` is the registry key; it is set by :meth:`Registry.register`."""

    name: str = "???"


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    config_cls: type
    source: str  # module that registered it: core or the plugin's module

    @property
    def summary(self) -> str:
        doc = (self.builder.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def fields(self) -> list[tuple[str, str, Any]]:
        """(name, type, default) of every config field except ``name``."""
        out = []
        for f in dataclasses.fields(self.config_cls):
            if f.name == "name":
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = "???"
            typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out.append((f.name, str(typ), default))
        return out


@dataclass
class Registry(Generic[T]):
    """A named collection of builders for one slot (``group``) of the model or pipeline."""

    group: str
    base: type | None = None
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str, config_cls: type = ComponentConfig) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class/function decorator: ``@POSITIONAL.register("rope", RopeConfig)``.

        The builder is called as ``builder(cfg, **context)`` where ``cfg`` is a ``config_cls`` instance.
        A duplicate name, or a malformed ``RANGES`` (a range that does not parse, or names no field), raises
        :class:`RegistryError`; a numeric field with no declared range is a warning (its values go unchecked).
        """
        if not dataclasses.is_dataclass(config_cls) or "name" not in {f.name for f in dataclasses.fields(config_cls)}:
            raise TypeError(f"{self.group}/{name}: config class must be a dataclass with a 'name' field")

        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                prev = self._entries[name].source
                raise RegistryError(
                    f"duplicate {self.group} component '{name}': already registered by {prev}, "
                    f"now again by {builder.__module__}"
                )
            _check_ranges(f"{self.group}/{name}", config_cls, builder.__module__)
            self._entries[name] = Entry(name, builder, config_cls, builder.__module__)
            _store(self.group, name, config_cls)
            return builder

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and plugin reloading). The ConfigStore node is left in place."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.group} '{name}'. Valid names: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def default_config(self, name: str, **overrides: Any) -> Any:
        """A config instance for ``name`` with its defaults, optionally overridden."""
        return self.get(name).config_cls(name=name, **overrides)

    def build_config(self, cfg: Any) -> Any:
        """The typed config dataclass for ``cfg``; unknown names and keys raise :class:`RegistryError`."""
        return to_dataclass(self, cfg)

    def build(self, cfg: Any, **context: Any) -> T:
        """Build the component named by ``cfg.name`` (a dataclass, DictConfig or plain dict).

        The built object must be an instance of the slot's ``base`` (when the registry declares one): a builder
        returning anything else is a :class:`TypeError` naming the component and the base.
        """
        cfg = to_dataclass(self, cfg)
        entry = self.get(cfg.name)
        obj = entry.builder(cfg, **context)
        if self.base is not None and not isinstance(obj, self.base):
            raise TypeError(f"{self.group}/{cfg.name} (registered by {entry.source}) built a "
                            f"{type(obj).__qualname__}, which is not a {self.base.__qualname__}: the slot's "
                            f"components must subclass {self.base.__module__}.{self.base.__qualname__}")
        return obj


def to_dataclass(registry: Registry, cfg: Any) -> Any:
    """Turn a DictConfig / dict / dataclass into the entry's typed config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise RegistryError(f"{registry.group}: expected a config with a 'name' key, got {cfg!r}")
    entry = registry.get(cfg["name"])
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise RegistryError(
            f"unknown key(s) {', '.join(unknown)} for {registry.group}/{cfg['name']}; "
            f"valid keys: {', '.join(sorted(known - {'name'}))}"
        )
    return entry.config_cls(**cfg)


def _store(group: str, name: str, config_cls: type) -> None:
    ConfigStore.instance().store(group=group, name=name, node=config_cls(name=name), provider="decoderlab")


def _check_ranges(component: str, config_cls: type, module: str) -> None:
    """A component's ``RANGES`` must parse and name its fields (else :class:`RegistryError`: a plugin declaring them
    so fails to load, with the warning naming it); a numeric field without a range is warned about by name."""
    from decoderlab.ranges import declaration_problems

    malformed, undeclared = declaration_problems(config_cls)
    where = getattr(sys.modules.get(module), "__file__", None) or module
    if malformed:
        raise RegistryError(f"{component} (registered by {where}): {'; '.join(malformed)}")
    if undeclared:
        warnings.warn(f"{component} (registered by {where}): numeric field(s) {', '.join(undeclared)} declare no "
                      f"range in its config's RANGES, so their values are not checked; add e.g. "
                      f"RANGES = {{{undeclared[0]!r}: '(0, inf)'}}", stacklevel=4)
