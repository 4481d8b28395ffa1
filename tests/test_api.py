"""The Python API: ``decoderlab.compose`` / ``train`` / ``load`` on a tiny model, and plugin records in checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tests.conftest import REPO, TINY, compose_train

import decoderlab
from decoderlab.errors import ConfigError, UserError

SRC = str(REPO / "src")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> decoderlab.Run:
    """One tiny run with a plugin component (``model/norm=dyt`` from plugins/dyt.py), trained through the API."""
    d = tmp_path_factory.mktemp("api")
    corpus = d / "c.txt"
    corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7}.\n" for i in range(400)))
    return decoderlab.train([*TINY, "data=text", f"data.paths=[{corpus}]", "logger=csv", "model/norm=dyt"],
                            run_dir=d / "run")


def test_import_decoderlab_stays_light() -> None:
    code = "import decoderlab, sys; print(sorted(m for m in ('torch', 'hydra', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ,
                         PYTHONPATH=SRC), check=True).stdout
    assert out.strip() == "[]"


def test_compose_is_the_cli_composition() -> None:
    overrides = ["model/positional=rope", "model.positional.base=500", "trainer.max_steps=7"]
    cfg = decoderlab.compose(overrides)
    assert "hydra" not in cfg
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(compose_train(overrides))
    assert cfg.model.positional.name == "rope" and cfg.model.positional.base == 500


def test_train_rejects_an_unknown_key_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.nonsense"):
        decoderlab.train(decoderlab.compose(["+model.nonsense=1"]), run_dir=tmp_path / "bad")
    assert '"failed"' in (tmp_path / "bad" / "status.json").read_text()


def test_train_returns_the_run(trained: decoderlab.Run) -> None:
    assert isinstance(trained.model, torch.nn.Module) and not trained.model.training
    assert trained.metrics["steps"] == 6 and trained.val_loss == trained.metrics["val_loss"] > 0
    assert trained.metrics["choices"]["model/norm"] == "dyt"  # slot choices as under decoderlab-train
    assert (trained.run_dir / "checkpoints" / "last.ckpt").is_file()
    ids = trained.tokenizer.encode("the fox")
    assert trained.tokenizer.decode(ids) == "the fox"


def test_load_gives_the_trained_weights(trained: decoderlab.Run) -> None:
    model, tok = decoderlab.load(trained.run_dir)
    x = torch.as_tensor(tok.encode("the quick"))[None]
    with torch.no_grad():
        assert torch.equal(model(x), trained.model(x))


def test_checkpoint_records_the_plugin_that_provided_a_component(trained: decoderlab.Run) -> None:
    record = torch.load(trained.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["decoderlab"]
    assert record["plugins"] == {"model/norm": {"name": "dyt", "module": "decoderlab_plugin_dyt"}}


def _load_in_fresh_process(run_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"import decoderlab; m, t = decoderlab.load({str(run_dir)!r}); print(type(m.blocks[0]).__name__)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=run_dir,
                          env=dict(os.environ, PYTHONPATH=SRC, DECODERLAB_NO_PLUGINS="1", **env))


@pytest.mark.slow
def test_load_imports_the_recorded_plugin_with_autoloading_off(trained: decoderlab.Run) -> None:
    res = _load_in_fresh_process(trained.run_dir, {"DECODERLAB_PLUGIN_PATH": str(REPO / "plugins")})
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_load_names_the_missing_plugin(trained: decoderlab.Run, tmp_path: Path) -> None:
    res = _load_in_fresh_process(trained.run_dir, {"DECODERLAB_PLUGIN_PATH": str(tmp_path)})
    assert res.returncode != 0
    assert "decoderlab_plugin_dyt" in res.stderr and "model/norm=dyt" in res.stderr


def test_missing_plugin_is_a_user_error(trained: decoderlab.Run) -> None:
    from decoderlab.checkpoint import require_plugins

    record = {"plugins": {"model/norm": {"name": "no_such_norm", "module": "decoderlab_plugin_no_such"}}}
    with pytest.raises(UserError, match="decoderlab_plugin_no_such.*model/norm=no_such_norm"):
        require_plugins(record, "x.ckpt")


def test_experiment_is_a_group_with_or_without_plus() -> None:
    plain = decoderlab.compose(["experiment=pe_ablation"])
    plus = decoderlab.compose(["+experiment=pe_ablation"])  # the older spelling keeps working
    assert OmegaConf.to_container(plain) == OmegaConf.to_container(plus)
    assert plain.trainer.max_steps == 300 and plain.param_budget == 800000  # the preset's values, not the defaults


@pytest.mark.slow
def test_help_lists_plan_resume_and_completion() -> None:
    out = subprocess.run([sys.executable, "-m", "decoderlab.train", "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=SRC), check=True).stdout
    assert "--plan" in out and "--resume RUN_DIR" in out and "-sc install=bash" in out
    assert "experiment: " in out and "pe_ablation" in out


@pytest.mark.cuda
@pytest.mark.parametrize("pe", ["learned", "t5"])
def test_the_gpu_recipe_trains_end_to_end(tmp_path: Path, pe: str) -> None:
    """On a GPU: bf16-mixed, fused AdamW with clipping, the compiled step and (t5) FlexAttention train a run to
    completion (then Lightning's teardown moves the model to the CPU, where the sample is drawn), and its
    checkpoint gives the CPU the GPU model's logits."""
    import json
    import math

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7}.\n" for i in range(400)))
    run = decoderlab.train([*TINY, "data=text", f"data.paths=[{corpus}]", "logger=csv", f"model/positional={pe}",
                            "model.d_model=32",  # head_dim 16: the least FlexAttention's GPU kernel takes
                            "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "trainer.compile=true",
                            "trainer.gradient_clip_val=1.0"], run_dir=tmp_path / "run")
    assert json.loads((run.run_dir / "status.json").read_text())["status"] == "completed"
    assert run.metrics["steps"] == 6 and math.isfinite(run.val_loss)
    assert (run.run_dir / "sample.txt").read_text(encoding="utf-8")
    cpu_model, tokenizer = decoderlab.load(run.run_dir)
    ids = torch.tensor([tokenizer.encode("the quick brown")])
    with torch.no_grad():
        want = cpu_model(ids)
        got = cpu_model.to("cuda")(ids.cuda()).cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_train_claims_its_directory_as_the_command_line_does(trained: decoderlab.Run, tmp_path: Path) -> None:
    import re

    from decoderlab.api import default_run_dir

    run = trained.run_dir
    assert (run / "train.log").is_file() and "model:" in (run / "train.log").read_text() and (run / ".lock").exists()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=f"run directory {re.escape(str(run))} already holds a completed run"):
        decoderlab.train([*TINY, "model.d_model=32"], run_dir=run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    a, b = default_run_dir(), default_run_dir()  # the command line's naming, fresh for each run of a process
    assert a != b and re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{3}-[0-9a-f]{6}", a.as_posix())


def test_an_api_run_resumes_with_the_command_line(trained: decoderlab.Run, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"  # a copy: the module's run stays at step 6 for the other tests, whatever their order
    shutil.copytree(trained.run_dir, run, ignore=shutil.ignore_patterns(".lock"))
    exe = str(Path(sys.executable).parent / "decoderlab-train")
    out = subprocess.run([exe, "--resume", str(run), "trainer.max_steps=8"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=SRC), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 8
