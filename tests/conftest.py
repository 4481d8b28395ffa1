"""Test-wide settings: one torch thread per process (tests run in parallel), a private token cache,
wandb offline, and helpers to run the real command-line entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DECODERLAB_CACHE"] = str(tmp_path_factory.getbasetemp() / "token-cache")


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A small English text file (generated, no download): enough windows for a tiny model."""
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog, then rests {i % 7} times.\n" for i in range(400)]
    path = tmp_path / "tiny.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


TINY = [
    "model.n_layers=1", "model.n_heads=2", "model.d_model=16", "model.block_size=16", "data.batch_size=4",
    "data.eval_batch_size=8", "data.val_max_windows=8", "trainer.max_steps=6", "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "sample.max_new_tokens=8", "threads=1",
]


def run_cli(args: list[str], cwd: Path, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a console entry point (e.g. ``decoderlab-train``) as a user would, capturing its output."""
    full_env = dict(os.environ, **(env or {}))
    exe = Path(sys.executable).parent / args[0]
    cmd = [str(exe) if exe.exists() else args[0], *args[1:]]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """CI installs every optional test dependency (transformers, the sweep plugins, chromium): there, a skipped
    test means a missing dependency, not a pass, so ``DECODERLAB_STRICT_SKIPS=1`` turns skips into failures."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("DECODERLAB_STRICT_SKIPS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped in strict mode (DECODERLAB_STRICT_SKIPS=1): {report.longrepr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a GPU: without one they are deselected (reported as such, not skipped, so strict
    runs stay green); on a machine with CUDA they run with the rest."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("cuda")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]
