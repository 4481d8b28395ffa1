"""logger=tensorboard through the real ``decoderlab-train``: event files with the run's metrics and hyperparameters."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import TINY, run_cli

pytest.importorskip("tensorboard")
pytestmark = pytest.mark.slow


def _events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(run.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {run}"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _train(tmp_path: Path, logger: str) -> Path:
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", f"logger={logger}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def test_tensorboard_logs_train_and_val_loss(tmp_path: Path):
    run = _train(tmp_path, "tensorboard")
    tags = _events(run).Tags()
    for tag in ("train/loss", "val/loss", "val/bpb", "lr"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert "hp_metric" not in tags["scalars"]  # no placeholder metric
    assert len(_events(run).Scalars("val/loss")) == 2  # trainer.val_check_interval=3 of max_steps=6
    assert not (run / "metrics.csv").exists() and not list(run.glob("wandb"))  # tensorboard alone


def test_csv_and_tensorboard_log_the_same_metrics_and_hyperparameters(tmp_path: Path):
    run = _train(tmp_path, "[csv,tensorboard]")
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    acc = _events(run)
    csv_val = [(int(r["step"]), float(r["val/loss"])) for r in rows if r["val/loss"]]
    tb_val = [(e.step, e.value) for e in acc.Scalars("val/loss")]
    assert [s for s, _ in csv_val] == [s for s, _ in tb_val] and len(tb_val) == 2
    assert [v for _, v in csv_val] == pytest.approx([v for _, v in tb_val], rel=1e-6)
    csv_cols = {c for c in rows[0] if c not in ("step", "epoch")}
    assert csv_cols <= set(acc.Tags()["scalars"]) | {"epoch"}
    hparams = (run / "hparams.yaml").read_text()
    assert "model.n_layers" in hparams and "choice/model/positional" in hparams
    plugin = acc.PluginTagToContent("hparams")  # the hyperparameters are in the event file as well (HParams view)
    assert "_hparams_/session_start_info" in plugin
    assert b"model.n_layers" in plugin["_hparams_/session_start_info"]
    final = acc.Scalars("hparams/val_loss")  # paired with the run's final validation loss
    assert final[0].value == pytest.approx(tb_val[-1][1], rel=1e-6)
