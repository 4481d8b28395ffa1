"""The plan: parameters, FLOPs per token and memory of every sweep point, printed without training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli
from decoderlab.model import Decoder
from decoderlab.plan import estimate
from decoderlab.sizing import build_model_config

SMALL = ["model.n_layers=2", "model.n_heads=2", "model.d_model=64", "model.block_size=32", "loader.batch_size=2"]
VOCAB = 65


def test_flops_and_weight_memory_follow_the_stated_formulas(compose):
    cfg = compose([*SMALL, "model/ffn=swiglu", "trainer.max_steps=10", "trainer.accumulate_grad_batches=3"])
    model = Decoder(build_model_config(cfg, VOCAB), VOCAB)
    counts = model.param_counts()
    e = estimate(cfg, VOCAB)
    d, L, T = 64, 2, 32
    assert (e.total, e.embedding, e.non_embedding) == (counts["total"], counts["embedding"], counts["non_embedding"])
    assert e.flops_per_token == 6 * (counts["non_embedding"] + d * VOCAB) + 12 * L * d * T
    assert e.run_flops == e.flops_per_token * 2 * T * 3 * 10  # B * T * accumulate * steps tokens
    assert e.weights_bytes == 16 * counts["total"]  # fp32 weights, grads, AdamW m and v
    assert e.ffn_hidden == model.blocks[0].ffn.proj.in_features


def saved_activation_bytes(model: Decoder, batch: int, T: int) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward (weights left out)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    idx = torch.randint(0, VOCAB, (batch, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.loss(idx, idx)
    return sum(kept.values())


@pytest.mark.parametrize("variant", [["model/ffn=mlp", "model/positional=learned", "model/norm=layernorm"],
                                     ["model/ffn=swiglu", "model/positional=rope", "model/norm=rmsnorm"],
                                     ["model/ffn=mlp", "model/positional=t5", "model/placement=post"]])
def test_activation_estimate_is_within_25_percent_of_what_autograd_saves(variant, compose):
    cfg = compose([*SMALL, *variant])
    model = Decoder(build_model_config(cfg, VOCAB), VOCAB)
    measured = saved_activation_bytes(model, batch=2, T=32)
    est = estimate(cfg, VOCAB).activation_bytes
    assert 0.75 * measured <= est <= 1.25 * measured, (est, measured)


def _rows(out: str) -> dict[str, list[str]]:
    """Plan table rows by sweep point number: the cells between the box-drawing bars."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 10 and cells[1].isdigit():
            rows[cells[1]] = cells[2:-1]
    return rows


@pytest.mark.slow
def test_plan_prints_every_sweep_point_without_training(tmp_path: Path, tiny_corpus: Path):
    budget = 4000
    sweep = tmp_path / "sweep"
    r = run_cli(["decoderlab-train", "--plan", "-m", *TINY, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]",
                 "model/ffn=mlp,swiglu", "model.n_heads=2,3", f"param_budget={budget}",
                 f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # two of the four points are invalid (16 is not divisible by 3 heads)
    assert "decoderlab plan: 4 run(s), nothing trained" in out and "FLOPs/token = 6*(N + d*V)" in out
    rows = _rows(r.stdout)
    assert sorted(rows) == ["0", "1", "2", "3"], out
    valid = {rows[k][0]: rows[k] for k in rows if "n_heads=2" in rows[k][0]}
    assert len(valid) == 2
    for label, cells in valid.items():
        non_emb = int(cells[3].replace(",", ""))
        assert abs(non_emb - budget) <= 0.01 * budget, (label, cells)
        assert "iB (" in cells[7] and cells[5].endswith("K")  # memory (activations), FLOPs per token
    hidden = {("swiglu" if "swiglu" in label else "mlp"): int(cells[4]) for label, cells in valid.items()}
    assert hidden["swiglu"] < hidden["mlp"]
    invalid = [rows[k] for k in rows if "n_heads=3" in rows[k][0]]
    assert len(invalid) == 2 and all(c[-1] == "invalid" for c in invalid)
    assert "model.d_model=16 must be divisible by model.n_heads=3" in r.stdout  # the reason, below the table
    assert not any(sweep.glob("*/metrics.csv")) and not (sweep / "0").exists()  # nothing trained, no job dirs

    single = run_cli(["decoderlab-train", "--plan", *TINY, "data=text", f"data.paths=[{tiny_corpus}]"], cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    assert "decoderlab plan: 1 run(s)" in single.stdout and not (tmp_path / "outputs").exists()
