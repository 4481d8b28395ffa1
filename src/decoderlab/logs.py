"""What a run prints: one line per event. Third-party noise filtered, the step progress bar, the validation lines.

* Lightning adds its own stream handlers (``lightning``, ``lightning.pytorch``, ``lightning.fabric``); under Hydra,
  whose handlers sit on the root logger, every Lightning line would print twice: :func:`setup_run_logging` removes
  Lightning's handlers when the root logger has its own, and filters advertisements and non-events (the litlogger
  tip, "TPU available: False", "`Trainer.fit` stopped: `max_steps` reached") from every handler.
* wandb's banner, run history and footer are off unless ``WANDB_SILENT`` is set (:func:`quiet_wandb`); the run
  prints one line of its own saying where the wandb run is and how to sync it.
* :class:`StepProgress` is the progress line: ``step N/max_steps`` with loss, val loss, val bpb and tokens/s, on one
  line, on a terminal only (piped output gets the validation lines instead).
* :class:`ValidationLog` logs a line per validation (step, val loss, val bpb, tokens/s, elapsed) to the console and
  ``train.log``; records with ``extra={"file_only": True}`` (the end-of-run summary) go to ``train.log`` only.

Imports Lightning: :mod:`decoderlab.fit` alone imports this module.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("decoderlab")
NOISE = re.compile(
    r"litlogger|💡 Tip|(TPU|HPU) available: False|GPU available: False, used: False|`Trainer\.fit` stopped: `max_steps="
)
FILE_ONLY = {"file_only": True}


class NoiseFilter(logging.Filter):
    """Drops third-party lines that are neither events nor something a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.search(record.getMessage())


class ConsoleFilter(logging.Filter):
    """Drops records meant for the log file only (``extra={"file_only": True}``) from a console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def _add_filter(handler: logging.Handler, filt: logging.Filter) -> None:
    if not any(type(f) is type(filt) for f in handler.filters):
        handler.addFilter(filt)


def setup_run_logging() -> None:
    """One handler per line (the root's when it has any, else Lightning's own) and noise filters on all of them."""
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        if root.handlers:
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.propagate = True
        for h in lg.handlers:
            _add_filter(h, NoiseFilter())
    for h in root.handlers:
        _add_filter(h, NoiseFilter())
        if not isinstance(h, logging.FileHandler):
            _add_filter(h, ConsoleFilter())


def quiet_wandb() -> None:
    """wandb's own banner and footer off (``WANDB_SILENT=true``) unless the user set ``WANDB_SILENT``."""
    os.environ.setdefault("WANDB_SILENT", "true")


def wandb_where(run: Any) -> str:
    """The one line printed for a wandb run: its URL online, else its directory and how to push it."""
    url = getattr(run, "url", None)
    if url:
        return f"wandb: {url}"
    run_dir = os.path.dirname(run.dir.rstrip("/"))  # run.dir is <offline-run-...>/files
    return f"wandb: offline run in {run_dir}; push it with: wandb sync {run_dir}"


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc, 10 ms resolution); None where that cannot be read."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time after boot
        return float(open("/proc/uptime").read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def _metric(trainer: Any, key: str) -> float | None:
    v = trainer.callback_metrics.get(key)
    return None if v is None else float(v)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


class ValidationLog(Callback):
    """A log line per validation: step, val loss, val bpb, the last tokens/s, seconds since training started."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.t0 = time.perf_counter()
        self.first = True

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if getattr(self, "first", False):  # start-up time, for benchmarks/bench_startup.py and the curious
            self.first = False
            age = process_age_s()
            if age is not None and trainer.is_global_zero:
                log.info("first training step %.2f s after the process started", age, extra=FILE_ONLY)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        final = " (final)" if trainer.state.fn == "validate" else ""
        log.info("step %d/%d%s: val loss %s, val bpb %s, %s tokens/s, %.1f s", trainer.global_step,
                 trainer.max_steps, final, _fmt(_metric(trainer, "val/loss")), _fmt(_metric(trainer, "val/bpb")),
                 _fmt(_metric(trainer, "train/tokens_per_s"), ",.0f"), time.perf_counter() - self.t0)


class StepProgress(Callback):
    """The progress line: ``step N/max_steps`` (a resumed run starts at its step), loss, val loss and bpb, tokens/s,
    redrawn in place when metrics are logged and after each validation. Only on a terminal (``stream`` for tests)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else (sys.stderr if sys.stderr.isatty() else None)
        self.active = False
        self.t0 = time.perf_counter()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.active = self.stream is not None and trainer.is_global_zero
        self.t0 = time.perf_counter()
        self._draw(trainer)

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if self.active and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._draw(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.active:  # a clean line for the validation's log line
            width = max(20, shutil.get_terminal_size().columns - 1)
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.active and not trainer.sanity_checking:
            self._draw(trainer)

    def line(self, trainer: Any) -> str:
        """``step 20/60 | loss 3.3031 | val 3.1387 bpb 4.5282 | 5,949 tok/s | 7 s``."""
        m = {k: _metric(trainer, k) for k in ("train/loss", "val/loss", "val/bpb", "train/tokens_per_s")}
        return (f"step {trainer.global_step}/{trainer.max_steps} | loss {_fmt(m['train/loss'])} | val "
                f"{_fmt(m['val/loss'])} bpb {_fmt(m['val/bpb'])} | {_fmt(m['train/tokens_per_s'], ',.0f')} tok/s | "
                f"{time.perf_counter() - self.t0:.0f} s")

    def _draw(self, trainer: Any) -> None:
        if not self.active:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        self.stream.write("\r" + self.line(trainer)[:width].ljust(width))
        self.stream.flush()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.active:
            self._draw(trainer)
            self.stream.write("\n")
            self.stream.flush()
            self.active = False
