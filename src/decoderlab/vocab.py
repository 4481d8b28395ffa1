"""A model and its vocabulary: checkpoints bound to their tokenizer, and growing a trained model's vocabulary.

Every checkpoint holds the tokenizer it was trained with (``checkpoint["decoderlab"]["tokenizer"]``); loading one
never silently pairs it with another tokenizer: :func:`require_same_tokenizer` compares fingerprints (what decides
the ids, not where a file lives) and names both on a mismatch.

``model.init_from=<ckpt>`` starts a run from a checkpoint's weights. With ``tokenizer=extend`` whose base is the
checkpoint's tokenizer, the embedding (and an untied head) grows: rows of the old ids are copied, new rows start at
the **mean of the old rows** (Hewitt 2021, https://nlp.stanford.edu/~johnhew/vocab-expansion.html): a new token then
starts as an "average" token, so the extended model's predictions on old text barely move, whereas N(0, 0.02) rows
would put new tokens' logits at an arbitrary level next to trained ones.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from decoderlab.checkpoint import load_checkpoint
from decoderlab.components.tokenizers import Tokenizer, tokenizer_from_json
from decoderlab.errors import ConfigError, UserError
from decoderlab.model import Decoder, ModelConfig

log = logging.getLogger(__name__)
EMBEDDING_KEYS = ("tok_emb.weight", "head.weight")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A decoderlab checkpoint (``weights_only=True``); a missing, corrupt or foreign file names the file."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "decoderlab" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a decoderlab checkpoint (no 'decoderlab' record or 'state_dict')")
    return ckpt


def bound_tokenizer(ckpt: dict[str, Any], source: str) -> Tokenizer:
    """The tokenizer a checkpoint was trained with."""
    text = ckpt.get("decoderlab", {}).get("tokenizer")
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


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The Decoder's state dict inside a Lightning checkpoint (``model.`` / ``_orig_mod.`` prefixes removed)."""
    out = {}
    for k, v in ckpt["state_dict"].items():
        if k.startswith("model."):
            out[k.removeprefix("model.").removeprefix("_orig_mod.")] = v
    return out


def model_config(meta: dict[str, Any]) -> ModelConfig:
    """A :class:`ModelConfig` from a checkpoint's plain ``model`` record (run-level keys such as init_from dropped)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in meta.get("model", {}).items() if k in known})


def load_decoder(ckpt: dict[str, Any], source: str) -> tuple[Decoder, Tokenizer]:
    """The trained model (eval mode) and its bound tokenizer from a checkpoint loaded with :func:`read_checkpoint`."""
    meta = ckpt["decoderlab"]
    tokenizer = bound_tokenizer(ckpt, source)
    try:
        model = Decoder(model_config(meta), int(meta["vocab_size"]))
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


def grow_rows(old: torch.Tensor, new_rows: int) -> torch.Tensor:
    """``old`` (V_old, d) plus ``new_rows`` rows, each the mean of the old rows."""
    mean = old.mean(dim=0, keepdim=True)  # (1, d)
    return torch.cat((old, mean.expand(new_rows, -1)), dim=0)  # (V_old + new_rows, d)


def init_from_checkpoint(model: Decoder, path: str | Path, tokenizer: Tokenizer) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (built for ``tokenizer``), growing the vocabulary if needed."""
    ckpt = read_checkpoint(path)
    source = f"model.init_from checkpoint {path}"
    old_tok = bound_tokenizer(ckpt, source)
    state = model_state(ckpt)
    old_v, new_v = state["tok_emb.weight"].shape[0], model.tok_emb.weight.shape[0]
    if old_tok.fingerprint() != tokenizer.fingerprint():
        base = getattr(tokenizer, "base_fingerprint", None)
        if base is None or base() != old_tok.fingerprint():
            require_same_tokenizer(old_tok, tokenizer, source, "this run's tokenizer")
        for key in EMBEDDING_KEYS:
            if key in state:
                state[key] = grow_rows(state[key], new_v - old_v)
    mine = model.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(mine[k].shape)}"
           for k, v in state.items() if k in mine and mine[k].shape != v.shape]
    missing = sorted(set(mine) - set(state))
    if bad or missing:
        raise ConfigError(f"{source} does not fit this model ({'; '.join(bad + [f'missing {m}' for m in missing])}):"
                          f" use the same model.* sizes and components")
    model.load_state_dict({k: v for k, v in state.items() if k in mine})
    return {"init_from": str(path), "copied_rows": old_v, "new_rows": new_v - old_v, "new_row_init": "mean"}


def maybe_init_from(cfg: Any, model: Decoder, tokenizer: Tokenizer | None = None) -> Decoder:
    """Apply ``model.init_from`` when the config sets it (read defensively: the key may be absent)."""
    from omegaconf import OmegaConf

    path = OmegaConf.select(cfg, "model.init_from", default=None)
    if not path:
        return model
    if tokenizer is None:  # runner.run saves the run's tokenizer into the run directory before building the model
        from decoderlab.components.tokenizers import load_tokenizer
        from decoderlab.train import run_dir

        tokenizer = load_tokenizer(run_dir())
    report = init_from_checkpoint(model, path, tokenizer)
    log.info("model.init_from=%s: %d embedding rows copied, %d new rows initialized at the mean of the old ones",
             path, report["copied_rows"], report["new_rows"])
    return model


def write_checkpoint(path: str | Path, model: Decoder, tokenizer: Tokenizer, **extra: Any) -> Path:
    """A checkpoint in the layout ``decoderlab-train`` writes (``state_dict`` under ``model.``, the
    ``decoderlab`` record with the model config and the bound tokenizer), without Lightning: for converted or
    hand-built models."""
    from decoderlab.checkpoint import atomic_save

    record = {"model": dataclasses.asdict(model.cfg) if dataclasses.is_dataclass(model.cfg) else dict(model.cfg),
              "vocab_size": model.tok_emb.weight.shape[0], "tokenizer": tokenizer.to_json(), **extra}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    atomic_save({"state_dict": state, "decoderlab": record}, path)
    return Path(path)
