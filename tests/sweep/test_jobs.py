"""Sweep bookkeeping: config fingerprints, finished-job detection, varying overrides, why a job failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from decoderlab.overrides import override_key, variant_label, varying
from decoderlab.rundir import fingerprint, is_finished, task_config
from decoderlab.sweep.execute import Pool
from decoderlab.sweep.jobs import set_aside
from decoderlab.sweep.results import JobResult, collect, describe_exit, write_summary


def test_fingerprint_is_stable_and_changes_with_any_value():
    a = OmegaConf.create({"model": {"d_model": 16, "n_layers": 1}, "seed": 0, "lr": "${model.d_model}"})
    b = OmegaConf.create({"seed": 0, "model": {"n_layers": 1, "d_model": 16}, "lr": 16})  # same once resolved
    assert fingerprint(a) == fingerprint(b)
    c = OmegaConf.create({"model": {"d_model": 16, "n_layers": 2}, "seed": 0, "lr": 16})
    assert fingerprint(a) != fingerprint(c)
    with_hydra = OmegaConf.create({"hydra": {"job": {"num": 3}}, "seed": 0, "model": {"n_layers": 1, "d_model": 16},
                                   "lr": 16})
    assert fingerprint(task_config(with_hydra)) == fingerprint(b)  # the hydra node is not the experiment


def _status(d: Path, status: str, fp: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "status.json").write_text(json.dumps({"status": status, "fingerprint": fp}))


def test_only_a_completed_run_of_the_same_config_is_finished(tmp_path: Path):
    _status(tmp_path / "done", "completed", "abc")
    _status(tmp_path / "failed", "failed", "abc")
    _status(tmp_path / "running", "running", "abc")
    assert is_finished(tmp_path / "done", "abc")
    assert not is_finished(tmp_path / "done", "other")  # config changed: run again
    assert not is_finished(tmp_path / "failed", "abc")
    assert not is_finished(tmp_path / "running", "abc")  # killed mid-run
    assert not is_finished(tmp_path / "missing", "abc")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "status.json").write_text('{"status": "compl')  # half-written
    assert not is_finished(tmp_path / "torn", "abc")


def test_set_aside_moves_an_earlier_attempt_out_of_the_way(tmp_path: Path):
    job = tmp_path / "sweep" / "3"
    _status(job, "failed", "x")
    moved = set_aside(job, tmp_path / "sweep")
    assert moved is not None and moved.parent == tmp_path / "sweep" / ".attempts"
    assert (moved / "status.json").is_file() and not job.exists()
    assert set_aside(job, tmp_path / "sweep") is None  # nothing to move


def test_varying_overrides_and_variant_labels():
    jobs = [["model.d_model=16", "model/positional=learned", "seed=0"],
            ["model.d_model=16", "model/positional=rope", "seed=0"],
            ["model.d_model=16", "model/positional=rope", "seed=1", "+extra=1"]]
    assert varying(jobs) == [["model/positional=learned", "seed=0"], ["model/positional=rope", "seed=0"],
                             ["model/positional=rope", "seed=1", "+extra=1"]]
    assert variant_label(["model/positional=rope", "seed=1"]) == "model/positional=rope"
    assert variant_label(["seed=1"]) == "default"
    assert override_key("++model.param_budget=5") == "model.param_budget"


@pytest.mark.parametrize("rc, text", [(-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"),
                                      (143, "exit 143 (128+SIGTERM)"), (1, "exit 1"), (None, "did not start")])
def test_exit_codes_are_named(rc, text):
    assert describe_exit(rc) == text


def _job(tmp_path: Path, num: int) -> JobResult:
    d = tmp_path / str(num)
    d.mkdir()
    return JobResult(num, [f"seed={num}"], [f"seed={num}"], str(d))


def test_collect_says_why_a_job_failed(tmp_path: Path):
    ok = _job(tmp_path, 0)
    _status(Path(ok.dir), "completed", "f")
    (Path(ok.dir) / "summary.json").write_text(json.dumps({"val_loss": 1.5, "val_bpb": 2.0}))
    assert collect(ok, 0, 3.0, []).status == "completed" and ok.val_loss == 1.5

    raised = _job(tmp_path, 1)
    (Path(raised.dir) / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    collect(raised, 1, 1.0, ["Traceback", "RuntimeError: boom"])
    assert raised.status == "failed" and raised.reason == "RuntimeError: boom; exit 1"

    killed = _job(tmp_path, 2)
    _status(Path(killed.dir), "running", "f")
    collect(killed, -9, 1.0, [])
    assert killed.status == "failed" and "killed by SIGKILL" in killed.reason and "running" in killed.reason

    silent = _job(tmp_path, 3)  # exit 0 but never wrote a completed status: not a success
    assert collect(silent, 0, 1.0, []).status == "failed"

    path = write_summary(tmp_path, [ok, raised, killed, silent])
    data = json.loads(path.read_text())
    assert data["counts"] == {"completed": 1, "failed": 3}
    assert [j["num"] for j in data["jobs"]] == [0, 1, 2, 3]


def _pool_job(tmp_path: Path, num: int, code: str) -> tuple[JobResult, list[str], dict]:
    """A pool job: a Python child running ``code``, in ``tmp_path/<num>``."""
    return (JobResult(num, [], [f"job={num}"], str(tmp_path / str(num))), [sys.executable, "-c", code],
            dict(os.environ))


def test_pool_times_out_a_job_and_runs_jobs_side_by_side(tmp_path: Path):
    marker = tmp_path / "second-started"
    # Job 0 sees job 1's marker only if both run at once; then it outlives its timeout. Job 1 ends on its own.
    waiter = (f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.02)\n"
              "print('saw 1', flush=True)\ntime.sleep(120)")
    done = Pool(n_jobs=2, timeout_s=5.0, kill_grace_s=1.0, stream=False).run_all(
        [_pool_job(tmp_path, 0, waiter), _pool_job(tmp_path, 1, f"import pathlib; pathlib.Path({str(marker)!r}).touch()")])
    assert done[0].status == "failed" and done[0].reason.startswith("timed out after 5 s")
    assert "killed by SIGTERM" in done[0].reason
    assert (tmp_path / "0" / "job.log").read_text() == "saw 1\n"  # side by side; the job's output is kept
    assert done[1].status == "failed" and "without a completed status.json" in done[1].reason


SIGTERM_PARENT = """
import json, os, sys
from pathlib import Path
from decoderlab.sweep.execute import Pool, sigterm_as_interrupt
from decoderlab.sweep.results import JobResult
tmp = Path({tmp!r})
code = "import time; print('start', flush=True); time.sleep(20)"  # ends on its own if SIGTERM did nothing
jobs = [(JobResult(i, [], [], str(tmp / str(i))), [sys.executable, "-c", code], dict(os.environ)) for i in range(3)]
sigterm_as_interrupt()
try:
    Pool(1, None, 2.0, False).run_all(jobs)
except KeyboardInterrupt:
    print(json.dumps([[r.status, r.reason] for r, _, _ in jobs]))
"""


def test_sigterm_to_the_sweep_ends_its_children_and_marks_the_rest(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_PARENT.format(tmp=str(tmp_path))], stdout=subprocess.PIPE,
                            text=True)
    log = tmp_path / "0" / "job.log"
    while proc.poll() is None and not (log.is_file() and log.read_text()):  # until the first job runs
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    states = json.loads(out.strip().splitlines()[-1])  # no JSON: the parent was not interrupted
    assert states[0][0] == "failed" and states[0][1].startswith("interrupted")
    assert states[1] == ["not run", "interrupted before it started"] and states[2][0] == "not run"


def test_a_job_process_gets_the_config_dir_given_on_the_command_line(tmp_path):
    """``-m -cd DIR``: Hydra keeps DIR in hydra.runtime.config_sources, not in the overrides; each job's process must
    get it too, or it would reject (or silently not find) the options that live there."""
    from omegaconf import OmegaConf

    from decoderlab.sweep.launch import JobSpec, child_command

    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": "/repo/conf", "schema": "file", "provider": "main"},
               {"path": str(tmp_path), "schema": "file", "provider": "command-line"}]
    config = OmegaConf.create({"hydra": {"overrides": {"hydra": ["hydra.launcher.n_jobs=2", "hydra.verbose=true"]},
                                         "runtime": {"config_sources": sources}}})
    cmd = child_command(JobSpec(3, ["experiment=mine", "seed=1"], ["seed=1"], tmp_path / "3"), config)
    assert cmd[1:6] == ["-m", "decoderlab.train", "--config-dir", str(tmp_path), "experiment=mine"]
    assert "hydra.verbose=true" in cmd and "hydra.launcher.n_jobs=2" not in cmd
