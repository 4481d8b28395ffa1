"""Hydra override strings: their keys and values, what varies between jobs, a variant's label, quoting."""

from __future__ import annotations

from collections.abc import Sequence

SEED_KEYS = ("seed",)


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
