"""The typed schema of a training run, and the checks Hydra does not make.

``model`` holds exactly what builds the model (``ModelConfig`` plus a registry config per slot): it is what a
checkpoint records. Run-level keys (``init_from``, ``param_budget``, ``seed`` ...) live at the top level.

Hydra type-checks overrides against these dataclasses, but lets ``+key=value`` add keys past the schema and
reports missing values one at a time; :func:`validate` rejects unknown keys, reports every missing value at once
and checks each component config against its registry entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from decoderlab.components import MODEL_REGISTRIES
from decoderlab.components.tokenizers import TOKENIZERS
from decoderlab.data import CORPORA
from decoderlab.errors import ConfigError, RefusedConfig
from decoderlab.model import ModelConfig
from decoderlab.ranges import component_range_problems, range_problems, range_warnings
from decoderlab.wandb_setup import check_credentials

log = logging.getLogger("decoderlab")


@dataclass
class ModelSchema(ModelConfig):
    """Model sizes; one registry config per component slot (chosen with ``model/<slot>=<name>``)."""

    positional: Any = MISSING
    attention: Any = MISSING
    placement: Any = MISSING
    norm: Any = MISSING
    ffn: Any = MISSING


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments a run sets; ``extra`` passes any other Trainer kwarg."""

    max_steps: int = 2000
    val_check_interval: int = 500
    log_every_n_steps: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    compile: bool = False  # torch.compile the training step's model+loss and validation (cold: ~30 s on a CPU)
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager": fast to compile, for tests)
    on_nonfinite: str = "stop"  # non-finite loss/grad norm: "stop" (run fails) or "skip" the update
    max_nonfinite_in_a_row: int = 5  # on_nonfinite=skip: fail after this many skipped updates in a row
    # Intermediate validations score this fixed, evenly spaced sample of held-out windows (None: all); the
    # final validation is always a full pass.
    val_sample_windows: int | None = 256
    ckpt_path: str | None = None  # resume from this checkpoint
    ckpt_every_n_steps: int | None = None  # None: at every validation
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay to ``min_lr`` (nanoGPT's recipe)."""

    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    decay_steps: int | None = None  # None: trainer.max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    fused: bool | None = None  # fused AdamW kernel; None: on for CPU/CUDA parameters


@dataclass
class SampleConfig:
    """The sample generated at the end of a run."""

    prompt: str | None = None  # None: the corpus's own prompt (data.sample_prompt)
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None


@dataclass
class LoaderConfig:
    """How windows are drawn from the tokenized corpus (the corpus config says only what the corpus is)."""

    batch_size: int = 12  # training windows per micro-step (per rank)
    eval_batch_size: int = 64
    val_max_windows: int | None = None  # evaluate on at most this many evenly spaced windows; None: all


@dataclass
class TrainConfig:
    """A whole run: the defaults list in ``conf/train.yaml`` fills the component slots."""

    model: ModelSchema = field(default_factory=ModelSchema)
    tokenizer: Any = MISSING
    data: Any = MISSING
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    logger: dict[str, Any] = field(default_factory=dict)
    seed: int = 1337
    threads: int | None = None  # torch.set_num_threads; None: torch's default
    project: str = "decoderlab"
    run_name: str | None = None
    init_from: str | None = None  # start from this checkpoint's weights; tokenizer=extend grows its vocabulary
    # Non-embedding parameter target: the FFN hidden width is solved to meet it within 1% (decoderlab.sizing).
    # None: the FFN's own hidden-size rule.
    param_budget: int | None = None


def register_schema() -> None:
    """The schema in Hydra's ConfigStore, and the resolvers ``conf/train.yaml`` uses."""
    from decoderlab import rundir

    rundir.register_resolvers()
    ConfigStore.instance().store(name="decoderlab_schema", node=TrainConfig, provider="decoderlab")


def unknown_keys(node: Any, path: str = "") -> list[str]:
    """Keys present in ``node`` that its dataclass schema does not declare (added with ``+key=``)."""
    out: list[str] = []
    if isinstance(node, DictConfig):
        typ = OmegaConf.get_type(node)
        known = {f.name for f in dataclasses.fields(typ)} if dataclasses.is_dataclass(typ) else None
        for key in node.keys():
            full = f"{path}.{key}" if path else str(key)
            if known is not None and key not in known:
                out.append(full)
                continue
            out += unknown_keys(node._get_node(key), full)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            out += unknown_keys(node._get_node(i), f"{path}[{i}]")
    return out


def _size_problems(cfg: DictConfig) -> list[str]:
    """Every numeric value in its range (:mod:`decoderlab.ranges`), then the model's divisibility rule."""
    m, out = cfg.model, range_problems(cfg)
    if not out and m.d_model % m.n_heads:
        out.append(f"model.d_model={m.d_model} must be divisible by model.n_heads={m.n_heads}")
    return out


def _registries() -> dict[str, Any]:
    """Config group -> its registry (``model/positional`` -> POSITIONALS, ``tokenizer``, ``data``)."""
    return {"tokenizer": TOKENIZERS, "data": CORPORA, **MODEL_REGISTRIES}


def group_options(group: str, conf: Path | list[Path]) -> list[str]:
    """The options of config group ``group``: registered names and YAML presets in ``<conf dir>/<group>/``."""
    names = {p.stem for c in ([conf] if isinstance(conf, Path) else conf) for p in (c / group).glob("*.yaml")}
    registry = _registries().get(group)
    return sorted(names | set(registry.names() if registry is not None else ()))


def composition_problem(e: BaseException, overrides: Sequence[str] = ()) -> str:
    """Hydra's composition error as one line naming the key: an unknown key with the closest valid ones (Hydra's
    hint to add it with ``+`` would only be refused next, by :func:`validate`), a value of the wrong type with
    what was expected, an override Hydra cannot parse (found among ``overrides``); anything else, Hydra's own
    text on one line."""
    from hydra.errors import OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(e, OverrideParseException):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for override in overrides:
            try:
                parser.parse_overrides([override])
            except OverrideParseException as bad:
                return (f"{override}: cannot parse it ({str(bad).strip().splitlines()[0]}; the grammar: "
                        "https://hydra.cc/docs/advanced/override_grammar/basic/)")
    cause = e.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        name, parent = str(cause.key), cause.parent_node
        valid = [str(k) for k in parent.keys()] if isinstance(parent, DictConfig) else []
        prefix = key[: len(key) - len(name)]
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?"
        else:
            hint = f"; valid keys: {', '.join(prefix + k for k in valid)}" if 0 < len(valid) <= 12 else ""
        owner = getattr(cause, "object_type_str", None)
        return f"{key}: unknown key{f' (not in {owner})' if owner else ''}{hint}"
    if cause is not None and key and str(cause).strip():
        return f"{key}: {str(cause).strip().splitlines()[0]}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def extra_config_dirs(args: list[str], conf: Path | None = None) -> list[Path] | None:
    """Config directories the command line adds (``--config-dir``/``-cd DIR``, ``hydra.searchpath=[file://...]``),
    and those the primary config (``train.yaml`` or ``-cn NAME`` in ``conf`` or an added directory) adds under its
    own ``hydra.searchpath``; None when one cannot be listed here (``pkg://``, an interpolation, an unreadable
    primary config): then Hydra alone judges the options."""
    from hydra._internal.utils import get_args_parser

    known, _ = get_args_parser().parse_known_args(args)  # Hydra's own reading: -cd DIR, -cd=DIR, --config-dir ...
    dirs = [Path(known.config_dir)] if known.config_dir else []
    entries: list[str] = []
    for arg in args:
        if arg.lstrip("+~").startswith("hydra.searchpath="):
            entries += [e.strip().strip("'\"") for e in arg.split("=", 1)[1].strip("[]").split(",")]
    name = (known.config_name or "train").removesuffix(".yaml")
    for d in [*dirs, *([conf] if conf is not None else [])]:
        primary = d / f"{name}.yaml"
        if not primary.is_file():
            continue
        try:
            listed = OmegaConf.to_container(OmegaConf.load(primary), resolve=False).get("hydra", {}).get("searchpath")
        except Exception:  # noqa: BLE001 - Hydra reads it next and names what is wrong
            return None
        if listed is not None:
            if not isinstance(listed, list):
                return None
            entries += [str(e) for e in listed]
    for entry in filter(None, entries):
        if entry.startswith("pkg://") or "${" in entry:
            return None
        dirs.append(Path(entry.removeprefix("file://")))
    return dirs


def check_group_choices(args: list[str], conf: Path) -> None:
    """Raise one line naming the group, the unknown option and the valid ones (``model/attention=flashh``), before
    Hydra composes (its own message is a page of search paths). Options in added config directories count."""
    extra = extra_config_dirs(args, conf)
    if extra is None:
        return
    dirs = [conf, *extra]
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("hydra") or not (any((d / key).is_dir() for d in dirs) or key in _registries()) \
                or "(" in value:
            continue
        options = group_options(key, dirs)
        for v in (v.strip().strip("'\"") for v in value.strip("[]").split(",")):  # Hydra unquotes 'csv'
            if v and v not in options and v != "null":
                raise ConfigError(f"{key}={v}: unknown option of group {key}; valid: {', '.join(options)}")


# ``_target_`` may name only these (prefixes): Lightning's loggers and decoderlab's own classes. Anything else in a
# config could run arbitrary code (e.g. ``torch.load``) just by being composed.
TARGET_ALLOWLIST = ("lightning.pytorch.loggers.", "pytorch_lightning.loggers.", "decoderlab.")
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|password|passwd|secret|access_key|private_key)$", re.IGNORECASE)


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, node


def is_literal_secret(key: str, value: Any) -> bool:
    """A secret-looking key (``api_key``, ``token``, ``password`` ...) holding a literal, not ``${oc.env:...}``."""
    name = key.rsplit(".", 1)[-1].split("=")[0].lstrip("+~")
    return bool(SECRET_KEY.search(name)) and isinstance(value, str) and bool(value) and "${" not in value


def safety_problems(cfg: DictConfig, targets: bool = True, prefix: str = "") -> list[str]:
    """``_target_`` outside the allowlist (``targets``) and literal secrets, named by key (values unresolved: never
    printed); ``prefix`` names where ``cfg`` sits (``hydra``)."""
    out = []
    for key, value in _walk(OmegaConf.to_container(cfg, resolve=False), prefix):
        if targets and key.endswith("_target_") and not str(value).startswith(TARGET_ALLOWLIST):
            out.append(f"{key}={value}: not an allowed _target_ (allowed: {', '.join(TARGET_ALLOWLIST)}*)")
        elif is_literal_secret(key, value):
            out.append(f"{key}: a literal secret is refused (it would be saved with the run); use "
                       f"${{oc.env:VARIABLE}} or the tool's own environment variable (e.g. WANDB_API_KEY)")
    return out


class RefuseUnsafeConfig(Callback):
    """A Hydra callback (``hydra.callbacks`` in conf/train.yaml): a literal secret or a disallowed ``_target_``
    written in a YAML file is refused before Hydra saves the composed config (``.hydra/config.yaml`` of a run,
    ``multirun.yaml`` of a sweep); a run directory that holds another run is refused next, as early
    (:class:`decoderlab.claim.ClaimRunDirectory`). Command-line secrets are refused earlier still (:func:`check_no_secret_overrides`);
    each sweep point is checked before its job starts (the decoderlab and basic launchers; the sweeper under
    submitit)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unsafe(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_unsafe(config)


def hydra_config_problems(config: DictConfig) -> list[str]:
    """:func:`safety_problems` of a composed Hydra config: the run's part in full, and literal secrets in the
    ``hydra`` node too (``hydra.job.env_set.WANDB_API_KEY``; its ``_target_`` entries are Hydra's own plugins)."""
    problems = safety_problems(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
    if "hydra" in config:
        problems += safety_problems(config.hydra, targets=False, prefix="hydra")
    return problems


def refuse_unsafe(config: DictConfig) -> None:
    """Raise :class:`RefusedConfig` naming each unsafe key of a composed Hydra config (its ``hydra`` node is
    Hydra's own: its ``_target_`` entries are Hydra's plugins). Values are never printed."""
    problems = hydra_config_problems(config)
    if problems:
        raise RefusedConfig("the configuration is refused before anything is written:\n  - " + "\n  - ".join(problems))


def check_no_secret_overrides(args: list[str]) -> None:
    """Refuse a literal secret on the command line before Hydra records the overrides in the run directory: a
    secret key's value, also inside a dict or list value and in every value of a sweep (``k={password:x},{...}``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself; an interval has no literal
            values = [arg.split("=", 1)[1]]
        key = arg.split("=", 1)[0].lstrip("+~")
        for path, value in (p for v in values for p in _walk(v, key)):
            if is_literal_secret(path, value):
                raise ConfigError(f"{path}: a literal secret on the command line is refused (Hydra saves every "
                                  f"override); use ${{oc.env:VARIABLE}} or the tool's environment variable (e.g. "
                                  f"WANDB_API_KEY)")


def _slot_problems(cfg: DictConfig, missing: list[str], sizes_ok: bool) -> list[str]:
    """Each component config against its registry entry, then its own cross-slot ``check()``."""
    problems: list[str] = []
    slots = {"tokenizer": TOKENIZERS, "data": CORPORA}
    slots.update({g.replace("/", "."): r for g, r in MODEL_REGISTRIES.items()})
    for key, registry in slots.items():
        node = OmegaConf.select(cfg, key, throw_on_missing=False)
        if node is None or OmegaConf.is_missing(cfg, key) or any(k.startswith(key + ".") for k in missing):
            continue
        if isinstance(node, str):  # model.attention=flashh: an option is picked with the group's / syntax
            group = key.replace(".", "/")
            problems.append(f"{key}={node}: pick an option with {group}=<name>; registered: "
                            f"{', '.join(registry.names())}")
            continue
        try:
            typed = registry.build_config(node)
        except Exception as e:  # noqa: BLE001 - reported with the key
            problems.append(f"{key}: {e}")
            continue
        out_of_range = component_range_problems(key, typed)
        problems += out_of_range
        # Cross-slot rules live with the component: ``check(model_cfg) -> [problem naming both keys]``.
        if key.startswith("model.") and hasattr(typed, "check") and not missing and sizes_ok and not out_of_range:
            problems += list(typed.check(cfg.model))
    return problems


MOVED_KEYS = {"model.init_from": "init_from", "model.param_budget": "param_budget"}


def _unknown(key: str) -> str:
    if key in MOVED_KEYS:
        return f"unknown key '{key}': it is the run-level key '{MOVED_KEYS[key]}' now (not part of the model)"
    return f"unknown key '{key}' (not in the schema; check its spelling)"


def _logger_problems(cfg: DictConfig) -> list[str]:
    """Each entry of ``logger`` is a logger class's config (``_target_``) or null (switched off)."""
    out = []
    for key, spec in (cfg.get("logger") or {}).items():
        if spec is not None and not (isinstance(spec, DictConfig) and spec.get("_target_")):
            out.append(f"logger.{key}: a logger needs a _target_ (a Lightning logger class, e.g. "
                       f"lightning.pytorch.loggers.CSVLogger) or null to switch it off")
    return out


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every missing value, unknown key and bad component config."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    problems: list[str] = []
    if missing:
        problems.append("missing value(s), set them on the command line: " + ", ".join(missing))
    problems += [_unknown(k) for k in unknown_keys(cfg)]
    problems += safety_problems(cfg)
    problems += _logger_problems(cfg)
    sizes = [] if missing else _size_problems(cfg)
    problems += sizes
    problems += _slot_problems(cfg, missing, sizes_ok=not sizes)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    if any(str(spec.get("_target_", "")).endswith("WandbLogger") for spec in (cfg.get("logger") or {}).values()
           if isinstance(spec, DictConfig)):
        check_credentials()  # WANDB_MODE=online without a key: an error now, not at the first logged step
    for warning in range_warnings(cfg):
        log.warning(warning)
