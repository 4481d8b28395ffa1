"""Tokenizer-fair metrics and length extrapolation: bits-per-byte is summed cross-entropy in bits over the UTF-8
bytes of the held-out text, whatever the tokenizer; ``decoderlab-eval`` scores runs at several lengths and says
"n/a" where an encoding cannot run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import TINY, run_cli
from decoderlab.checkpoint import bound_tokenizer, read_checkpoint, write_checkpoint
from decoderlab.components.tokenizers import TOKENIZERS, load_tokenizer
from decoderlab.data import CORPORA, prepare
from decoderlab.data.cache import split_document
from decoderlab.evaluate import evaluate_runs, score_length, write_outputs
from decoderlab.model import Decoder, ModelConfig

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(50)) + \
    "".join(f"第{i}回 话说天下大势，分久必合，合久必分。\n" for i in range(30))
TOKENIZER_CFGS = {"char": {}, "byte": {}, "bpe": {"vocab_size": 300}}


def text_data(tmp_path: Path, tokenizer: str, block_size: int = 8):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "c.txt").write_text(TEXT, encoding="utf-8")
    cfg = {"name": "text", "paths": [str(tmp_path / "c.txt")], "cache_dir": str(tmp_path / "cache")}
    tok = TOKENIZERS.build({"name": tokenizer, **TOKENIZER_CFGS[tokenizer]})
    return cfg, prepare(CORPORA.build(cfg), tok, block_size)


HELD_OUT_BYTES = len(split_document(TEXT, 0.1)[1].encode("utf-8"))


def tiny_model(vocab_size: int, block_size: int, positional: str = "learned") -> Decoder:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, block_size=block_size, positional={"name": positional})
    return Decoder(cfg, vocab_size).eval()


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
@pytest.mark.parametrize("tokenizer", list(TOKENIZER_CFGS))
def test_val_bpb_is_summed_cross_entropy_bits_over_held_out_bytes(tokenizer, tmp_path):
    import lightning as L

    from decoderlab.config import OptimConfig
    from decoderlab.data.module import DecoderDataModule
    from decoderlab.lit import LitDecoder

    _, data = text_data(tmp_path, tokenizer)
    T = data.meta["n_val"]  # one validation window holds every held-out target: easy to compute by hand
    model = tiny_model(data.tokenizer.vocab_size, T)
    lit = LitDecoder(model, OptimConfig(), data.tokenizer.token_bytes(), max_steps=1)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    metrics = trainer.validate(lit, datamodule=DecoderDataModule(data, T, 4, 8, seed=0), verbose=False)[0]

    ids = torch.as_tensor(np.asarray(data.val, dtype=np.int64))  # (1 + T,): a context token, then the targets
    with torch.no_grad():
        logp = model(ids[None, :-1])[0].log_softmax(-1)  # (T, V)
    bits = -logp[torch.arange(T), ids[1:]].sum().item() / math.log(2)
    assert metrics["val/bytes"] == HELD_OUT_BYTES  # the same byte count for every tokenizer
    assert metrics["val/bpb"] == pytest.approx(bits / HELD_OUT_BYTES, rel=1e-5)
    for length in (T, T // 3 + 1):  # decoderlab-eval scores the same targets and bytes at any length
        nats, tokens, nbytes = score_length(model, np.asarray(data.val), data.tokenizer.token_bytes(), length)
        assert (tokens, nbytes) == (T, HELD_OUT_BYTES)
    assert nats > 0


def test_tokenizers_differ_in_tokens_not_in_bytes(tmp_path):
    counts = {}
    for name in TOKENIZER_CFGS:
        _, data = text_data(tmp_path / name, name)
        tb = data.tokenizer.token_bytes()
        assert data.meta["val_bytes"] == HELD_OUT_BYTES == int(tb[np.asarray(data.val[1:])].sum())
        counts[name] = data.meta["n_val"]
    assert counts["byte"] == HELD_OUT_BYTES and len(set(counts.values())) == 3  # different token counts


def fake_sweep(tmp_path: Path, positionals: list[str]) -> Path:
    """Run directories as decoderlab-train leaves them (config.yaml, last.ckpt bound to the cached tokenizer,
    status.json completed, summary.json)."""
    data_cfg, data = text_data(tmp_path, "char")
    for i, pe in enumerate(positionals):
        run = tmp_path / "sweep" / str(i)
        model = tiny_model(data.tokenizer.vocab_size, 8, pe)
        write_checkpoint(run / "checkpoints" / "last.ckpt", model, data.tokenizer)
        cfg = {"model": {"block_size": 8, "positional": {"name": pe}}, "data": data_cfg, "tokenizer": {"name": "char"},
               "trainer": {"max_steps": 3000}}
        OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
        (run / "status.json").write_text(json.dumps({"status": "completed"}))
        (run / "summary.json").write_text(json.dumps({"val_loss": 3.0, "val_bpb": 4.0}))
    return tmp_path / "sweep"


def test_eval_scores_every_length_and_marks_what_cannot_run(tmp_path):
    sweep = fake_sweep(tmp_path, ["learned", "rope"])
    rows = evaluate_runs([str(sweep)], [1, 2, 4])
    assert [(r.label, r.length) for r in rows] == [(f"positional={pe}", n) for pe in ("learned", "rope")
                                                   for n in (8, 16, 32)]
    learned, rope = rows[:3], rows[3:]
    assert learned[0].bpb is not None and learned[0].note == ""
    assert all(r.loss is None and r.note.startswith("n/a") and "8 positions" in r.note for r in learned[1:])
    assert all(r.loss is not None and r.bytes == HELD_OUT_BYTES for r in rope)
    assert len({r.tokens for r in rope}) == 1  # every length scores the same targets
    files = write_outputs(rows, tmp_path / "out")
    table = list(csv.DictReader(open(files[0], encoding="utf-8")))
    assert [r["length"] for r in table] == ["8", "16", "32"] * 2 and table[1]["bpb"] == ""
    assert "n/a" in files[1].read_text() and files[2].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_trained_bpe_run_is_bound_to_its_tokenizer_and_evaluates(tmp_path, tiny_corpus):
    run = tmp_path / "run"
    args = ["decoderlab-train", *TINY, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]", "tokenizer=bpe",
            "tokenizer.vocab_size=300", "model/positional=rope", "loader.val_max_windows=null", f"hydra.run.dir={run}"]
    res = run_cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    from tokenizers import Tokenizer as HFTok

    ckpt_tok = bound_tokenizer(read_checkpoint(run / "checkpoints" / "last.ckpt"), "ckpt")
    assert ckpt_tok.fingerprint() == load_tokenizer(run).fingerprint()  # the record beside the HF file
    hf = HFTok.from_file(str(run / "tokenizer.json"))  # a plain Hugging Face tokenizer.json
    assert hf.encode("the lazy dog").ids == ckpt_tok.encode("the lazy dog").tolist()

    res = run_cli(["decoderlab-eval", str(run), "--lengths", "1,2", "--threads", "1"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(run / "eval" / "extrapolation.csv", encoding="utf-8")))
    assert [r["length"] for r in rows] == ["16", "32"] and all(r["bpb"] for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert float(rows[0]["bpb"]) == pytest.approx(summary["val_bpb"], abs=1e-4)  # 1x is the run's own val/bpb
    assert (run / "eval" / "extrapolation.png").is_file() and (run / "eval" / "extrapolation.md").is_file()


def test_sweep_search_lists_every_run_but_set_aside_attempts(tmp_path: Path):
    from decoderlab.evaluate import find_runs

    def run(rel: str, status: str | None) -> Path:
        d = tmp_path / rel
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / "last.ckpt").write_bytes(b"")
        (d / "config.yaml").write_text("seed: 0\n")
        if status:
            (d / "status.json").write_text(json.dumps({"status": status}))
        return d

    dirs = [run("0", "completed"), run("1", "failed"), run("2", None), run("3", "interrupted")]
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "status.json").write_text('{"status": "failed", "error": "boom"}')  # failed: no checkpoint
    run(".attempts/0-1", "completed")
    assert [r.dir for r in find_runs([str(tmp_path)])] == [*dirs, tmp_path / "4"]  # listed, only "0" scored


def _notes(rows) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(Path(r.run).name, []).append(r.note)
    return out


def test_unfinished_runs_are_listed_never_scored(tmp_path):
    """An interrupted run (it has last.ckpt), a live one and one without status.json: rows saying so, no figure,
    as decoderlab-compare lists them (one rule: decoderlab.outcome)."""
    from decoderlab import rundir

    sweep = fake_sweep(tmp_path, ["rope", "rope", "rope", "rope"])
    (sweep / "1" / "status.json").write_text(json.dumps({"status": "interrupted", "signal": "SIGTERM", "step": 76}))
    (sweep / "1" / "summary.json").unlink()
    (sweep / "2" / "status.json").write_text(json.dumps({"status": "running"}))
    (sweep / "3" / "status.json").unlink()
    held = rundir.lock(sweep / "2")
    try:
        rows = evaluate_runs([str(sweep)], [1, 2])
        alone = evaluate_runs([str(sweep / "1")], [1, 2])  # named directly
    finally:
        held.release()
    notes = _notes(rows)
    assert notes["0"] == ["", ""]
    assert notes["1"] == ["not scored: interrupted by SIGTERM at step 76 of 3000"] * 2
    assert notes["2"] == ["not scored: still running (a live process holds its run directory)"] * 2
    assert notes["3"] == ["not scored: no readable status.json (outcome unknown)"] * 2
    assert all(r.loss is None and r.bpb is None for r in rows if Path(r.run).name != "0")
    assert [(r.length, r.loss, r.note) for r in alone] == [(8, None, notes["1"][0]), (16, None, notes["1"][0])]


def test_failed_runs_without_a_checkpoint_and_invalid_points_are_listed_as_failed(tmp_path, capsys):
    from decoderlab.evaluate import main

    sweep = fake_sweep(tmp_path, ["rope", "alibi"])
    errp = sweep / "2"
    errp.mkdir()  # failed before its first checkpoint (and before writing config.yaml)
    (errp / "status.json").write_text(json.dumps({"status": "failed", "error": "DataError: corpus is empty"}))
    (errp / ".hydra").mkdir()
    (errp / ".hydra" / "overrides.yaml").write_text("- model/positional=t5\n")
    jobs = [{"num": 3, "dir": str(sweep / "3"), "status": "failed", "overrides": ["model/positional=learned"],
             "reason": "invalid configuration: Could not override 'model.positional.base'"}]
    (sweep / "sweep_summary.json").write_text(json.dumps({"jobs": jobs}))
    rows = evaluate_runs([str(sweep)], [1, 2])
    notes = _notes(rows)
    assert notes["0"] == notes["1"] == ["", ""]
    assert notes["2"] == ["failed: DataError: corpus is empty"]  # no config: one row, no length
    assert notes["3"] == ["failed: invalid configuration: Could not override 'model.positional.base'"]
    assert {r.label for r in rows if Path(r.run).name in "23"} == {"model/positional=t5", "model/positional=learned"}
    files = write_outputs(rows, tmp_path / "out")
    table = list(csv.DictReader(open(files[0], encoding="utf-8")))
    assert [(t["length"], t["multiple"], t["bpb"]) for t in table[4:]] == [("", "", "")] * 2
    assert "| – | – | – | – | failed: DataError" in files[1].read_text()

    main([str(errp), "--out", str(tmp_path / "direct")])  # named directly: reported, not a stop
    assert "failed: DataError: corpus is empty" in (tmp_path / "direct" / "extrapolation.md").read_text()
    assert "holds no finished run" not in capsys.readouterr().err


@pytest.mark.parametrize("status,summary,reason", [
    ("completed", {"val_loss": math.nan, "val_bpb": math.nan}, "val_loss is nan"),
    ("failed", {}, "non-finite loss at step 4"),
])
def test_a_failed_or_diverged_run_is_listed_as_failed_and_never_scored(tmp_path, status, summary, reason):
    sweep = fake_sweep(tmp_path, ["rope", "alibi"])
    bad = sweep / "1"
    (bad / "status.json").write_text(json.dumps({"status": status, "error": "non-finite loss at step 4"}))
    (bad / "summary.json").write_text(json.dumps(summary))  # NaN as decoderlab writes it
    rows = evaluate_runs([str(sweep)], [1, 2])
    good, failed = rows[:2], rows[2:]
    assert all(r.bpb is not None and r.note == "" for r in good)
    assert [r.length for r in failed] == [8, 16]
    assert all(r.loss is None and r.bpb is None and r.note.startswith(f"failed: {reason}") for r in failed), failed
    files = write_outputs(rows, tmp_path / "out")
    table = list(csv.DictReader(open(files[0], encoding="utf-8")))
    assert [r["bpb"] for r in table[2:]] == ["", ""] and table[2]["note"].startswith("failed")


def test_a_model_with_a_non_finite_loss_is_failed_not_scored(tmp_path):
    from decoderlab.evaluate import Row, evaluate_model

    _, data = text_data(tmp_path, "char")
    model = tiny_model(data.tokenizer.vocab_size, 8)
    with torch.no_grad():
        model.tok_emb.weight[0, 0] = math.nan
    base = Row(run="r", label="r", positional="learned", block_size=8, length=8)
    [row] = evaluate_model(model, np.asarray(data.val), data.tokenizer.token_bytes(), [8], base)
    assert row.loss is None and row.bpb is None and row.note == "failed: non-finite loss"
