"""benchmarks/bench_generate.py runs end to end and writes its figures (with the cheap ``eager`` dynamo backend)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generate.py"


def test_the_sampling_benchmark_writes_its_row(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tokens", "6", "--backend", "eager", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "generate.json").read_text())
    assert row["tokens"] == 6 and row["eager_s"] > 0 and row["compiled_again_s"] > 0
    assert 2 <= row["graphs"] <= 3  # prefill, then decode steps: reused, never one graph per token
    assert "| 6 |" in (tmp_path / "generate.md").read_text()
