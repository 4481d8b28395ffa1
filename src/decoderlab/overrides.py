"""Hydra override strings: their keys and values, a sweep's axes, what varies between jobs, a variant's label."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override

SEED_KEYS = ("seed",)
# How a sweep axis varies: its values name variants (a list, choice or range the sweeper enumerates), a searcher
# samples it (an interval; a range under a searching sweeper such as Optuna), or it is the seed.
VARY, SEARCH, SEED = "vary", "search", "seed"


def override_key(override: str) -> str:
    """The config key of a Hydra override string: ``+model.x=1`` -> ``model.x``; ``~a.b`` -> ``a.b``."""
    key = override.split("=", 1)[0]
    return key.lstrip("+~")


def override_value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def varying(jobs: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per job, its overrides whose key takes more than one value across ``jobs`` (absent counts as a value)."""
    parsed = [{override_key(o): o for o in job} for job in jobs]
    keys = {k for p in parsed for k in p}
    vary = {k for k in keys if len({override_value(p[k]) if k in p else None for p in parsed}) > 1}
    return [[o for k, o in p.items() if k in vary] for p in parsed]


def variant_label(overrides: Sequence[str], exclude: Sequence[str] = SEED_KEYS) -> str:
    """A variant's name: its varying overrides except the seed (``model/positional=rope``)."""
    parts = [o for o in overrides if override_key(o) not in exclude]
    return ",".join(parts) or "default"


def quote(value: str) -> str:
    """A string as a quoted Hydra override value (paths with spaces, '=' or ',' stay one value)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parse(text: str) -> Override | None:
    try:
        return OverridesParser.create().parse_override(text)
    except Exception:  # noqa: BLE001 - Hydra itself reports a malformed override; here it is no axis
        return None


def _single_value(o: Override) -> bool:
    value = o.value()
    return isinstance(value, ChoiceSweep) and not isinstance(value.list, str) and len(value.list) < 2


def sweep_axes(overrides: Sequence[str], params: Mapping[str, Any] | None = None,
               searching: bool = False) -> dict[str, str]:
    """The keys a sweep varies and how (:data:`VARY`, :data:`SEARCH`, :data:`SEED`), from its command-line
    overrides and its sweeper's search space (``hydra.sweeper.params``); a single value (``choice(3)``) is a
    constant, not an axis. ``searching``: the sweeper samples ranges (Optuna) rather than enumerating them."""
    axes: dict[str, str] = {}
    for text in [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides):
        o = _parse(text)
        if o is None or o.is_hydra_override() or not o.is_sweep_override() or _single_value(o):
            continue
        key = o.key_or_group
        if key in SEED_KEYS:
            axes[key] = SEED
        elif o.is_interval_sweep() or (searching and o.is_range_sweep()):
            axes[key] = SEARCH
        else:
            axes.setdefault(key, VARY)
    return axes


def defer_to_jobs(args: Sequence[str], is_group: Callable[[str], bool]) -> list[str]:
    """Multirun arguments where each setting of a swept config group's node (``model.positional.base=500`` while
    ``model/positional=rope,learned`` is swept) is a one-value sweep (``choice(500)``): Hydra composes the sweep's
    primary config with each group's *default* option and would fail on a key only the swept options have; as a
    sweep it is applied per job, where a point whose option lacks the key is reported invalid and the others run."""
    parsed = [_parse(a) if "=" in a and not a.startswith("-") else None for a in args]
    swept = [o.key_or_group.replace("/", ".") + "." for o in parsed
             if o is not None and o.is_sweep_override() and not o.is_hydra_override() and is_group(o.key_or_group)]
    out = []
    for arg, o in zip(args, parsed):
        if (o is not None and swept and not o.is_sweep_override() and not o.is_delete()
                and o.key_or_group.startswith(tuple(swept)) and not is_group(o.key_or_group)):
            arg = f"{o.get_key_element()}=choice({o.get_value_element_as_str()})"
        out.append(arg)
    return out
