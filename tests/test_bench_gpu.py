"""benchmarks/bench_gpu.py runs end to end: without a GPU its smoke mode trains a tiny model both ways on the CPU."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_mode_writes_both_paths_figures(tmp_path):
    bench = load_bench()
    args = ["--smoke", "--steps", "4", "--models", "default", "alibi", "--hand", "default", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = result["rows"]
    assert [(r["shape"], r["mode"], r["model"]) for r in rows] == [("smoke", "eager", "default"),
                                                                  ("smoke", "eager", "alibi")]
    for key in ("ms_hand", "ms_decoderlab", "tokens_per_s_decoderlab", "ratio"):
        assert math.isfinite(rows[0][key]) and rows[0][key] > 0, (key, rows[0])
    assert rows[0]["mfu_hand"] is None  # no device peak on a CPU: no invented MFU
    assert rows[0]["vs_default"] == 1.0
    assert rows[1]["ms_hand"] is None and rows[1]["ratio"] is None  # --hand default: no hand loop for alibi
    assert rows[1]["vs_default"] == pytest.approx(rows[1]["ms_decoderlab"] / rows[0]["ms_decoderlab"])
    assert "| smoke | eager | alibi | - |" in (tmp_path / "gpu.md").read_text()
    assert logging.getLogger("decoderlab").level == logging.NOTSET  # quieted during the run only


def test_a_failing_row_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    bench = load_bench()

    def measure(shape, mode, model, a, device):
        if model == "t5":
            raise RuntimeError("CUDA out of memory\nsecond line")
        return dict(shape=shape, mode=mode, model=model, ms_hand=None, ms_decoderlab=2.0, tokens_per_s_decoderlab=1.0,
                    mfu_hand=None, mfu_decoderlab=None, peak_gib_decoderlab=None, ratio=None)

    monkeypatch.setattr(bench, "measure", measure)
    assert bench.main(["--smoke", "--models", "default", "t5", "alibi", "--out", str(tmp_path)]) == 1
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["default", "t5", "alibi"]
    assert rows[1]["error"] == "RuntimeError: CUDA out of memory"
    assert "| smoke | eager | t5 | failed: RuntimeError: CUDA out of memory |" in (tmp_path / "gpu.md").read_text()


def test_targets_say_met_not_met_or_not_measured():
    bench = load_bench()
    row = dict(shape="gpt2", mode="compiled", ms_hand=10.0, mfu_decoderlab=0.40)
    rows = [dict(row, model="default", ms_decoderlab=10.4, ratio=10 / 10.4), dict(row, model="t5", ms_decoderlab=12.0),
            dict(row, model="alibi", ms_decoderlab=14.0)]
    bench.vs_default(rows)
    assert bench.targets(rows) == [
        "- decoderlab >= 0.95x the hand-written compiled loop (gpt2, default): 0.962 (met)",
        "- MFU >= 45% (gpt2, compiled, default): 40.0% (NOT met)",
        "- t5 <= 1.3x the default model's step time (gpt2, compiled): 1.15x (met)",
        "- alibi <= 1.3x the default model's step time (gpt2, compiled): 1.35x (NOT met)",
        "- llama <= 1.3x the default model's step time (gpt2, compiled): not measured",
    ]


def test_peak_table_matches_device_names():
    bench = load_bench()
    assert bench.PEAK_BF16_TFLOPS["H200"] == bench.PEAK_BF16_TFLOPS["H100"] == 989.0
    assert bench.peak_tflops("cpu") is None
    model = torch.nn.Module()
    model.tok_emb = torch.nn.Embedding(10, 4)
    model.head = torch.nn.Linear(4, 10, bias=False)
    model.head.weight = model.tok_emb.weight
    cfg = type("C", (), {"model": type("M", (), {"n_layers": 2, "block_size": 8, "d_model": 4})})
    assert bench.flops_per_token(model, cfg) == 6 * 40 + 12 * 2 * 8 * 4  # the tied head counts once


@pytest.mark.slow
def test_the_one_call_gpu_script_runs_its_stages_and_fits_the_files_that_come_back(tmp_path):
    """scripts/gpu_check.sh on a machine without CUDA: every stage runs (tests deselected, the benchmark's smoke
    mode), and what it leaves under $OUT fits what a device call brings back (8 files at most)."""
    import os
    import subprocess

    script = BENCH.parents[1] / "scripts" / "gpu_check.sh"
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_WHEELS=str(tmp_path / "no-wheels"))
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["lit-tests", "bench", "flex-tests", "e2e-tests"]
    assert "bench: exit 0" in summary[1] and (out / "gpu.md").is_file()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
