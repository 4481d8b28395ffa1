"""What a run prints: one line per event, no third-party noise, and a train.log with validations and the summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tests.conftest import REPO, TINY

NOISE = ("litlogger", "Tip", "anonymous setting", "Run history", "Run summary", "wandb: Tracking run", "Epoch 0/",
         "v_num")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny real ``decoderlab-train`` run with the default loggers (CSV + wandb offline), wandb's silence unset."""
    d = tmp_path_factory.mktemp("output")
    (d / "c.txt").write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(REPO / "src"))
    args = [*TINY, "data=text", "data.paths=[c.txt]", "logger=default", "hydra.run.dir=run"]
    res = subprocess.run([sys.executable, "-m", "decoderlab.train", *args], cwd=d, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr, d / "run"


@pytest.mark.slow
def test_every_line_once_and_no_third_party_noise(tiny_run: tuple[str, Path]) -> None:
    out, run = tiny_run
    sample = set((run / "sample.txt").read_text(encoding="utf-8").splitlines())
    lines = [ln for ln in out.splitlines() if ln.strip() and ln not in sample]
    # a message printed twice, whatever the handler's format: "[time][logger][LEVEL] - msg" or "LEVEL: msg"
    messages = Counter(re.sub(r"^(\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - |[A-Z]+: )", "", ln) for ln in lines)
    assert [m for m, n in messages.items() if n > 1] == []
    assert not [ln for ln in lines if any(n in ln for n in NOISE)]
    assert not [ln for ln in lines if ln.startswith("INFO: ")]  # Lightning's own handler next to Hydra's
    wandb_lines = [ln for ln in lines if "wandb" in ln]
    assert len(wandb_lines) == 1 and "wandb sync" in wandb_lines[0], wandb_lines


@pytest.mark.slow
def test_train_log_has_each_validation_and_the_summary(tiny_run: tuple[str, Path]) -> None:
    out, run = tiny_run
    log = (run / "train.log").read_text(encoding="utf-8")
    vals = re.findall(r"step (\d+)/6(?: \(final\))?: val loss [\d.]+, val bpb [\d.]+, [\d,-]+ tokens/s, [\d.]+ s", log)
    assert {"3", "6"} <= set(vals)  # trainer.val_check_interval=3, max_steps=6
    summary = [ln for ln in log.splitlines() if "summary: 6 steps" in ln]
    assert len(summary) == 1 and "val bpb" in summary[0] and "tokens/s" in summary[0]
    assert "summary: 6 steps" not in out  # the console shows the table instead


def test_progress_line_counts_steps_to_max_steps_and_shows_the_metrics() -> None:
    import io
    from types import SimpleNamespace

    import torch

    from decoderlab.logs import StepProgress

    metrics = {"train/loss": torch.tensor(3.25), "val/loss": torch.tensor(3.5), "val/bpb": torch.tensor(4.75),
               "train/tokens_per_s": torch.tensor(12345.0)}
    trainer = SimpleNamespace(global_step=80, max_steps=100, is_global_zero=True, log_every_n_steps=10,
                              sanity_checking=False, callback_metrics=metrics)  # a run resumed at step 80
    stream = io.StringIO()
    bar = StepProgress(stream)
    bar.on_train_start(trainer, None)
    trainer.global_step = 90
    bar.on_train_batch_end(trainer)
    bar.on_train_end(trainer, None)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, redrawn in place, ended once
    last = text.rstrip().split("\r")[-1]
    assert last.startswith("step 90/100 | loss 3.2500 | val 3.5000 bpb 4.7500 | 12,345 tok/s")
    assert "Epoch" not in text and "v_num" not in text
