"""Plugin discovery: ``.py`` files and packages in plugin folders, and the entry-point group ``decoderlab.plugins``.

Both load before Hydra composes, so a plugin's components are selectable like core ones. A broken plugin is a
warning naming it, never a crash of everything. ``DECODERLAB_NO_PLUGINS=1`` turns autoloading off.

Folders searched: ``$DECODERLAB_PLUGIN_PATH`` (``os.pathsep``-separated) if set, else ``./plugins`` and the
``plugins/`` folder of the source checkout decoderlab runs from.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.metadata
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "decoderlab.plugins"
_loaded: dict[str, str] = {}  # plugin id -> "ok" or the error text


def plugin_dirs() -> list[Path]:
    env = os.environ.get("DECODERLAB_PLUGIN_PATH")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    dirs = [Path.cwd() / "plugins", Path(__file__).resolve().parents[2] / "plugins"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


MODULE_PREFIX = "decoderlab_plugin_"


def _dir_tag(folder: Path) -> str:
    """A short, stable tag of a plugin folder (its resolved path): it tells apart plugins with the same file name."""
    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]


def _plugin_target(folder: Path, stem: str) -> Path | None:
    """The file that defines plugin ``stem`` in ``folder`` (``stem.py`` or ``stem/__init__.py``), if any."""
    for file in (folder / f"{stem}.py", folder / stem / "__init__.py"):
        if file.is_file():
            return file
    return None


def module_name(path: Path) -> str:
    """The module name of the plugin file or package ``path``: ``decoderlab_plugin_<stem>`` for the first plugin
    of that name in :func:`plugin_dirs` order (the name checkpoints have always recorded), and
    ``decoderlab_plugin_<stem>__<folder tag>`` for a plugin of the same name in a later folder, so that neither
    hides the other (``./plugins/dyt.py`` beside the shipped ``plugins/dyt.py``)."""
    stem, folder = path.name.removesuffix(".py"), path.parent.resolve()
    for d in plugin_dirs():
        if _plugin_target(d, stem) is not None:
            if d.resolve() == folder:
                return MODULE_PREFIX + stem
            break
    return f"{MODULE_PREFIX}{stem}__{_dir_tag(folder)}"


def _split_module_name(name: str) -> tuple[str, str | None]:
    """``decoderlab_plugin_dyt__1a2b3c4d`` -> ("dyt", "1a2b3c4d"); ``decoderlab_plugin_dyt`` -> ("dyt", None)."""
    stem = name.removeprefix(MODULE_PREFIX)
    base, sep, tag = stem.rpartition("__")
    if sep and base and len(tag) == 8 and all(c in "0123456789abcdef" for c in tag):
        return base, tag
    return stem, None


class _PluginFinder(importlib.abc.MetaPathFinder):
    """Imports a file plugin by its module name (see :func:`module_name`) in a fresh process.

    Workers that unpickle Hydra's config store (submitit) meet classes from ``decoderlab_plugin_*`` modules
    before any plugin discovery ran, and a checkpoint names the plugin module of its components; this finder lets
    them import those modules by name: ``decoderlab_plugin_<stem>`` is the first folder's plugin of that name,
    ``decoderlab_plugin_<stem>__<tag>`` the one in the folder with that tag.
    """

    def find_spec(self, name: str, path: object = None, target: object = None):  # noqa: ANN201
        if not name.startswith(MODULE_PREFIX) or "." in name:
            return None
        stem, tag = _split_module_name(name)
        for d in plugin_dirs():
            if tag is not None and _dir_tag(d) != tag:
                continue
            file = _plugin_target(d, stem)
            if file is not None:
                locs = [str(file.parent)] if file.name == "__init__.py" else None
                return importlib.util.spec_from_file_location(name, file, submodule_search_locations=locs)
        return None


def install_finder() -> None:
    if not any(isinstance(f, _PluginFinder) for f in sys.meta_path):
        sys.meta_path.append(_PluginFinder())


def _warn(plugin: str, err: BaseException) -> None:
    _loaded[plugin] = f"{type(err).__name__}: {err}"
    warnings.warn(f"decoderlab plugin '{plugin}' failed to load and was skipped: {type(err).__name__}: {err}",
                  stacklevel=3)


def _load_file(path: Path) -> None:
    key = f"file:{path.resolve()}"
    if key in _loaded:
        return
    target = path / "__init__.py" if path.is_dir() else path
    # Its module name; should another file hold that name already (imported by name before the folders changed),
    # this one loads under its folder-tagged name rather than be reported loaded without ever running.
    for mod_name in dict.fromkeys([module_name(path), f"{MODULE_PREFIX}{path.name.removesuffix('.py')}__"
                                                      f"{_dir_tag(path.parent)}"]):
        imported = sys.modules.get(mod_name)
        if imported is None:
            break
        if _same_file(getattr(imported, "__file__", None), target):  # already imported by name (_PluginFinder)
            _loaded[key] = "ok"
            return
    else:
        _warn(str(path), ImportError(f"its module names are taken by other files ({mod_name})"))
        return
    spec = importlib.util.spec_from_file_location(
        mod_name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    try:
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _loaded[key] = "ok"
        log.info("plugin loaded: %s", target)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the framework down
        sys.modules.pop(mod_name, None)
        _warn(str(path), e)


def _same_file(a: str | None, b: Path) -> bool:
    try:
        return a is not None and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def loaded() -> dict[str, str]:
    """Every plugin imported so far (``file:<path>`` or ``entry_point:<name>=<value>``) -> "ok" or its error."""
    return dict(_loaded)


def load_plugins(force: bool = False) -> dict[str, str]:
    """Import every plugin once; returns {plugin: "ok" | error}. Idempotent."""
    if os.environ.get("DECODERLAB_NO_PLUGINS", "") not in ("", "0") and not force:
        return dict(_loaded)
    # Core first, so a plugin clashing with it is the one that fails. Lazy: ``import decoderlab`` imports this
    # module (for its finder) and must not pull in torch and every component.
    import decoderlab.components  # noqa: F401
    import decoderlab.data  # noqa: F401

    for d in plugin_dirs():
        if not d.is_dir():
            warnings.warn(f"decoderlab plugin folder '{d}' does not exist; skipped", stacklevel=2)
            continue
        for path in sorted(d.iterdir()):
            if path.name.startswith(("_", ".", "test_")):
                continue
            if (path.suffix == ".py" and path.is_file()) or (path.is_dir() and (path / "__init__.py").is_file()):
                _load_file(path)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry_point:{ep.name}={ep.value}"
        if key in _loaded:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()  # an entry point may name a register() function instead of a module
            _loaded[key] = "ok"
        except Exception as e:  # noqa: BLE001
            _warn(f"{ep.name} ({ep.value})", e)
    return dict(_loaded)
