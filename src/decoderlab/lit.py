"""The LightningModule: loss, bits-per-byte, optimizer and schedule. The model itself stays Lightning-free."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric

from decoderlab.config import OptimConfig
from decoderlab.model import Decoder
from decoderlab.units import LN2


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``decay_steps`` (then flat)."""
    decay = cfg.decay_steps or max_steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if step >= decay:
        return cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, decay - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def use_fused(setting: bool | None, params: list[torch.Tensor]) -> bool:
    """Fused AdamW unless told otherwise: one kernel instead of a Python loop over tensors (~2 ms of a 31 ms CPU
    step at the default size). ``None``: on when every parameter is on a CPU or CUDA device."""
    if setting is not None:
        return setting
    return all(p.device.type in ("cpu", "cuda") for p in params)


class LitDecoder(L.LightningModule):
    """Trains a :class:`Decoder`; logs train loss, lr, tokens/s every ``log_every`` steps, val loss and bpb."""

    def __init__(self, model: Decoder, optim: OptimConfig, token_bytes: np.ndarray, max_steps: int,
                 log_every: int = 10, checkpoint_extra: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.log_every = max(1, log_every)
        self.register_buffer("token_bytes", torch.as_tensor(token_bytes, dtype=torch.long), persistent=False)
        self.checkpoint_extra = checkpoint_extra or {}
        self.val_nats, self.val_tokens, self.val_bytes = SumMetric(), SumMetric(), SumMetric()
        self._t_last: float | None = None
        self._t_start: float | None = None
        self._tokens_since = 0
        self.tokens_seen = 0
        self.tokens_at_start = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def on_train_start(self) -> None:
        self.tokens_at_start = self.tokens_seen  # restored on resume: throughput counts this process only

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self._t_start is None:
            self._t_start = time.perf_counter()
        loss = self.model.loss(x, y)
        n = x.numel() * self.trainer.world_size
        self.tokens_seen += n
        self._tokens_since += n
        # Log every N steps only: each self.log call costs ~1 ms, 3% of a CPU step.
        step = self.global_step
        if step % self.log_every == 0:
            now = time.perf_counter()
            metrics = {"train/loss": loss.detach(), "lr": self.lr_schedulers().get_last_lr()[0],
                       "tokens_seen": float(self.tokens_seen)}
            if self._t_last is not None:
                metrics["train/tokens_per_s"] = self._tokens_since / (now - self._t_last)
            self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, batch_size=x.shape[0])
            self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
            self._t_last, self._tokens_since = now, 0
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        nats = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100,
                               reduction="sum")
        counted = y[y >= 0]
        self.val_nats.update(nats)
        self.val_tokens.update(counted.numel())
        self.val_bytes.update(self.token_bytes[counted].sum())

    def on_validation_epoch_end(self) -> None:
        nats, tokens, nbytes = self.val_nats.compute(), self.val_tokens.compute(), self.val_bytes.compute()
        self.val_nats.reset(), self.val_tokens.reset(), self.val_bytes.reset()
        self.log_dict({"val/loss": nats / tokens.clamp(min=1), "val/bpb": nats / LN2 / nbytes.clamp(min=1)},
                      prog_bar=True)
        self.log("val/bytes", nbytes.float())
        if self._t_start is not None:  # wall-clock axis for comparisons (validation time included)
            self.log("time/elapsed_s", time.perf_counter() - self._t_start)
        self._t_last = None  # don't count validation time in tokens/s

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.optim_cfg
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = use_fused(c.fused, decay + no_decay)
        if c.fused is None and self.trainer.gradient_clip_val and "mixed" in str(self.trainer.precision):
            fused = False  # Lightning refuses to clip the gradients of an optimizer that unscales internally
        opt = torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, c, self.max_steps) / c.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain values only (loads with weights_only=True): model config, tokenizer JSON, RNG state.
        checkpoint["decoderlab"] = dict(self.checkpoint_extra, tokens_seen=self.tokens_seen)
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bound = checkpoint.get("decoderlab", {}).get("tokenizer")
        if bound and "tokenizer" in self.checkpoint_extra:  # never resume with another tokenizer
            from decoderlab.checkpoint import require_same_tokenizer
            from decoderlab.components.tokenizers import tokenizer_from_json

            require_same_tokenizer(tokenizer_from_json(bound), tokenizer_from_json(self.checkpoint_extra["tokenizer"]),
                                   "the resumed checkpoint", "this run")
        self.tokens_seen = int(checkpoint.get("decoderlab", {}).get("tokens_seen", 0))
        saved, mine = checkpoint.get("decoderlab", {}).get("model"), self.checkpoint_extra.get("model")
        if saved and mine:
            diff = sorted(k for k in set(saved) | set(mine) if k not in ("init_from",) and saved.get(k) != mine.get(k))
            if diff:
                from decoderlab.errors import ConfigError

                raise ConfigError(f"trainer.ckpt_path: the checkpoint was trained with different "
                                  f"{', '.join('model.' + k for k in diff)}; resume with the same model settings")
        if "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
