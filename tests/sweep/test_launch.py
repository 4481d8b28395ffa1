"""Sweeps end to end through ``decoderlab-train -m``: each job in its own process, failures isolated and reported,
finished jobs skipped on a re-run, one wandb run per job, and the Optuna / submitit plugins as optional extras."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
from pathlib import Path

import pytest

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow

# A test-only plugin: an MLP that fails on purpose at its 2nd training forward (loaded from a tmp plugin dir).
CHAOS_PLUGIN = '''
import os, signal, sys
from dataclasses import dataclass
from decoderlab.components.ffn import FFN, MLP, MLPConfig

@dataclass
class ChaosConfig(MLPConfig):
    mode: str = "none"  # none | raise | exit143 | sigterm | sigkill

@FFN.register("chaos", ChaosConfig)
class Chaos(MLP):
    """Test only: an MLP that raises, exits or is killed at its 2nd training forward."""

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.mode, self.calls = cfg.mode, 0

    def forward(self, x):
        self.calls += self.training
        if self.calls == 2:
            if self.mode == "raise":
                raise RuntimeError("chaos: boom")
            if self.mode == "exit143":
                sys.exit(143)
            if self.mode in ("sigterm", "sigkill"):
                os.kill(os.getpid(), getattr(signal, self.mode.upper()))
        return super().forward(x)
'''


def _sweep(tmp_path: Path, corpus: Path, *overrides: str, env: dict | None = None):
    args = ["decoderlab-train", "-m", *TINY, "data=text", f"data.paths=[{corpus}]", *overrides]
    return run_cli(args, cwd=tmp_path, env=env, timeout=400)


def _jobs(sweep: Path) -> dict[int, dict]:
    return {j["num"]: j for j in json.loads((sweep / "sweep_summary.json").read_text())["jobs"]}


def test_failures_are_isolated_reported_and_finished_jobs_skipped(tmp_path: Path, tiny_corpus: Path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "chaos_ffn.py").write_text(CHAOS_PLUGIN)
    env = {"DECODERLAB_PLUGIN_PATH": str(plugins)}
    sweep = tmp_path / "sweep"
    # n_heads=3 does not divide d_model=16: jobs 4-7 are invalid, reported without being launched.
    r = _sweep(tmp_path, tiny_corpus, "logger=csv", "model/ffn=chaos", "model.n_heads=2,3",
               "model.ffn.mode=none,raise,sigterm,sigkill", f"hydra.sweep.dir={sweep}",
               "hydra.launcher.stream_output=false", env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # some jobs failed
    jobs = _jobs(sweep)
    assert [jobs[i]["status"] for i in range(8)] == ["completed"] + ["failed"] * 7, out
    assert "RuntimeError: chaos: boom" in jobs[1]["reason"]
    assert "143" in jobs[2]["reason"] and "SIGTERM" in jobs[2]["reason"]
    assert jobs[3]["reason"].startswith("killed by SIGKILL")
    assert all("must be divisible by model.n_heads=3" in jobs[i]["reason"] for i in range(4, 8))
    assert not (sweep / "4").exists()
    assert "1 ok, 7 failed" in out  # the per-job table at the end
    ok = sweep / "0"  # the healthy job's results are complete
    assert json.loads((ok / "status.json").read_text())["status"] == "completed"
    assert json.loads((ok / "summary.json").read_text())["steps"] == 6
    assert "val/bpb" in (ok / "metrics.csv").read_text() and (ok / "checkpoints" / "last.ckpt").is_file()
    assert "chaos: boom" in (sweep / "1" / "job.log").read_text()  # every job's output is kept

    from decoderlab.compare import build_report

    files = build_report([sweep], tmp_path / "report")
    md = files["markdown"].read_text()
    assert "model.ffn.mode=none" in md and "## Failed runs" in md
    for reason in ("chaos: boom", "SIGTERM", "killed by SIGKILL"):
        assert reason in md and reason in files["html"].read_text()
    runs = list(csv.DictReader(open(files["runs_csv"])))
    assert len(runs) == 8 and [r["status"] for r in runs].count("failed") == 6
    (stopped,) = [r for r in runs if r["status"] == "interrupted"]  # the SIGTERM job saved its step: resumable
    assert stopped["dir"].endswith("/2") and stopped["reason"].startswith("interrupted by SIGTERM at step ")

    # Same sweep again (first two points): the finished job is skipped, the failed one runs again.
    before = (ok / "status.json").read_text()
    r2 = _sweep(tmp_path, tiny_corpus, "logger=csv", "model/ffn=chaos", "model.n_heads=2",
                "model.ffn.mode=none,raise", f"hydra.sweep.dir={sweep}", "hydra.launcher.stream_output=false",
                env=env)
    assert r2.returncode == 1, r2.stdout + r2.stderr
    jobs = _jobs(sweep)
    assert jobs[0]["status"] == "skipped" and jobs[1]["status"] == "failed"
    assert (ok / "status.json").read_text() == before  # not re-run
    assert len(list((sweep / ".attempts").glob("1-*"))) == 1  # the earlier failed attempt was kept aside


def wandb_records(path: Path) -> list:
    """Records of a wandb offline run file (its LevelDB-style log: 7-byte header, 32 KiB blocks, chunk headers of
    crc32 (4) + length (2) + type (1): full=1, first=2, middle=3, last=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            buf = chunk
        elif kind in (3, 4):
            buf += chunk
        if kind in (1, 4):
            out.append(pb.Record.FromString(buf))
    return out


def test_one_wandb_run_per_job_named_after_the_sweep_and_the_variant(tmp_path: Path, tiny_corpus: Path):
    r = _sweep(tmp_path, tiny_corpus, "logger=default", "model/positional=learned,rope", "hydra.sweep.dir=sw",
               "hydra.launcher.stream_output=false")
    assert r.returncode == 0, r.stdout + r.stderr
    for num, variant in ((0, "learned"), (1, "rope")):
        runs = list((tmp_path / "sw" / str(num) / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, runs  # one run per job
        records = wandb_records(runs[0])
        kinds = [rec.WhichOneof("record_type") for rec in records]
        assert "exit" in kinds  # finished (wandb.finish) before the job's process ended
        run = next(rec.run for rec in records if rec.WhichOneof("record_type") == "run")
        assert run.run_group == "sw"  # the sweep
        assert run.job_type == f"model/positional={variant}"  # the variant: what varies, seed aside
        assert f"positional={variant}" in run.tags and f"model/positional={variant}" in run.tags
        config = {u.key: json.loads(u.value_json) for rec in records if rec.WhichOneof("record_type") == "config"
                  for u in rec.config.update}
        assert config["choice/model/positional"] == variant and config["model.d_model"] == 16  # flat keys


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="optional extra: pip install 'decoderlab[sweeps]' (hydra-optuna-sweeper)")
def test_optuna_sweeper_minimizes_the_returned_val_loss(tmp_path: Path, tiny_corpus: Path):
    r = _sweep(tmp_path, tiny_corpus, "+experiment=optuna_lr", "logger=csv", "hydra.sweeper.n_trials=2",
               "hydra.sweep.dir=opt", "hydra.launcher.stream_output=false")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    import yaml

    best = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    losses = [json.loads((tmp_path / "opt" / str(i) / "summary.json").read_text())["val_loss"] for i in (0, 1)]
    assert best["best_value"] == pytest.approx(min(losses))  # the objective is the task's return value
    lrs = {yaml.safe_load((tmp_path / "opt" / str(i) / "config.yaml").read_text())["optim"]["lr"] for i in (0, 1)}
    assert len(lrs) == 2 and [j["status"] for j in _jobs(tmp_path / "opt").values()] == ["completed"] * 2


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="optional extra: pip install 'decoderlab[sweeps]' (hydra-submitit-launcher)")
def test_submitit_local_launcher_runs_a_job(tmp_path: Path, tiny_corpus: Path):
    # submitit pickles Hydra's ConfigStore, which holds the file plugin's config class (plugins/dyt.py): its
    # worker imports that module by name through decoderlab.plugins._PluginFinder.
    args = ("logger=csv", "hydra/launcher=submitit_local", "seed=3", "hydra.sweep.dir=sub",
            "hydra.launcher.timeout_min=5")
    env = {"DECODERLAB_PLUGIN_PATH": str(Path(__file__).resolve().parents[1] / "plugins")}
    r = _sweep(tmp_path, tiny_corpus, *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    job = tmp_path / "sub" / "0"
    status = (job / "status.json").read_text()
    assert json.loads(status)["status"] == "completed"
    assert json.loads((job / "summary.json").read_text())["steps"] == 6
    r2 = _sweep(tmp_path, tiny_corpus, *args, env=env)  # again: the task itself skips the finished job
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert (job / "status.json").read_text() == status


def _wandb_run(job_dir: Path):
    runs = list(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    return next(rec.run for rec in wandb_records(runs[0]) if rec.WhichOneof("record_type") == "run")


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="optional extra: pip install 'decoderlab[sweeps]' (hydra-submitit-launcher)")
def test_submitit_jobs_are_typed_by_what_varies_not_by_their_override_string(tmp_path: Path, tiny_corpus: Path):
    env = {"DECODERLAB_PLUGIN_PATH": str(Path(__file__).resolve().parents[1] / "plugins")}
    r = _sweep(tmp_path, tiny_corpus, "logger=default", "hydra/launcher=submitit_local", "seed=3",
               "model/positional=learned,rope", "hydra.sweep.dir=sub", "hydra.launcher.timeout_min=5", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for num, variant in ((0, "learned"), (1, "rope")):
        run = _wandb_run(tmp_path / "sub" / str(num))
        assert run.run_group == "sub"
        assert run.job_type == f"model/positional={variant}"  # not the seed, not the constants
        assert f"model/positional={variant}" in run.tags and "seed=3" not in run.tags


def test_an_uncomposable_point_is_reported_invalid_and_the_others_run(tmp_path: Path, tiny_corpus: Path):
    # learned has no `base`: Hydra alone aborts the whole sweep (and --plan) on this point.
    point = ("model/positional=rope,learned", "model.positional.base=500", "logger=csv")
    plan = _sweep(tmp_path, tiny_corpus, "--plan", *point)
    out = plan.stdout + plan.stderr
    assert plan.returncode == 1, out
    assert "to run" in out and "invalid" in out
    assert "#1 model/positional=learned: invalid configuration: cannot compose: model.positional.base: unknown key " \
           "(not in LearnedConfig)" in " ".join(out.split())
    r = _sweep(tmp_path, tiny_corpus, *point, "hydra.sweep.dir=sw", "hydra.launcher.stream_output=false")
    assert r.returncode == 1, r.stdout + r.stderr
    jobs = _jobs(tmp_path / "sw")
    assert [jobs[i]["status"] for i in (0, 1)] == ["completed", "failed"]
    assert "model.positional.base=500" in jobs[1]["overrides"] and "model.positional.base: unknown key (not in LearnedConfig)" in jobs[1]["reason"]


@pytest.mark.parametrize("launcher", [  # basic: its launcher checks each batch; submitit: the sweeper does
    "basic", pytest.param("submitit_local", marks=pytest.mark.skipif(
        importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
        reason="optional extra: pip install 'decoderlab[sweeps]'"))])
def test_under_an_in_process_launcher_every_uncomposable_point_is_named_before_any_job_runs(tmp_path: Path,
                                                                                          tiny_corpus: Path,
                                                                                          launcher: str):
    r = _sweep(tmp_path, tiny_corpus, f"hydra/launcher={launcher}", "model/positional=rope,learned,alibi",
               "model.positional.base=500", "logger=csv", "hydra.sweep.dir=sw")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "2 of 3 sweep points are invalid; no job was launched:" in out
    for num, pe in ((1, "learned"), (2, "alibi")):
        assert f"job {num} (model/positional={pe}): model.positional.base: unknown key (not in " \
               f"{pe.capitalize()}Config)" in " ".join(out.split())
    assert "job 0" not in out and not (tmp_path / "sw" / "0" / "status.json").exists()  # rope never ran


SWEEP_EXTRAS_MISSING = any(importlib.util.find_spec(f"hydra_plugins.hydra_{m}") is None
                           for m in ("optuna_sweeper", "submitit_launcher"))
OPTUNA = ["hydra/sweeper=optuna", "logger=choice(csv,leaky)", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4",
          "hydra.sweeper.sampler.seed=0"]  # seed 0 picks leaky in this batch of 4


@pytest.mark.parametrize("launcher,sweep", [("basic", ["logger=csv,leaky"]), ("decoderlab", ["logger=csv,leaky"]),
                                            pytest.param("basic", OPTUNA, id="optuna-basic", marks=pytest.mark.skipif(
                                                importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                                                reason="optional extra: pip install 'decoderlab[sweeps]'")),
                                            pytest.param("submitit_local", OPTUNA, id="optuna-submitit",
                                                         marks=pytest.mark.skipif(SWEEP_EXTRAS_MISSING, reason=(
                                                             "optional extra: pip install 'decoderlab[sweeps]'")))])
def test_a_swept_option_holding_a_literal_secret_never_runs(tmp_path: Path, tiny_corpus: Path, launcher: str,
                                                            sweep: list[str]):
    """The default sweeper checks each point (basic), the decoderlab launcher each job, and the basic and submitit
    launchers each batch a sweeper such as Optuna hands them: Hydra (and submitit's pickles) would save a job's
    config before its task refused it."""
    (tmp_path / "confs" / "logger").mkdir(parents=True)
    (tmp_path / "confs" / "logger" / "leaky.yaml").write_text(
        'csv:\n  _target_: lightning.pytorch.loggers.CSVLogger\n  name: ""\n  version: ""\n  password: hunter2\n')
    r = _sweep(tmp_path, tiny_corpus, f"hydra/launcher={launcher}", *sweep, "hydra.sweep.dir=sw",
               f"hydra.searchpath=[file://{tmp_path / 'confs'}]")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "logger.csv.password: a literal secret is refused" in " ".join(out.split())
    assert "hunter2" not in out
    leaked = [p for p in (tmp_path / "sw").rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]
    assert not leaked and not (tmp_path / "sw" / "1" / ".hydra").exists()


def test_a_failed_job_under_the_basic_launcher_is_one_line_not_a_traceback(tmp_path: Path, tiny_corpus: Path):
    """Hydra's basic sweeper stops at a failed job and prints its exception's traceback: a user mistake in a job
    (a precision Lightning refuses) is one line after Hydra's own line naming the job's overrides."""
    r = _sweep(tmp_path, tiny_corpus, "hydra/launcher=basic", "trainer.precision=17", "hydra.sweep.dir=sw")
    err = r.stderr
    assert r.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "Error executing job with overrides: [" in err and "'trainer.precision=17'" in err
    assert "error: trainer: Precision '17' is invalid." in " ".join(err.split())
    assert json.loads((tmp_path / "sw" / "0" / "status.json").read_text())["status"] == "failed"


def test_launcher_settings_are_range_checked_and_plan_honours_skip_finished(tmp_path: Path, compose):
    from decoderlab.errors import RefusedConfig
    from decoderlab.rundir import write_status
    from decoderlab.sweep.launch import JobSpec, Settings, _plan_row

    with pytest.raises(RefusedConfig) as e:  # every job would fail "timed out after -1 s"
        Settings(timeout_s=-1, n_jobs=0)
    assert str(e.value) == ("hydra.launcher.n_jobs=0 must be at least 1; hydra.launcher.timeout_s=-1 must be positive "
                            "(or null: none)")
    write_status(tmp_path, "completed", fingerprint="f")
    spec = JobSpec(0, ["seed=1"], ["seed=1"], tmp_path, cfg=compose([]), fp="f")
    assert _plan_row(spec).state == "done: skipped"
    assert _plan_row(spec, skip_finished=False).state == "to run"  # what the sweep will then do


def _job_files(sweep: Path) -> dict[str, bytes]:
    return {str(p.relative_to(sweep)): p.read_bytes() for p in sorted(sweep.glob("[0-9]*/**/*")) if p.is_file()}


def test_a_job_directory_holding_a_run_of_another_config_is_refused_never_overwritten(tmp_path: Path,
                                                                                    tiny_corpus: Path):
    sweep = tmp_path / "sweep"
    points = ["logger=csv", "model/positional=none,alibi", f"hydra.sweep.dir={sweep}"]
    assert _sweep(tmp_path, tiny_corpus, *points).returncode == 0
    before = _job_files(sweep)
    r = _sweep(tmp_path, tiny_corpus, *points, "model.d_model=32")  # the default launcher: each job fails
    assert r.returncode == 1, r.stdout + r.stderr
    jobs = _jobs(sweep)
    for num in (0, 1):
        assert jobs[num]["status"] == "refused"
        assert f"job directory {sweep / str(num)} holds a completed run of another config" in jobs[num]["reason"]
    from decoderlab.compare import build_report

    runs = list(csv.DictReader(open(build_report([sweep], tmp_path / "report")["runs_csv"])))
    assert [r["status"] for r in runs] == ["completed", "completed"]  # the untouched runs still count as theirs
    r = _sweep(tmp_path, tiny_corpus, *points, "model.d_model=32", "hydra/launcher=basic")  # in process
    err = " ".join(r.stderr.split())
    assert r.returncode == 1 and "2 of 2 sweep jobs are refused; no job was launched" in err, r.stdout + r.stderr
    assert f"job 1 (model/positional=alibi): job directory {sweep / '1'} holds a completed run" in err
    assert _job_files(sweep) == before  # every file of both jobs as it was (.hydra/ and train.log included)
    assert not (sweep / ".attempts").exists()
    r = _sweep(tmp_path, tiny_corpus, *points, "hydra/launcher=basic")  # the same config: skipped
    assert r.returncode == 0 and "skipped" in r.stdout + r.stderr


def test_basic_launcher_resume_of_one_job_leaves_the_next_jobs_fresh_and_plan_writes_nothing(tmp_path: Path,
                                                                                           tiny_corpus: Path):
    from decoderlab.rundir import write_status

    sweep = tmp_path / "sweep"
    points = ["logger=csv", "seed=1,2", f"hydra.sweep.dir={sweep}", "hydra/launcher=basic"]
    assert _sweep(tmp_path, tiny_corpus, *points).returncode == 0
    first = json.loads((sweep / "0" / "status.json").read_text())
    write_status(sweep / "0", "interrupted", fingerprint=first["fingerprint"], step=6, signal="SIGTERM")
    write_status(sweep / "1", "failed", error="boom")
    plan = _sweep(tmp_path, tiny_corpus, "--plan", *points)
    assert plan.returncode == 0 and not (sweep / ".attempts").exists()  # --plan set nothing aside
    r = _sweep(tmp_path, tiny_corpus, *points)  # job 0 finishes its interrupted run, job 1 runs afresh
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert [json.loads((sweep / n / "status.json").read_text())["status"] for n in ("0", "1")] == ["completed"] * 2
    assert (sweep / ".attempts").is_dir()  # job 1's failed attempt, set aside
