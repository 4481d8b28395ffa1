"""Exact resume through the real CLI: interrupted-and-resumed equals uninterrupted (CPU, fp32).

Every logged train loss within 1e-6 and bit-identical final weights, with dropout, resuming between validations
and at a validation, and with gradient accumulation. Why it used to differ: every DataLoader iterator drew its
seed from the global RNG, and a resumed run creates its iterators at other moments than the uninterrupted one;
dropout now draws from an RNG seeded per (seed, micro-step, rank) and the loaders have private generators.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, run_cli

COMMON = ["logger=csv", "data=text", "model.dropout=0.1", "trainer.ckpt_every_n_steps=1"]


def _train(tmp_path: Path, corpus: Path, name: str, *overrides: str) -> Path:
    run = tmp_path / name
    out = run_cli(["decoderlab-train", *TINY, *COMMON, f"data.paths=[{corpus}]", f"hydra.run.dir={run}",
                   *overrides], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def _losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]}


def _assert_same_run(full: Path, resumed: Path, from_step: int) -> None:
    a, b = _losses(full), _losses(resumed)
    expected = {s: v for s, v in a.items() if s >= from_step}
    assert sorted(b) == sorted(expected)
    for s in expected:
        assert abs(b[s] - expected[s]) <= 1e-6, (s, b[s], expected[s])
    wa = torch.load(full / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_resume_with_dropout_between_and_at_validations(tmp_path: Path, tiny_corpus: Path):
    full = _train(tmp_path, tiny_corpus, "full")  # 6 steps, validations at steps 3 and 6
    for step in (2, 3):  # between validations; at one (the checkpoint is written before step 3's validation)
        ckpt = full / "checkpoints" / f"step{step:06d}.ckpt"
        resumed = _train(tmp_path, tiny_corpus, f"from{step}", f"trainer.ckpt_path={ckpt}")
        _assert_same_run(full, resumed, step)


@pytest.mark.slow
def test_resume_with_gradient_accumulation(tmp_path: Path, tiny_corpus: Path):
    acc = ["trainer.accumulate_grad_batches=2"]
    full = _train(tmp_path, tiny_corpus, "full", *acc)
    resumed = _train(tmp_path, tiny_corpus, "from4", *acc, f"trainer.ckpt_path={full}/checkpoints/step000004.ckpt")
    _assert_same_run(full, resumed, 4)


def test_loader_iterators_leave_the_global_rng_alone(tiny_corpus: Path):
    """A resumed run creates its iterators at other moments: they must not draw from the global RNG."""
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.data import CORPORA, prepare
    from decoderlab.data.module import DecoderDataModule

    data = prepare(CORPORA.build({"name": "text", "paths": [str(tiny_corpus)]}), TOKENIZERS.build({"name": "char"}), 16)
    dm = DecoderDataModule(data, 16, 4, 8, seed=0)
    state = torch.get_rng_state()
    next(iter(dm.train_dataloader()))
    next(iter(dm.val_dataloader()))
    assert torch.equal(torch.get_rng_state(), state)


def test_dropout_masks_are_a_function_of_the_step():
    from decoderlab.lit import seed_step

    def mask(step: int) -> np.ndarray:
        seed_step(torch.device("cpu"), 1337, step, 0)
        return torch.nn.functional.dropout(torch.ones(64), 0.5).numpy()

    first = mask(5)
    torch.rand(10)  # anything else drawing from the RNG in between changes nothing
    assert np.array_equal(mask(5), first) and not np.array_equal(mask(6), first)


def test_a_resumed_run_rewrites_last_ckpt_never_a_versioned_copy(tmp_path: Path, tiny_corpus: Path):
    """Lightning's ModelCheckpoint writes ``last-v1.ckpt`` beside a ``last.ckpt`` it did not write itself (a run
    directory moved elsewhere, or a ``last.ckpt`` a signal wrote); generate, eval, load and resume read last.ckpt."""
    import shutil

    run = _train(tmp_path, tiny_corpus, "a", "trainer.max_steps=4", "trainer.val_check_interval=2")
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    out = run_cli(["decoderlab-train", "--resume", str(moved), "trainer.max_steps=6"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in (moved / "checkpoints").glob("last*")) == ["last.ckpt"]
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_checkpoint_past_max_steps_is_refused_not_reported_as_a_run(tmp_path: Path, tiny_corpus: Path):
    run = _train(tmp_path, tiny_corpus, "a", "trainer.max_steps=4", "trainer.val_check_interval=2")
    out = run_cli(["decoderlab-train", *TINY, *COMMON, f"data.paths=[{tiny_corpus}]", f"hydra.run.dir={tmp_path}/b",
                   f"trainer.ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_steps=3"], cwd=tmp_path)
    err = " ".join(out.stderr.split())
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"trainer.ckpt_path={run}/checkpoints/last.ckpt holds step 4, past trainer.max_steps=3: nothing to " \
           "train; give trainer.max_steps > 4" in err
    assert not (tmp_path / "b" / "summary.json").exists()
    out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=3"], cwd=tmp_path)
    assert out.returncode == 1 and "the run is at step 4, past trainer.max_steps=3" in " ".join(out.stderr.split())


def test_a_completed_run_resumed_with_no_step_left_is_refused_and_keeps_its_summary(tmp_path: Path, tiny_corpus: Path):
    """A resume at trainer.max_steps trained nothing and rewrote summary.json with no training figures."""
    run = _train(tmp_path, tiny_corpus, "a", "trainer.max_steps=4", "trainer.val_check_interval=2")
    before = {n: (run / n).read_bytes() for n in ("summary.json", "status.json", "metrics.csv")}
    out = run_cli(["decoderlab-train", "--resume", str(run)], cwd=tmp_path)
    assert out.returncode == 1 and "the run is at step 4, at trainer.max_steps=4: nothing to train; give " \
                                   "trainer.max_steps > 4" in " ".join(out.stderr.split()), out.stderr[-2000:]
    assert {n: (run / n).read_bytes() for n in before} == before
    out = run_cli(["decoderlab-train", *TINY, *COMMON, f"data.paths=[{tiny_corpus}]", f"hydra.run.dir={tmp_path}/b",
                   f"trainer.ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_steps=4"], cwd=tmp_path)
    assert out.returncode == 1 and "holds step 4, at trainer.max_steps=4: nothing to train" in " ".join(
        out.stderr.split())
