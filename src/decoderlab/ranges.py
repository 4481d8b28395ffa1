"""The allowed range of every numeric field of the run schema, checked at composition (before anything runs).

The run schema's ranges are one declarative table (:data:`RANGES`); each registry config (core or plugin) declares its
own as a class attribute ``RANGES = {"field": "(0, inf)"}`` (not a dataclass field). Ranges are ``key -> (low, high)`` with ``[`` / ``(`` for closed / open ends; ``None`` values (where the
schema allows them) are not checked. :func:`range_problems` returns one line per bad value, naming the key, the
value and the allowed range.
"""

from __future__ import annotations

import logging
import math
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


def parse(spec: str) -> tuple[float, bool, float, bool]:
    """``"[0, 1)"`` -> (0.0, True, 1.0, False): low, low included, high, high included."""
    lo, hi = (p.strip() for p in spec[1:-1].split(","))
    return float(lo), spec[0] == "[", float(hi), spec[-1] == "]"


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


def component_range_problems(key: str, typed: Any) -> list[str]:
    """One line per field of a registry config (``typed``, at config key ``key``) outside its declared range."""
    out = []
    for field, spec in declared_ranges(type(typed)).items():
        value = getattr(typed, field, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not in_range(value, spec):
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
