"""The allowed range of every numeric field of the run schema, checked at composition (before anything runs).

The run schema's ranges are one declarative table (:data:`RANGES`); each registry config (core or plugin) declares its
own as a class attribute ``RANGES = {"field": "(0, inf)"}`` (not a dataclass field). Ranges are ``key -> (low, high)`` with ``[`` / ``(`` for closed / open ends; ``None`` values (where the
schema allows them) are not checked. :func:`range_problems` returns one line per bad value, naming the key, the
value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("decoderlab")
INF = math.inf
POSITIVE_INT = "[1, inf)"
RANGES: dict[str, str] = {
    "model.n_layers": POSITIVE_INT, "model.n_heads": POSITIVE_INT, "model.d_model": POSITIVE_INT,
    "model.block_size": POSITIVE_INT, "model.dropout": "[0, 1)", "model.init_std": "(0, inf)",
    "loader.batch_size": POSITIVE_INT, "loader.eval_batch_size": POSITIVE_INT, "loader.val_max_windows": POSITIVE_INT,
    "trainer.max_steps": POSITIVE_INT, "trainer.val_check_interval": POSITIVE_INT,
    "trainer.log_every_n_steps": POSITIVE_INT, "trainer.num_nodes": POSITIVE_INT,
    "trainer.gradient_clip_val": "(0, inf)", "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.max_nonfinite_in_a_row": POSITIVE_INT, "trainer.val_sample_windows": POSITIVE_INT,
    "trainer.ckpt_every_n_steps": POSITIVE_INT,
    "optim.lr": "(0, inf)", "optim.min_lr": "[0, inf)", "optim.warmup_steps": "[0, inf)",
    "optim.decay_steps": POSITIVE_INT, "optim.weight_decay": "[0, inf)", "optim.beta1": "[0, 1)",
    "optim.beta2": "[0, 1)", "optim.eps": "(0, inf)",
    "sample.max_new_tokens": "[0, inf)", "sample.temperature": "[0, inf)", "sample.top_k": POSITIVE_INT,
    "sample.top_p": "(0, 1]",
    "seed": "[0, inf)", "threads": POSITIVE_INT, "param_budget": POSITIVE_INT,
}


_SPEC = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


def parse(spec: str) -> tuple[float, bool, float, bool]:
    """``"[0, 1)"`` -> (0.0, True, 1.0, False): low, low included, high, high included. A spec not of that form
    (``"0..1"``, ``"[1, 0]"``) raises ValueError saying so."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    try:
        lo, hi = float(m.group(2)), float(m.group(3))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        lo = hi = math.nan
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"range {spec!r} is not of the form '[low, high)' ('[' / '(' closed / open, "
                         f"low <= high, e.g. '(0, inf)')")
    return lo, m.group(1) == "[", hi, m.group(4) == "]"  # type: ignore[union-attr]


def in_range(value: float, spec: str) -> bool:
    lo, lo_in, hi, hi_in = parse(spec)
    return (value > lo or (lo_in and value == lo)) and (value < hi or (hi_in and value == hi))


def range_problems(cfg: DictConfig) -> list[str]:
    """One line per numeric value outside its range (``key=value is out of range: allowed [1, inf)``)."""
    out = []
    for key, spec in RANGES.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not in_range(value, spec):
            out.append(f"{key}={value} is out of range: allowed {spec}")
    return out


def declared_ranges(config_cls: type) -> dict[str, str]:
    """A component config's ``RANGES`` (field -> range), merged over its base classes (a subclass's entry wins)."""
    out: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        out.update(vars(klass).get("RANGES", {}))
    return out


def numeric_fields(config_cls: type) -> list[str]:
    """The fields of a config dataclass holding a number (``int``, ``float``, ``int | None``...; not ``bool``,
    not a container of numbers): each needs a declared range."""
    out = []
    for f in dataclasses.fields(config_cls):
        words = set(re.findall(r"[A-Za-z_]\w*", f.type if isinstance(f.type, str) else repr(f.type)))
        words |= {getattr(f.type, "__name__", "")}
        if words & {"int", "float"} and not words & {"bool", "list", "tuple", "dict", "set", "List", "Tuple", "Dict",
                                                      "Sequence", "Mapping", "Any"}:
            out.append(f.name)
    return out


def declaration_problems(config_cls: type) -> tuple[list[str], list[str]]:
    """What is wrong with a component config's ``RANGES``: (malformed entries, numeric fields without a range).
    A malformed entry is a range that does not parse or names no field of the config."""
    declared = declared_ranges(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    malformed = []
    for field, spec in declared.items():
        if field not in fields:
            malformed.append(f"RANGES names '{field}', which is not a field of {config_cls.__qualname__}")
            continue
        try:
            parse(spec)
        except ValueError as e:
            malformed.append(f"RANGES['{field}']: {e}")
    return malformed, [f for f in numeric_fields(config_cls) if f not in declared]


def component_range_problems(key: str, typed: Any) -> list[str]:
    """One line per field of a registry config (``typed``, at config key ``key``) outside its declared range (or
    whose declared range is malformed)."""
    out = []
    for field, spec in declared_ranges(type(typed)).items():
        value = getattr(typed, field, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            ok = in_range(value, spec)
        except ValueError as e:
            out.append(f"{key}.{field}: the component's declared {e}")
            continue
        if not ok:
            out.append(f"{key}.{field}={value} is out of range: allowed {spec}")
    return out


def range_warnings(cfg: Any) -> list[str]:
    """Legal but probably unintended combinations (logged as warnings)."""
    out = []
    warmup, steps = cfg.optim.warmup_steps, cfg.trainer.max_steps
    if isinstance(warmup, int) and isinstance(steps, int) and warmup >= steps:
        out.append(f"optim.warmup_steps={warmup} >= trainer.max_steps={steps}: the learning rate never leaves "
                   f"its warm-up (it never reaches optim.lr)")
    return out
