"""The LightningModule: loss, bits-per-byte, optimizer and schedule. The model itself stays Lightning-free.

The training step is written for a GPU as much as for a CPU: no host sync per step (metrics are read back only
every ``log_every`` steps), gradient clipping and the divergence check share one gradient-norm computation
(:mod:`decoderlab.guard`), and ``trainer.compile`` compiles the function the step calls (model and loss).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric

from decoderlab.checkpoint import require_same_tokenizer
from decoderlab.components.tokenizers import tokenizer_from_json
from decoderlab.config import OptimConfig, TrainerConfig
from decoderlab.errors import ConfigError
from decoderlab.guard import NonFiniteError, NonFiniteGuard, all_finite
from decoderlab.model import Decoder
from decoderlab.units import LN2


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``min_lr`` at ``decay_steps`` (then flat).

    A closed form of the step, kept instead of ``SequentialLR(LinearLR, CosineAnnealingLR, ConstantLR)``:
    those update the rate recursively (rounding drifts with the step count) and their state after a resume
    depends on the optimizer's current rate; this is exact at every step and resumes from the step alone.
    """
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


def seed_step(device: torch.device, seed: int, micro_step: int, rank: int) -> None:
    """Seed the RNG of ``device`` from (seed, micro-step, rank): dropout at a step is the same whether the run was
    resumed or not, whatever else (data loaders, validation, Lightning) drew from the RNG in between."""
    s = hash((seed, micro_step, rank)) & (2**63 - 1)  # hash of an int tuple is not salted: stable across runs
    torch.default_generator.manual_seed(s)  # ~1 us; torch.manual_seed costs ~60 us (it visits every backend)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(s)


def _host(t: torch.Tensor) -> torch.Tensor:
    """A host copy for ``self.log``: Lightning converts logged tensors with ``.item()`` after *every* batch (its
    progress-bar metrics), a device sync per step unless the stored value already lives on the CPU."""
    return t.detach().to("cpu", copy=True)


def total_grad_norm(grads: list[torch.Tensor], sharded: bool = False) -> torch.Tensor:
    """The L2 norm of all gradients; ``sharded``: each rank holds a disjoint shard of them (FSDP), so the squared
    norms of the shards are summed over the ranks first (one all-reduce)."""
    norm = torch.nn.utils.get_total_norm(grads)
    if not sharded:
        return norm
    squared = norm.float().pow(2)
    torch.distributed.all_reduce(squared)
    return squared.sqrt()


class LitDecoder(L.LightningModule):
    """Trains a :class:`Decoder`; logs train loss, lr, grad norm, tokens/s every ``log_every`` steps, val loss
    and bpb. ``trainer`` carries clipping, the divergence policy and compilation (``None``: the defaults)."""

    def __init__(self, model: Decoder, optim: OptimConfig, token_bytes: np.ndarray, max_steps: int,
                 log_every: int = 10, checkpoint_extra: dict[str, Any] | None = None,
                 trainer: TrainerConfig | None = None, seed: int = 0):
        super().__init__()
        t = trainer or TrainerConfig()
        self.model = model
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.log_every = max(1, log_every)
        self.clip_val, self.seed = t.gradient_clip_val, seed
        self.guard = NonFiniteGuard(t.on_nonfinite, t.max_nonfinite_in_a_row)
        self.register_buffer("token_bytes", torch.as_tensor(token_bytes, dtype=torch.long), persistent=False)
        self.checkpoint_extra = checkpoint_extra or {}
        # nan_strategy="disable": a NaN loss must stay NaN (the default drops NaN values and reports 0.0).
        self.val_nats, self.val_tokens, self.val_bytes, self.val_windows = (
            SumMetric(nan_strategy="disable") for _ in range(4))
        # Compile the functions the steps call: torch.compile(model).loss would run the uncompiled module. Plain
        # functions, not modules: the state dict keeps the model's own keys.
        self._loss_fn, self._logits_fn = model.loss, model.__call__  # bound methods: not registered as modules
        if t.compile:
            self._loss_fn = torch.compile(model.loss, backend=t.compile_backend)
            self._logits_fn = torch.compile(model.forward, backend=t.compile_backend)
        self._t_last: float | None = None  # the previous logging step (the first step's start before it)
        self._t_start: float | None = None
        self._t_val: float | None = None  # when the running validation started
        self._paused = 0.0  # validation seconds since _t_last: not training time, left out of tokens/s
        self._tokens_since = 0
        self._micro = 0
        self.tokens_seen = 0
        self.tokens_at_start = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def on_train_start(self) -> None:
        self.tokens_at_start = self.tokens_seen  # restored on resume: throughput counts this process only
        self._micro = self.global_step * self.trainer.accumulate_grad_batches  # the data module's stream index

    def _log_now(self) -> bool:
        """The steps whose figures Lightning writes: it flushes the logged values when ``(step + 1) % N == 0``
        (``log_every_n_steps``), under that step's number; a value logged at another step would be written late,
        under a later step's number. The last step logs too (not written as a row unless it is such a step): the
        run's final train loss, also when it is shorter than N steps."""
        step = self.global_step + 1
        return step % self.log_every == 0 or step == self.trainer.max_steps

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self._t_start is None:
            self._t_start = self._t_last = time.perf_counter()
        seed_step(x.device, self.seed, self._micro, self.global_rank)
        self._micro += 1
        loss = self._loss_fn(x, y)
        self.guard.see_loss(loss)
        n = x.numel() * self.trainer.world_size
        self.tokens_seen += n
        self._tokens_since += n
        if self._log_now():  # every N steps only: each read-back is a host sync, each self.log ~1 ms of Python
            self._log_train(loss, x.shape[0])
        return loss

    def _log_train(self, loss: torch.Tensor, batch_size: int) -> None:
        if loss.device.type == "cuda":
            torch.cuda.synchronize(loss.device)  # tokens/s counts finished work; the only sync of the interval
        now = time.perf_counter()
        host_loss = _host(loss)
        metrics = {"train/loss": host_loss, "lr": _host(torch.tensor(self.lr_schedulers().get_last_lr()[0])),
                   "tokens_seen": _host(torch.tensor(float(self.tokens_seen)))}
        if self.guard.mode == "skip" and self.guard.device is not None:
            metrics["train/nonfinite_skipped"] = _host(self.guard.skipped.float())
        if self._t_last is not None and now - self._t_last - self._paused > 0:
            metrics["train/tokens_per_s"] = torch.tensor(self._tokens_since / (now - self._t_last - self._paused))
        self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, batch_size=batch_size)
        self.log("loss", host_loss, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self._t_last, self._tokens_since, self._paused = now, 0, 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """One gradient norm for clipping, the grad-norm metric and the divergence check; a bad step is skipped."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = total_grad_norm([p.grad for p in params], sharded=self._grads_sharded())
        if self.clip_val:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_val, norm)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        # fp16's scaler makes inf gradients on purpose and skips those steps itself: judge only the loss there.
        flag = self.guard.judge(None if scaler is not None else norm, self.global_step)
        opt = getattr(optimizer, "optimizer", optimizer)
        if opt.defaults.get("fused") and scaler is None:
            opt.found_inf = flag  # the fused kernel skips the update on the device: no host sync
        elif bool(flag):  # other optimizers: a host sync per step; a parameter without a gradient is not updated
            for p in params:
                p.grad = None
        if self._log_now():
            self.log("train/grad_norm", _host(norm), on_step=True, on_epoch=False, batch_size=1)
            self.guard.check(self._last_checkpoint())

    def _grads_sharded(self) -> bool:
        """FSDP: each rank holds a shard of the gradients (DDP's are all-reduced: identical on every rank)."""
        from lightning.pytorch.strategies import FSDPStrategy

        return isinstance(self.trainer.strategy, FSDPStrategy)

    def on_train_end(self) -> None:
        self.guard.check(self._last_checkpoint())

    def _last_checkpoint(self) -> str | None:
        cb = self.trainer.checkpoint_callback
        return getattr(cb, "last_model_path", None) or None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self._logits_fn(x)
        nats = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100,
                               reduction="sum")
        counted = y >= 0  # a mask, not y[y >= 0]: boolean indexing is a host sync on a GPU
        self.val_nats.update(nats)
        self.val_tokens.update(counted.sum())
        self.val_bytes.update((self.token_bytes[y.clamp(min=0)] * counted).sum())
        self.val_windows.update(x.shape[0])

    def on_validation_epoch_end(self) -> None:
        nats, tokens, nbytes = self.val_nats.compute(), self.val_tokens.compute(), self.val_bytes.compute()
        windows = self.val_windows.compute()
        for m in (self.val_nats, self.val_tokens, self.val_bytes, self.val_windows):
            m.reset()
        self.log_dict({"val/loss": nats / tokens.clamp(min=1), "val/bpb": nats / LN2 / nbytes.clamp(min=1)},
                      prog_bar=True)
        self.log_dict({"val/bytes": nbytes.float(), "val/windows": windows.float()})
        if self._t_start is not None:  # wall-clock axis for comparisons (validation time included)
            self.log("time/elapsed_s", time.perf_counter() - self._t_start)
        if self._t_val is not None:  # validation time is not training time: left out of tokens/s
            self._paused += time.perf_counter() - self._t_val
            self._t_val = None

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":
            self._t_val = time.perf_counter()

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.optim_cfg
        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = use_fused(c.fused, decay + no_decay)
        if fused and self.clip_val and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            # fp16's scaler unscales inside a fused step: the gradients seen before it are still scaled.
            if c.fused:
                raise ConfigError("optim.fused=true cannot clip gradients under trainer.precision=16-mixed (the "
                                  "gradient scaler unscales inside the fused step); use bf16-mixed or optim.fused=false")
            fused = False
        opt = torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, fused=fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, c, self.max_steps) / c.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never write a diverged state: the previous checkpoint stays the last finite one.
        self.guard.check(self._last_checkpoint())
        if not all_finite(list(self.model.parameters())):
            raise NonFiniteError(f"training diverged: non-finite weights at step {self.global_step}; checkpoint "
                                 f"not written, last finite checkpoint: {self._last_checkpoint() or 'none'}")
        # Plain values only (loads with weights_only=True): model config, tokenizer JSON, RNG state.
        checkpoint["decoderlab"] = dict(self.checkpoint_extra, tokens_seen=self.tokens_seen, **self.guard.state())
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("decoderlab", {})
        bound = record.get("tokenizer")
        if bound and "tokenizer" in self.checkpoint_extra:  # never resume with another tokenizer
            require_same_tokenizer(tokenizer_from_json(bound), tokenizer_from_json(self.checkpoint_extra["tokenizer"]),
                                   "the resumed checkpoint", "this run")
        self.tokens_seen = int(record.get("tokens_seen", 0))
        self.guard.load(record, self.device)
        saved, mine = record.get("model"), self.checkpoint_extra.get("model")
        if saved and mine:
            diff = sorted(k for k in set(saved) | set(mine) if k not in ("init_from",) and saved.get(k) != mine.get(k))
            if diff:
                raise ConfigError(f"trainer.ckpt_path: the checkpoint was trained with different "
                                  f"{', '.join('model.' + k for k in diff)}; resume with the same model settings")
        if "rng" in checkpoint:  # dropout is seeded per step (seed_step); restored for anything else that draws
            torch.set_rng_state(checkpoint["rng"]["torch"])
            if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
