"""The checkpoint record: build, write, read, verify, and load a model with its bound tokenizer from a checkpoint.

A decoderlab checkpoint is a ``torch.save`` of plain values and tensors (loaded with ``weights_only=True``)::

    state_dict   the Decoder's weights under ``model.`` (Lightning's layout; ``_orig_mod.`` of compile removed on load)
    decoderlab   {"format": FORMAT_VERSION, "model": <the ModelConfig that builds the model, nothing else>,
                  "vocab_size": V, "tokenizer": <the bound tokenizer's JSON>, "checksum": <sha256 of state_dict>,
                  "training_checksum": <sha256 of every other key but this record: optimizer, loops, step...>, ...}

Every load verifies the record: a file that cannot be read, whose checksums do not match its weights or its
training state (format 2; format 1 files sealed their weights only and still load), whose
format is newer than this decoderlab, or whose model record has a field ``ModelConfig`` lacks is an error naming
the file. Every checkpoint holds the tokenizer it was trained with; loading one never silently pairs it with
another tokenizer: :func:`require_same_tokenizer` compares fingerprints (what decides the ids, not where a file
lives) and names both on a mismatch. Writes are atomic (:func:`decoderlab.rundir.atomic_open`). Lightning-free
(importing it costs seconds); its CheckpointIO plugin lives in :mod:`decoderlab.fit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from decoderlab import rundir
from decoderlab.components import MODEL_REGISTRIES
from decoderlab.components.tokenizers import Tokenizer, tokenizer_from_json
from decoderlab.errors import UserError
from decoderlab.model import Decoder, ModelConfig

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 1: the checksum sealed the weights only; 2: the training state is sealed too
RECORD_KEY = "decoderlab"
# Run-level keys that model records written before FORMAT_VERSION 1 carried; dropped when such a file is read.
_PRE_FORMAT_RUN_KEYS = ("init_from", "param_budget")


def model_record(model_cfg: Any) -> dict[str, Any]:
    """The plain ``model`` record of a built config: exactly the :class:`ModelConfig` fields that build the model."""
    plain = dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)
    return {f.name: plain[f.name] for f in dataclasses.fields(ModelConfig) if f.name in plain}


def checkpoint_record(model: Decoder, tokenizer: Tokenizer) -> dict[str, Any]:
    """What a checkpoint carries to rebuild its model alone: the format version, the *built* config (FFN width
    already solved for ``param_budget``), the vocabulary size, the bound tokenizer and the plugin modules that
    registered its components (``{"model/norm": {"name": "dyt", "module": "decoderlab_plugin_dyt"}}``)."""
    return {"format": FORMAT_VERSION, "model": model_record(model.cfg),
            "vocab_size": int(model.tok_emb.weight.shape[0]), "tokenizer": tokenizer.to_json(),
            "plugins": plugin_sources(model.cfg)}


def plugin_sources(model_cfg: Any) -> dict[str, dict[str, str]]:
    """Per model slot whose component a plugin registered: its name and the plugin's module."""
    out = {}
    for group, registry in MODEL_REGISTRIES.items():
        slot = getattr(model_cfg, group.split("/")[-1], None)
        name = slot.get("name") if isinstance(slot, dict) else getattr(slot, "name", None)
        if name in registry and registry.get(name).source.split(".")[0] != "decoderlab":
            out[group] = {"name": str(name), "module": registry.get(name).source}
    return out


def require_plugins(record: dict[str, Any], source: str) -> None:
    """Import the plugin modules a checkpoint records for components not registered yet; a plugin that cannot be
    found is an error naming it and its component."""
    for group, need in (record.get("plugins") or {}).items():
        registry = MODEL_REGISTRIES.get(group)
        if registry is None or need.get("name") in registry:
            continue
        module = need.get("module", "?")
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure means the plugin is not usable here
            raise UserError(
                f"{source} needs the plugin module '{module}' (it provides {group}={need.get('name')}), which cannot "
                f"be imported ({type(e).__name__}: {e}); put the plugin in ./plugins or on DECODERLAB_PLUGIN_PATH, "
                f"or pip install the package that provides it") from None
        if need.get("name") not in registry:
            where = getattr(sys.modules.get(module), "__file__", None) or module
            raise UserError(f"{source} needs {group}={need.get('name')} from the plugin module '{module}', but "
                            f"{where} does not register it (another plugin of the same file name?)")


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy of the bytes


def state_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the state dict in key order: each key, dtype, shape and the tensor's bytes."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            h.update(f"{key}={t!r};".encode())
            continue
        h.update(f"{key}:".encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def _hash_tree(h: Any, obj: Any) -> None:
    """Feed ``obj`` (what a weights-only load returns: dicts, lists, tuples, tensors, plain values) into ``h``, the
    structure included; dicts in their order, which ``torch.save``/``torch.load`` keep."""
    if isinstance(obj, torch.Tensor):
        h.update(b"T")
        _hash_tensor(h, obj)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}{{".encode())
        for key, value in obj.items():
            h.update(f"{type(key).__name__}:{key!r}=".encode())
            _hash_tree(h, value)
        h.update(b"}")
    elif isinstance(obj, set | frozenset):  # no order of its own (strings hash differently in each process)
        h.update(f"{type(obj).__name__}{len(obj)}{{".encode())
        for value in sorted(obj, key=repr):
            _hash_tree(h, value)
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__}{len(obj)}[".encode())
        for value in obj:
            _hash_tree(h, value)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def training_checksum(ckpt: dict[str, Any]) -> str:
    """sha256 of everything a checkpoint holds besides its weights and its decoderlab record: what a resume
    restores (optimizer and scheduler states, loops, callbacks, step, epoch, hyper-parameters)."""
    h = hashlib.sha256()
    _hash_tree(h, {k: v for k, v in ckpt.items() if k not in ("state_dict", RECORD_KEY)})
    return h.hexdigest()


def seal(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Stamp the checksums (and the format version) into the decoderlab record: ``checksum`` of the weights
    (``ckpt["state_dict"]``), ``training_checksum`` of the rest of the training state (format 2 on)."""
    if RECORD_KEY in ckpt and "state_dict" in ckpt:
        record = ckpt[RECORD_KEY]
        record["format"] = FORMAT_VERSION
        record["checksum"] = state_checksum(ckpt["state_dict"])
        record["training_checksum"] = training_checksum(ckpt)
    return ckpt


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` such that a kill at any moment leaves either the old or the new file; a failed
    save removes its temporary file."""
    path = Path(path)
    replaced = path.is_file()
    try:
        with rundir.atomic_open(path) as f:
            torch.save(obj, f)
    except rundir.DiskFullError:  # a user-facing failure: the run ends "failed", what was saved before kept
        raise UserError(f"cannot save checkpoint: no space left on device writing {path}; "
                        f"{_what_is_left(path, replaced)}") from None


def _what_is_left(path: Path, replaced: bool) -> str:
    """After a save of ``path`` failed for want of space: what a resume of the run can start from."""
    if replaced:
        return "the previous file is intact (free some space and resume)"
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
    if others:
        return f"the run's earlier checkpoints are intact ({', '.join(others)}; free some space and resume)"
    return ("no earlier checkpoint exists, so there is nothing to resume from (free some space and start the run "
            "again)")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a file of plain values and tensors (unverified); a missing or unreadable file names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise UserError(f"cannot load checkpoint {path} (corrupt or not a checkpoint): {_load_failure(path, e)}") \
            from None


def _load_failure(path: Path, e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line (torch's own text is a page of advice on loading
    the file unsafely, or a bare ``KeyError: '101'`` for a file that is no torch archive at all)."""
    text = str(e)
    if "Weights only load failed" in text:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text)
        why = f" ({detail.group(1).strip().rstrip('.')})" if detail and detail.group(1).strip() else ""
        return f"it holds objects other than plain values and tensors, refused by a weights-only load{why}"
    if not zipfile.is_zipfile(path):
        return "not a torch.save archive (truncated, or another kind of file)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def verify(ckpt: Any, source: str | Path) -> dict[str, Any]:
    """Raise :class:`UserError` naming ``source`` unless ``ckpt`` is an intact decoderlab checkpoint."""
    if not isinstance(ckpt, dict) or RECORD_KEY not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"{source} is not a decoderlab checkpoint (no 'decoderlab' record or 'state_dict')")
    record = ckpt[RECORD_KEY]
    version = record.get("format")
    if version is not None and (not isinstance(version, int) or version > FORMAT_VERSION):
        raise UserError(f"{source}: checkpoint format {version!r} is newer than this decoderlab reads "
                        f"({FORMAT_VERSION}); upgrade decoderlab")
    expected = record.get("checksum")
    if version is not None and expected is None:
        raise UserError(f"{source}: checkpoint has no checksum (an incomplete write?)")
    if expected is not None and state_checksum(ckpt["state_dict"]) != expected:
        raise UserError(f"{source}: checkpoint is corrupt: its weights do not match the checksum saved with them")
    if version is not None and version >= 2:  # format 1 sealed the weights only
        expected = record.get("training_checksum")
        if expected is None:
            raise UserError(f"{source}: checkpoint has no training-state checksum (an incomplete write?)")
        if training_checksum(ckpt) != expected:
            raise UserError(f"{source}: checkpoint is corrupt: its training state (optimizer, loops, step) does not "
                            f"match the checksum saved with it")
    return ckpt


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A verified decoderlab checkpoint (``weights_only=True``); a missing, corrupt or foreign file names the file."""
    return verify(load_checkpoint(path, map_location), path)


def newest_intact_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies (by modification time), warning for each corrupt one
    skipped; None when there is none."""
    candidates = sorted(rundir.checkpoint_dir(run_dir).glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name),
                        reverse=True)
    for path in candidates:
        try:
            read_checkpoint(path)
        except UserError as e:
            log.warning("skipping corrupt checkpoint: %s", e)
            continue
        return path
    return None


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The Decoder's state dict inside a Lightning checkpoint (``model.`` / ``_orig_mod.`` prefixes removed)."""
    out = {}
    for k, v in ckpt["state_dict"].items():
        if k.startswith("model."):
            out[k.removeprefix("model.").removeprefix("_orig_mod.")] = v
    return out


def model_config_from_record(record: dict[str, Any], source: str) -> ModelConfig:
    """The :class:`ModelConfig` a checkpoint's ``model`` record describes; a field ModelConfig lacks is an error."""
    fields = dict(record.get("model", {}))
    if record.get("format") is None:  # written before the record held only what builds the model
        for key in _PRE_FORMAT_RUN_KEYS:
            fields.pop(key, None)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserError(f"{source}: unknown field(s) {', '.join(unknown)} in the checkpoint's model record "
                        f"(a newer decoderlab, or a plugin's field?)")
    return ModelConfig(**fields)


def bound_tokenizer(ckpt: dict[str, Any], source: str) -> Tokenizer:
    """The tokenizer a checkpoint was trained with."""
    text = ckpt.get(RECORD_KEY, {}).get("tokenizer")
    if not text:
        raise UserError(f"{source} holds no tokenizer record: it was not written by decoderlab-train")
    return tokenizer_from_json(text, f"tokenizer record of {source}")


def require_same_tokenizer(bound: Tokenizer, other: Tokenizer, bound_name: str, other_name: str) -> None:
    """Raise unless ``other`` gives every text the ids ``bound`` gives it."""
    if bound.fingerprint() != other.fingerprint():
        raise UserError(
            f"tokenizer mismatch: {bound_name} is bound to {bound.describe()}, but {other_name} is "
            f"{other.describe()}; token ids would mean different text. Use the checkpoint's own tokenizer "
            f"(omit the other one), or grow the vocabulary with tokenizer=extend"
        )


def load_decoder(ckpt: dict[str, Any], source: str) -> tuple[Decoder, Tokenizer]:
    """The trained model (eval mode) and its bound tokenizer from a checkpoint read with :func:`read_checkpoint`."""
    record = ckpt[RECORD_KEY]
    tokenizer = bound_tokenizer(ckpt, source)
    require_plugins(record, source)
    model_cfg = model_config_from_record(record, source)
    try:
        model = Decoder(model_cfg, int(record["vocab_size"]))
    except (ValueError, KeyError) as e:
        raise UserError(f"{source}: cannot rebuild its model: {type(e).__name__}: {e}") from None
    try:
        missing, unexpected = model.load_state_dict(model_state(ckpt), strict=False)
    except RuntimeError as e:  # shape mismatch: the record does not describe these weights
        raise UserError(f"{source}: weights do not fit the model it describes: {str(e).splitlines()[-1]}") from None
    if missing or unexpected:
        raise UserError(f"{source}: weights do not fit the model it describes (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return model.eval(), tokenizer


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, run directory or None) for a run directory or a checkpoint file."""
    path = Path(path).expanduser()
    if path.is_dir():
        ckpt = rundir.last_checkpoint(path)
        if not ckpt.is_file():
            raise UserError(f"{path} is not a finished run directory: {ckpt} not found")
        return ckpt, path
    if not path.exists():
        raise UserError(f"no such run directory or checkpoint: {path}")
    run = path.parent.parent
    return path, run if (run / rundir.CONFIG_FILE).is_file() else None


def load_model(path: str | Path) -> tuple[Decoder, Tokenizer, dict[str, Any]]:
    """The trained model (eval mode), its bound tokenizer and its decoderlab record, from a run directory (its
    ``checkpoints/last.ckpt``) or a checkpoint file; verified."""
    ckpt_path, _ = resolve_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path)
    model, tokenizer = load_decoder(ckpt, str(ckpt_path))
    return model, tokenizer, ckpt[RECORD_KEY]


def write_checkpoint(path: str | Path, model: Decoder, tokenizer: Tokenizer, **extra: Any) -> Path:
    """A checkpoint in the layout ``decoderlab-train`` writes, without Lightning: for converted or hand-built
    models."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    atomic_save(seal({"state_dict": state, RECORD_KEY: {**checkpoint_record(model, tokenizer), **extra}}), path)
    return Path(path)
