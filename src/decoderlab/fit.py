"""Lightning plumbing of a run: loggers, callbacks, the Trainer, the final checkpoint and the sample.

Imports Lightning (~3.6 s): :mod:`decoderlab.runner` imports this module only once a run really trains.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from decoderlab import resume
from decoderlab.callbacks import PreemptCheckpoint
from decoderlab.checkpoint import atomic_save, checkpoint_record, read_checkpoint, seal
from decoderlab.errors import ConfigError, DataError
from decoderlab.lit import LitDecoder
from decoderlab.logs import StepProgress, ValidationLog, quiet_wandb, setup_run_logging, wandb_where
from decoderlab.model import Decoder
from decoderlab.preempt import Preempted
from decoderlab.wandb_names import wandb_names
from decoderlab.wandb_setup import check_credentials, start_wandb, wandb_offline_default

log = logging.getLogger("decoderlab")
# The run directory is also the CSV logger's directory: its "not empty" warning is expected noise.
warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic saves sealed with a checksum; verified ``weights_only=True`` loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_save(seal(checkpoint), path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, map_location or "cpu")


class TrainTimer(Callback):
    """Wall time spent in training batches only (validation and checkpointing excluded)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0: float | None = None

    def on_train_batch_start(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None


def build_loggers(cfg: DictConfig, out: Path, choices: dict[str, str]) -> list[Any]:
    """The run's loggers from ``cfg.logger``; a wandb logger starts now, bounded (:mod:`decoderlab.wandb_setup`)."""
    loggers = []
    for key, spec in (cfg.logger or {}).items():
        if spec is None:
            continue
        if not isinstance(spec, DictConfig):
            raise ConfigError(f"logger.{key}: expected a logger config with a _target_, got {spec!r}")
        spec = OmegaConf.to_container(spec, resolve=True)
        target = str(spec.get("_target_", ""))
        spec.setdefault("save_dir", str(out))
        if not target.endswith("WandbLogger"):
            loggers.append(_instantiate(key, spec))
            continue
        check_credentials()
        quiet_wandb()
        spec.setdefault("project", cfg.project)
        spec.setdefault("id", resume.wandb_id(out))  # a resume continues the same wandb run
        spec.setdefault("resume", "allow")
        for k, v in wandb_names(choices, cfg.run_name).items():
            spec.setdefault(k, v)
        offline = spec.pop("offline", wandb_offline_default())
        loggers.append(start_wandb(lambda off, spec=spec, key=key: _instantiate(key, {**spec, "offline": off}),
                                   offline))
        if spec.get("anonymous") is None:
            # Lightning passes anonymous=None to wandb.init, which warns about the deprecated setting on every run
            getattr(loggers[-1], "_wandb_init", {}).pop("anonymous", None)
    return loggers


def _instantiate(key: str, spec: dict) -> Any:
    try:
        return instantiate(spec)
    except Exception as e:  # noqa: BLE001 - a bad logger kwarg is a config mistake
        raise ConfigError(f"logger.{key}: cannot create {spec.get('_target_', '')}: {e}") from None


def build_trainer(cfg: DictConfig, out: Path, loggers: list[Any], timer: TrainTimer,
                  extra_callbacks: tuple[Callback, ...] = ()) -> L.Trainer:
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="step{step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=t.ckpt_every_n_steps or t.val_check_interval, save_top_k=-1 if t.ckpt_every_n_steps
        else 0, save_last=True,
        enable_version_counter=False,  # last.ckpt is rewritten in place (atomically), never beside as last-v1.ckpt
    )
    kwargs = dict(
        max_steps=t.max_steps, val_check_interval=min(t.val_check_interval, t.max_steps),
        check_val_every_n_epoch=None, log_every_n_steps=t.log_every_n_steps, accelerator=t.accelerator,
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        gradient_clip_val=None, accumulate_grad_batches=t.accumulate_grad_batches,
        enable_progress_bar=False, logger=loggers or False,  # our own bar: step N/max_steps (decoderlab.logs)
        callbacks=[ckpt, timer, ValidationLog(), *([StepProgress()] if t.enable_progress_bar else []),
                   *extra_callbacks],
        plugins=[AtomicCheckpointIO()], default_root_dir=str(out), num_sanity_val_steps=0,
        use_distributed_sampler=False, enable_model_summary=False,
    )
    kwargs.update(OmegaConf.to_container(t.extra, resolve=True))
    try:
        return L.Trainer(**kwargs)
    except (TypeError, ValueError, MisconfigurationException) as e:  # Lightning's word for a bad Trainer setting
        raise ConfigError(f"trainer: {e}") from None


def build_lit(cfg: DictConfig, model: Decoder, tokenizer: Any, max_steps: int | None = None,
              checkpoint_extra: dict | None = None) -> LitDecoder:
    """The LightningModule of a run (also what the benchmarks time). Clipping, the divergence check and
    compilation live in LitDecoder: Lightning's own clipping refuses fused AdamW under bf16-mixed."""
    return LitDecoder(model, OmegaConf.to_object(cfg.optim), tokenizer.token_bytes(),
                      max_steps or cfg.trainer.max_steps, cfg.trainer.log_every_n_steps,
                      checkpoint_extra=checkpoint_extra, trainer=OmegaConf.to_object(cfg.trainer), seed=cfg.seed)


def fit(cfg: DictConfig, out: Path, model: Decoder, data: Any, dm: Any, flat: dict, choices: dict,
        catcher: Any = None, resumed: bool = False) -> dict:
    """Train and validate; returns the figures of the run summary. ``catcher``: a preemption signal saves a
    checkpoint at the current step (:mod:`decoderlab.preempt`); ``resumed``: metrics.csv keeps its earlier rows."""
    setup_run_logging()
    lit = build_lit(cfg, model, data.tokenizer, checkpoint_extra=checkpoint_record(model, data.tokenizer))
    # Intermediate validations score a fixed sample of windows, the final one all of them.
    dm.val_sample_windows = cfg.trainer.val_sample_windows
    last = out / "checkpoints" / "last.ckpt"
    kept = resume.kept_metrics(out, read_checkpoint(cfg.trainer.ckpt_path)["global_step"]) if resumed else None
    loggers = build_loggers(cfg, out, choices)
    resume.restore_metrics(loggers, out, kept)
    timer = TrainTimer()
    trainer = build_trainer(cfg, out, loggers, timer, (PreemptCheckpoint(catcher, last),) if catcher else ())
    counts = model.param_counts()
    hparams = {**flat, **{f"params/{k}": v for k, v in counts.items()}}
    try:
        for lg in loggers:
            lg.log_hyperparams(hparams)
    except TypeError as e:  # wandb.init runs here: a misspelled logger.wandb.* keyword
        raise ConfigError(f"logger: {e}") from None
    t0 = time.perf_counter()
    trainer.fit(lit, datamodule=dm, ckpt_path=cfg.trainer.ckpt_path, weights_only=True)
    wall = time.perf_counter() - t0
    train_loss = _f(trainer.callback_metrics.get("train/loss"))  # a later validate() resets callback_metrics
    _final_validation(cfg, trainer, lit, dm, last)
    m = trainer.callback_metrics
    for lg in loggers:
        if type(lg).__name__ == "TensorBoardLogger":  # its HParams view pairs the hyperparameters with final figures
            lg.log_hyperparams(hparams, {f"hparams/{k.replace('/', '_')}": _f(m[k]) for k in ("val/loss", "val/bpb")
                                         if k in m})
        lg.finalize("success")
    _finish_wandb(loggers)
    if not trainer.is_global_zero:
        return {"rank_zero": False, "val_loss": _f(m.get("val/loss"))}
    sample = generate_sample(cfg, model, data.tokenizer)
    (out / "sample.txt").write_text(sample, encoding="utf-8")
    return {
        "steps": trainer.global_step, "tokens_seen": lit.tokens_seen,
        "train_loss": train_loss, "val_loss": _f(m.get("val/loss")), "val_bpb": _f(m.get("val/bpb")),
        "tokens_per_s": (lit.tokens_seen - lit.tokens_at_start) / timer.seconds if timer.seconds else None,
        "train_seconds": timer.seconds, "wall_seconds": wall, "checkpoint": str(last), "sample": sample,
    }


def _final_validation(cfg: DictConfig, trainer: L.Trainer, lit: LitDecoder, dm: Any, last: Path) -> None:
    """Validate the final model unless the last validation already did, then write ``last``; a signal meanwhile
    still leaves the final step's checkpoint behind."""
    try:
        if dm.val_is_sampled() or trainer.global_step % max(1, min(cfg.trainer.val_check_interval,
                                                                    cfg.trainer.max_steps)) != 0:
            trainer.validate(lit, datamodule=dm, verbose=False, weights_only=True)  # the summary: the final model
    except Preempted as p:
        trainer.save_checkpoint(last, weights_only=False)
        p.step = trainer.global_step
        raise
    trainer.save_checkpoint(last, weights_only=False)


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def _finish_wandb(loggers: list[Any]) -> None:
    """One wandb run per job: finish it before the next job of a sweep starts."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            import wandb  # lazy: optional and slow; only a run with a wandb logger needs it

            if wandb.run is not None:
                where = wandb_where(wandb.run)
                wandb.finish()
                log.info(where)


def sample_prompt_ids(cfg: DictConfig, tokenizer: Any, quiet: bool = False) -> torch.Tensor:
    """The end-of-run sample's prompt as ids, shape (1, n), cropped to the block. The run checks it before training,
    so the sample never fails a trained run: a ``sample.prompt`` the tokenizer cannot encode is an error naming it;
    a corpus's own ``data.sample_prompt`` that it cannot encode (a newline no record holds) gives an unprompted
    sample, with a warning."""
    s = cfg.sample
    key, prompt = ("sample.prompt", s.prompt) if s.prompt is not None else ("data.sample_prompt", cfg.data.sample_prompt)
    try:
        ids = [int(i) for i in tokenizer.encode(prompt)]
    except DataError as e:
        if key == "sample.prompt":
            raise ConfigError(f"sample.prompt={prompt!r} cannot be encoded: {e}") from None
        if not quiet:
            log.warning("%s=%r cannot be encoded (%s): the sample at the end starts unprompted", key, prompt, e)
        ids = []
    return torch.as_tensor(ids or [0], dtype=torch.long)[None, -cfg.model.block_size:]


def generate_sample(cfg: DictConfig, model: Decoder, tokenizer: Any) -> str:
    s = cfg.sample
    ids = sample_prompt_ids(cfg, tokenizer, quiet=True)
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    outs = model.generate(ids, s.max_new_tokens, s.temperature, s.top_k, s.top_p, generator=gen)
    return tokenizer.decode(outs[0].tolist())
