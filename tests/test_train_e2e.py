"""End to end: the real ``decoderlab-train`` entry point with overrides, as a user runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def _train(tmp_path: Path, *overrides: str, name: str = "run") -> tuple[object, Path]:
    run_dir = tmp_path / name
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run_dir}", *overrides], cwd=tmp_path)
    return out, run_dir


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_writes_config_metrics_checkpoint_tokenizer_wandb_and_sample(tmp_path: Path, tiny_corpus: Path):
    out, run = _train(tmp_path, "data=text", f"data.paths=[{tiny_corpus}]", "sample.prompt=Line 3")
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("config.yaml", ".hydra/config.yaml", "metrics.csv", "tokenizer.json", "sample.txt",
                 "summary.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    rows = _metrics(run)
    cols = set(rows[0])
    assert {"train/loss", "lr", "train/tokens_per_s", "val/loss", "val/bpb", "step"} <= cols
    assert any(r["val/bpb"] for r in rows) and any(r["train/loss"] for r in rows)
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)  # plain values and tensors only
    assert ckpt["global_step"] == 6 and json.loads(ckpt["decoderlab"]["tokenizer"])["decoderlab_tokenizer"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens_seen"] == 6 * 4 * 16
    assert summary["params"]["total"] == summary["params"]["embedding"] + summary["params"]["non_embedding"]
    assert summary["choices"]["model/positional"] == "learned"
    sample = (run / "sample.txt").read_text()
    assert sample.startswith("Line 3") and len(sample) == len("Line 3") + 8
    for text in ("decoderlab run summary", "val bits/byte", "non-embedding", "tokens/s", str(run)):
        assert text in out.stdout
    wandb_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1  # wandb ran offline: no key, no prompt, no network
    records = next(wandb_runs[0].glob("run-*.wandb")).read_bytes()  # the offline run's record log
    for key in (b"choice/model/positional", b"params/non_embedding", b"model.n_layers", b"val/bpb"):
        assert key in records, key


def test_embedded_shakespeare_and_component_overrides(tmp_path: Path):
    out, run = _train(tmp_path, "logger=csv", "model/positional=rope", "model.positional.base=500000",
                      "model/norm=rmsnorm", "model/ffn=swiglu", "model/placement=post")
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = (run / "config.yaml").read_text()
    assert "base: 500000.0" in cfg and "name: swiglu" in cfg
    summary = json.loads((run / "summary.json").read_text())
    assert summary["choices"]["data"] == "shakespeare" and summary["val_bpb"] > 0
    assert (run / "sample.txt").read_text().startswith("ROMEO:")
    assert not (run / "wandb").exists()  # logger=csv leaves wandb out


def test_resume_from_checkpoint_continues_exactly(tmp_path: Path, tiny_corpus: Path):
    common = ["logger=csv", "data=text", f"data.paths=[{tiny_corpus}]", "trainer.ckpt_every_n_steps=3"]
    out, full = _train(tmp_path, *common, name="full")
    assert out.returncode == 0, out.stderr[-3000:]
    mid = full / "checkpoints" / "step000003.ckpt"
    assert mid.is_file(), sorted(p.name for p in (full / "checkpoints").iterdir())
    out, resumed = _train(tmp_path, *common, f"trainer.ckpt_path={mid}", name="resumed")
    assert out.returncode == 0, out.stderr[-3000:]
    a = torch.load(full / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)  # same batches, same RNG: bit-exact

    def losses(run: Path) -> dict:
        return {r["step"]: r["train/loss"] for r in _metrics(run) if r["train/loss"]}

    assert {s: v for s, v in losses(full).items() if int(s) >= 3} == losses(resumed)


ERRORS = [
    (["model/positional=ropee"], ["model/positional=ropee: unknown option of group model/positional; valid: alibi,",
                                  "rope", "sinusoidal", "t5"]),
    (["+model.n_layr=4"], ["unknown key 'model.n_layr'"]),
    (["model.n_layers=abc"], ["error: model.n_layers: Value 'abc' of type 'str' could not be converted to Integer"]),
    (["model.positional.base=3"], ["error: model.positional.base: unknown key (not in LearnedConfig); valid keys: "
                                   "model.positional.name, model.positional.max_positions"]),
    (["model.n_layer=3"], ["error: model.n_layer: unknown key (not in ModelSchema); did you mean model.n_layers?"]),
    (["model.n_layers=[1"], ["error: model.n_layers=[1: cannot parse it (no viable alternative at input '[1'"]),
]


@pytest.mark.parametrize("overrides,expected", ERRORS, ids=[e[0][0] for e in ERRORS])
def test_config_errors_are_clear_without_traceback(tmp_path: Path, overrides, expected):
    out, run = _train(tmp_path, "logger=csv", *overrides)
    text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert out.returncode != 0
    for e in expected:
        assert e in text, text
    assert "Traceback" not in text and "+model" not in text.replace("+model.n_layr", "")  # no advice to add it
    assert not (run / "summary.json").exists()


def test_corpus_errors_give_numbers_and_a_failed_status(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("tiny\n")
    for path, expected in [(empty, "empty.txt: empty shard: the file holds no text"),
                           (short, "fewer than one block of model.block_size+1 = 17")]:
        out, run = _train(tmp_path, "logger=csv", "data=text", f"data.paths=[{path}]", name=path.stem)
        text = out.stdout + out.stderr
        assert out.returncode == 1 and "Traceback" not in text
        assert expected.replace(" ", "") in "".join(text.split())  # rich folds a long path anywhere
        assert json.loads((run / "status.json").read_text())["status"] == "failed"
        assert not (run / "checkpoints").exists() and not (run / "summary.json").exists()


def test_help_lists_groups_and_components_lists_fields(tmp_path: Path):
    out = run_cli(["decoderlab-train", "--help"], cwd=tmp_path)
    assert out.returncode == 0
    for text in ("model/positional: ", "rope", "sinusoidal", "t5", "model/placement:", "post", "pre",
                 "model/norm:", "rmsnorm", "model/ffn:", "swiglu", "tokenizer:", "byte", "char",
                 "decoderlab-components"):
        assert text in out.stdout, text
    out = run_cli(["decoderlab-components"], cwd=tmp_path)
    assert out.returncode == 0
    flat = " ".join(out.stdout.split())
    for text in ("model/positional", "base=10000.0", "num_buckets=32", "max_distance=128", "model/ffn",
                 "activation='gelu'", "tokenizer", "unknown='error'", "dyt"):
        assert text in flat, text


def test_ddp_on_two_cpu_processes(tmp_path: Path, tiny_corpus: Path):
    """Lightning's DDP strategy (gloo on CPU): both ranks train, rank 0 alone writes the summary."""
    out, run = _train(tmp_path, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]",
                      "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tokens_seen"] == 2 * 6 * 4 * 16  # two ranks, each its own slice of the global batch
    assert out.stdout.count("decoderlab run summary") == 1
    from decoderlab.components.tokenizers import TOKENIZERS
    from decoderlab.data import CORPORA, prepare
    from decoderlab.data.module import ValWindows

    data = prepare(CORPORA.build({"name": "text", "paths": [str(tiny_corpus)]}), TOKENIZERS.build({"name": "char"}), 16)
    windows = ValWindows(data.val, 16, max_windows=8)
    expected = sum(int((windows[i][1] >= 0).sum()) for i in range(len(windows)))  # one-byte ASCII tokens
    val_bytes = {float(r["val/bytes"]) for r in _metrics(run) if r.get("val/bytes")}
    assert val_bytes == {float(expected)}  # windows split across ranks, each counted once
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


def test_bf16_mixed_precision_trains_with_gradient_clipping(tmp_path: Path, tiny_corpus: Path):
    """The fused AdamW default must not collide with Lightning's AMP gradient clipping."""
    out, run = _train(tmp_path, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]",
                      "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0",
                      "trainer.val_check_interval=100")  # past max_steps: validated once, at the end
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["val_loss"] > 0
    val_rows = [r for r in _metrics(run) if r["val/loss"]]
    assert len(val_rows) == 1 and val_rows[0]["step"] == "5"


def test_resume_with_another_model_is_a_clear_error(tmp_path: Path, tiny_corpus: Path):
    common = ["logger=csv", "data=text", f"data.paths=[{tiny_corpus}]"]
    out, first = _train(tmp_path, *common, name="first")
    assert out.returncode == 0, out.stderr[-3000:]
    out, run = _train(tmp_path, *common, "model.d_model=32", f"trainer.ckpt_path={first}/checkpoints/last.ckpt",
                      "trainer.max_steps=9", name="second")
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text
    assert "the checkpoint was trained with different model.d_model" in " ".join(text.split())


DIVERGE = ["logger=csv", "optim.lr=1e6", "trainer.gradient_clip_val=null", "trainer.ckpt_every_n_steps=1"]


def _all_checkpoints_finite(run: Path) -> None:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for c in ckpts:
        state = torch.load(c, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), c


def test_a_diverging_run_stops_failed_and_keeps_only_finite_checkpoints(tmp_path: Path, tiny_corpus: Path):
    out, run = _train(tmp_path, "data=text", f"data.paths=[{tiny_corpus}]", *DIVERGE)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text
    reason = " ".join(text.split())
    assert "training diverged: non-finite" in reason and "(trainer.on_nonfinite=stop)" in reason
    assert "last finite checkpoint:" in reason and "at step " in reason
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "at step" in status["error"]
    assert not (run / "summary.json").exists()
    _all_checkpoints_finite(run)


def test_skip_counts_skipped_updates_and_stops_after_n_in_a_row(tmp_path: Path, tiny_corpus: Path):
    out, run = _train(tmp_path, "data=text", f"data.paths=[{tiny_corpus}]", *DIVERGE, "trainer.on_nonfinite=skip",
                      "trainer.max_nonfinite_in_a_row=3", "trainer.max_steps=12")
    reason = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 1 and "3 non-finite updates in a row" in reason, reason[-2000:]
    skipped = [float(r["train/nonfinite_skipped"]) for r in _metrics(run) if r.get("train/nonfinite_skipped")]
    assert skipped and max(skipped) >= 1  # counted in the metrics as it went
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    _all_checkpoints_finite(run)


def test_intermediate_validations_score_a_sample_and_the_final_one_everything(tmp_path: Path, tiny_corpus: Path):
    out, run = _train(tmp_path, "logger=csv", "data=text", f"data.paths=[{tiny_corpus}]",
                      "trainer.val_sample_windows=3")
    assert out.returncode == 0, out.stderr[-3000:]
    val = [(int(r["step"]), float(r["val/windows"]), float(r["val/loss"])) for r in _metrics(run) if r["val/loss"]]
    assert [w for _, w, _ in val[:-1]] == [3.0] * (len(val) - 1) and len(val) >= 2  # steps 3 and 6: the sample
    assert val[-1][:2] == (6, 8.0)  # the final validation: all 8 windows (loader.val_max_windows=8)
    assert json.loads((run / "summary.json").read_text())["val_loss"] == pytest.approx(val[-1][2])


def test_the_sample_prompt_is_checked_before_training_never_after(tmp_path: Path):
    """A corpus whose records hold no newline: its own prompt (data.sample_prompt, a newline) cannot be encoded by
    the char tokenizer. The run warns at start-up and samples unprompted; a sample.prompt the user set that cannot
    be encoded is refused before any training (it used to fail the trained run at its very end)."""
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i} of a corpus with no newline in it"}) + "\n"
                            for i in range(300)), encoding="utf-8")
    out, run = _train(tmp_path, "data=text", f"data.paths=[{path}]", "logger=csv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data.sample_prompt='\\n' cannot be encoded" in " ".join((out.stdout + out.stderr).split())
    assert json.loads((run / "status.json").read_text())["status"] == "completed" and (run / "sample.txt").is_file()
    out, run = _train(tmp_path, "data=text", f"data.paths=[{path}]", "logger=csv", "sample.prompt=QQ", name="q")
    err = " ".join(out.stderr.split())
    assert out.returncode == 1 and "sample.prompt='QQ' cannot be encoded: character 'Q'" in err, err[-2000:]
    assert not (run / "checkpoints").exists()  # refused before training


def test_hydra_mode_multirun_without_dash_m_is_still_a_sweep(tmp_path: Path):
    """The up-front composition of a plain run leaves Hydra's other spelling of -m alone."""
    out = run_cli(["decoderlab-train", *TINY, "--plan", "hydra.mode=MULTIRUN", "seed=0,1"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "seed=0" in out.stdout and "seed=1" in out.stdout
