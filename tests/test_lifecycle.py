"""A run's life through the real CLI: one directory per run (a lock), --resume in place, preemption by a signal."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow
EXE = str(Path(sys.executable).parent / "decoderlab-train")


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _train_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]]


def _err(out: object) -> str:
    return " ".join(out.stderr.split())  # rich wraps long lines


def _wandb_ids(run: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")}


def test_resume_continues_in_place_with_every_step_once_and_the_same_wandb_run(tmp_path: Path):
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    config = (run / "config.yaml").read_text()
    out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=9"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _train_steps(run) == list(range(9))  # kept rows 0..5, appended 6..8: each step once
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 9
    assert len(_wandb_ids(run)) == 1  # two offline segments of one wandb run
    assert (run / "config.yaml").read_text() == config.replace("max_steps: 6", "max_steps: 9")
    assert _status(run)["status"] == "completed"
    assert (run / "train.log").read_text().count("model:") == 2  # train.log appended


def test_resume_refuses_changes_that_alter_training(tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli(["decoderlab-train", *TINY, f"hydra.run.dir={run}", "logger=csv"], cwd=tmp_path).returncode == 0
    out = run_cli(["decoderlab-train", "--resume", str(run), "optim.lr=0.1", "seed=3"], cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in _err(out)
    assert "cannot change optim.lr, seed" in _err(out)
    # The recorded config differs from today's composition (here: edited by hand): named key by key.
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("batch_size: 4", "batch_size: 5"))
    out = run_cli(["decoderlab-train", "--resume", str(run)], cwd=tmp_path)
    assert out.returncode == 1 and "loader.batch_size: 5 -> 4" in _err(out), out.stderr[-2000:]
    out = run_cli(["decoderlab-train", "--resume", str(tmp_path / "nothing")], cwd=tmp_path)
    assert out.returncode == 1 and "not a run directory" in _err(out)


def test_a_finished_run_directory_is_refused_unless_resumed(tmp_path: Path):
    run = tmp_path / "run"
    args = ["decoderlab-train", *TINY, "logger=csv", f"hydra.run.dir={run}"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    before = (run / "status.json").read_text()
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 1 and "already holds a completed run" in _err(out) and "--resume" in _err(out)
    assert (run / "status.json").read_text() == before  # the finished run's record is untouched


def test_two_concurrent_runs_in_one_directory_one_runs_the_other_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    args = [EXE, *TINY, "logger=csv", f"hydra.run.dir={run}", "trainer.max_steps=30"]
    env = dict(os.environ)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    err = " ".join(next(e for p, (_, e) in zip(procs, outs, strict=True) if p.returncode == 1).split())
    assert "in use by another live run" in err or "already holds a completed run" in err
    assert _status(run)["status"] == "completed" and _train_steps(run) == list(range(30))


def test_default_run_directories_of_runs_started_together_differ(tmp_path: Path):
    args = ["decoderlab-train", *TINY, "logger=csv", "--cfg", "hydra", "-p", "hydra.run.dir"]
    dirs = {run_cli(args, cwd=tmp_path).stdout.strip() for _ in range(2)}
    assert len(dirs) == 2 and all(d.startswith("outputs/") for d in dirs), dirs


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_signal_saves_the_current_step_and_resume_loses_none(tmp_path: Path, sig: int, code: int):
    run = tmp_path / "run"
    args = [EXE, *TINY, "logger=csv", f"hydra.run.dir={run}", "trainer.max_steps=100000",
            "trainer.ckpt_every_n_steps=20", "trainer.val_check_interval=50"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 200
    while not (run / "checkpoints" / "step000020.ckpt").exists():  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    status = _status(run)
    step = status["step"]
    assert status["status"] == "interrupted" and status["signal"] == signal.Signals(sig).name and step >= 20
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step
    assert _train_steps(run) == list(range(step))  # every trained step is logged, once
    out = run_cli(["decoderlab-train", "--resume", str(run), f"trainer.max_steps={step + 3}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _train_steps(run) == list(range(step + 3)) and _status(run)["status"] == "completed"


def test_signal_catcher_stops_at_once_or_defers_and_passes_the_signal_on():
    from decoderlab.preempt import Preempted, SignalCatcher

    seen = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))  # e.g. submitit's requeue handler
    try:
        catcher = SignalCatcher().install()
        with pytest.raises(Preempted) as stop:  # start-up: at once
            os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.value.exit_code == 138 and seen == []
        catcher.signum, catcher.deferring = None, True  # training: recorded, the loop stops at the step boundary
        os.kill(os.getpid(), signal.SIGTERM)
        assert catcher.signum == signal.SIGTERM
        catcher.forward(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
        catcher.restore()
        assert signal.getsignal(signal.SIGTERM) is not catcher._handle
    finally:
        signal.signal(signal.SIGUSR1, old)


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_refused_run_leaves_the_directory_as_it_was_and_its_resume_works(tmp_path: Path):
    from decoderlab import rundir

    run = tmp_path / "run"
    assert run_cli(["decoderlab-train", *TINY, "logger=csv", f"hydra.run.dir={run}"], cwd=tmp_path).returncode == 0
    before = _files(run)
    out = run_cli(["decoderlab-train", *TINY, "logger=csv", "model.d_model=32", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert out.returncode == 1 and "already holds a completed run" in _err(out) and "Traceback" not in _err(out)
    assert _files(run) == before  # .hydra/ and train.log included: Hydra wrote nothing
    held = rundir.lock(run)  # a live run (this process) holds the directory
    try:
        out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=8"], cwd=tmp_path)
        assert out.returncode == 1 and "in use by another live run" in _err(out)
        assert _files(run) == before
    finally:
        held.release()
    out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=8"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _train_steps(run) == list(range(8)) and _status(run)["status"] == "completed"


def test_a_refused_resume_keeps_the_interrupted_status_and_writes_nothing(tmp_path: Path):
    run = tmp_path / "run"
    assert run_cli(["decoderlab-train", *TINY, "logger=csv", f"hydra.run.dir={run}"], cwd=tmp_path).returncode == 0
    status = {**_status(run), "status": "interrupted", "step": 6, "signal": "SIGUSR1"}  # as a preempted run's
    (run / "status.json").write_text(json.dumps(status))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("batch_size: 4", "batch_size: 5"))  # today's config differs
    before = _files(run)
    out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=8"], cwd=tmp_path)
    assert out.returncode == 1 and "loader.batch_size: 5 -> 4" in _err(out), out.stderr[-2000:]
    assert _files(run) == before  # status.json still says interrupted at step 6; .hydra/ untouched
    config.write_text(config.read_text().replace("batch_size: 5", "batch_size: 4"))
    out = run_cli(["decoderlab-train", "--resume", str(run), "trainer.max_steps=8"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _status(run)["status"] == "completed" and _train_steps(run) == list(range(8))


# A test-only plugin: a norm whose config check (run while the config is validated, before training starts) sends
# this process SIGUSR1 once.
SIGNAL_PLUGIN = '''
import os, signal
from dataclasses import dataclass
from decoderlab.components.norms import NORM, LayerNormConfig, layernorm

@dataclass
class SignalOnceConfig(LayerNormConfig):
    def check(self, model_cfg):
        mark = os.environ["SIGNAL_ONCE_MARK"]
        if not os.path.exists(mark):
            open(mark, "w").close()
            os.kill(os.getpid(), signal.SIGUSR1)
        return []

@NORM.register("signal_once", SignalOnceConfig)
def signal_once(cfg, dims):
    return layernorm(cfg, dims)
'''


def test_a_run_interrupted_before_training_started_resumes_from_step_0(tmp_path: Path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "signal_once.py").write_text(SIGNAL_PLUGIN)
    env = {"DECODERLAB_PLUGIN_PATH": str(plugins), "SIGNAL_ONCE_MARK": str(tmp_path / "signalled")}
    run = tmp_path / "run"
    out = run_cli(["decoderlab-train", *TINY, "logger=csv", "model/norm=signal_once", f"hydra.run.dir={run}"],
                  cwd=tmp_path, env=env)
    assert out.returncode == 138, out.stderr[-3000:]
    status = _status(run)
    assert status["status"] == "interrupted" and status["step"] is None and status["signal"] == "SIGUSR1"
    assert f"continue with: decoderlab-train --resume {run}" in out.stdout + out.stderr
    out = run_cli(["decoderlab-train", "--resume", str(run)], cwd=tmp_path, env=env)  # as the log says
    assert out.returncode == 0, out.stderr[-3000:]
    assert _status(run)["status"] == "completed" and _train_steps(run) == list(range(6))


BUILD_SIGNAL_PLUGIN = '''
import os, signal
from dataclasses import dataclass
from decoderlab.components.norms import NORM, LayerNormConfig, layernorm

@dataclass
class SignalInBuildConfig(LayerNormConfig):
    pass

@NORM.register("signal_in_build", SignalInBuildConfig)
def signal_in_build(cfg, dims):
    mark = os.environ.get("SIGNAL_BUILD_MARK")
    if mark and not os.path.exists(mark):  # once, while the model is built: after status "running"
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGUSR1)
    return layernorm(cfg, dims)
'''


def test_a_resume_stopped_before_its_first_step_records_the_step_its_checkpoint_holds(tmp_path: Path):
    """It recorded step null, which reads 'interrupted before training started' beside a step-4 checkpoint."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "signal_in_build.py").write_text(BUILD_SIGNAL_PLUGIN)
    env = {"DECODERLAB_PLUGIN_PATH": str(plugins)}
    run = tmp_path / "run"
    args = ["decoderlab-train", *TINY, "logger=csv", "model/norm=signal_in_build", f"hydra.run.dir={run}",
            "trainer.max_steps=4"]
    assert run_cli(args, cwd=tmp_path, env=env).returncode == 0
    resume = ["decoderlab-train", "--resume", str(run), "trainer.max_steps=6"]
    out = run_cli(resume, cwd=tmp_path, env={**env, "SIGNAL_BUILD_MARK": str(tmp_path / "signalled")})
    assert out.returncode == 138, out.stderr[-3000:]
    status = _status(run)
    assert status["status"] == "interrupted" and status["step"] == 4 and status["signal"] == "SIGUSR1"
    assert run_cli(resume, cwd=tmp_path, env=env).returncode == 0
    assert _status(run)["status"] == "completed" and _train_steps(run) == list(range(6))
