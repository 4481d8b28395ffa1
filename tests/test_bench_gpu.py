"""benchmarks/bench_gpu.py runs end to end: without a GPU its smoke mode trains a tiny model both ways on the CPU."""

from __future__ import annotations

import importlib.util
import json
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
    assert bench.main(["--smoke", "--steps", "3", "--models", "default", "alibi", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["shape"], r["mode"], r["model"]) for r in result["rows"]] == [
        ("smoke", "eager", "default"), ("smoke", "eager", "alibi")]
    for r in result["rows"]:
        for key in ("ms_hand", "ms_decoderlab", "tokens_per_s_decoderlab", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["mfu_hand"] is None  # no device peak on a CPU: no invented MFU
    assert "| smoke | eager | alibi |" in (tmp_path / "gpu.md").read_text()


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
