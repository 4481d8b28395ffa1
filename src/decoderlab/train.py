"""``decoderlab-train``: the Hydra app that composes a run, trains it with Lightning and summarizes it.

    decoderlab-train                                   # default: nanoGPT's CPU recipe on Shakespeare
    decoderlab-train model/positional=rope model.positional.base=500000 trainer.max_steps=500
    decoderlab-train -m model/positional=sinusoidal,rope,t5 seed=0,1,2   # each job in its own process
    decoderlab-train --plan -m model/ffn=mlp,swiglu ++model.param_budget=800000   # sizes, FLOPs, memory only
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from decoderlab.errors import UserError

log = logging.getLogger("decoderlab")


def conf_dir() -> str:
    """``conf/`` inside an installed wheel, else the source checkout's top-level ``conf/``."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parents[1] / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise RuntimeError(f"decoderlab: cannot find conf/train.yaml near {here}")


def _prepare_process() -> None:
    """Runs before Hydra composes: plugins and schemas must be registered by then."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    from decoderlab.config import register_schema
    from decoderlab.plugins import load_plugins

    load_plugins()
    register_schema()


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def write_status(directory: Path, status: str, **extra: Any) -> None:
    """``status.json``: "running" / "completed" / "failed"; only a completed run looks like a success."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".status.json.tmp"
    tmp.write_text(json.dumps({"status": status, "time": time.time(), **extra}, indent=2, default=str))
    tmp.replace(directory / "status.json")


def task(cfg: Any) -> float | None:
    """The Hydra task function: one training run. Returns the final val loss (the sweep objective)."""
    from decoderlab.sweep.jobs import fingerprint, read_json

    if _plan_requested():
        return _plan(cfg)
    out = run_dir()
    fp = fingerprint(cfg)  # before sweep bookkeeping (wandb names) touches the config
    if _finished_earlier(out, fp):
        return (read_json(out / "summary.json") or {}).get("val_loss")
    try:
        from decoderlab.runner import run, slot_choices
        from decoderlab.sweep.child import tag_wandb

        tag_wandb(cfg, slot_choices())
        return run(cfg, out, fp)
    except UserError as e:
        write_status(out, "failed", error=str(e))
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
            raise
        _report_user_error(e)
        sys.exit(1)
    except SystemExit as e:
        if type(e).__name__ == "SIGTERMException":  # Lightning's graceful stop on SIGTERM exits 0 otherwise
            write_status(out, "failed", error="terminated by SIGTERM")
            raise SystemExit(143) from None
        write_status(out, "failed", error=f"exit {e.code}")
        raise
    except BaseException as e:
        write_status(out, "failed", error=f"{type(e).__name__}: {e}")
        raise


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _finished_earlier(out: Path, fp: str) -> bool:
    """Under an in-process launcher (basic, submitit), a multirun job that already finished is skipped."""
    from decoderlab.sweep.jobs import is_finished

    if not _multirun() or not is_finished(out, fp):
        return False
    log.info("skipped: %s finished earlier with the same config", out)
    return True


def _plan_requested() -> bool:
    from decoderlab.sweep.launch import plan_requested

    return plan_requested()


def _plan(cfg: Any) -> None:
    """``--plan`` of one run (or one job under an in-process launcher): sizes, FLOPs, memory; no training."""
    from hydra.core.hydra_config import HydraConfig

    from decoderlab.sweep import results
    from decoderlab.sweep.plan import plan_row, print_plan

    overrides = [o for o in HydraConfig.get().overrides.task]
    row = plan_row(None, ",".join(overrides) or "(defaults)", cfg)
    print_plan([row])
    if row.error:
        results.PLAN_INVALID.append(row.error)
    return None


def _report_user_error(e: UserError) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text("error: ", style="bold red") + Text(str(e)))


def _cli_args(argv: list[str]) -> list[str]:
    """``--plan`` -> plan mode (no training, no run directory)."""
    from decoderlab.sweep.launch import PLAN_ENV

    args = list(argv)
    if "--plan" in args:
        args = [a for a in args if a != "--plan"]
        os.environ[PLAN_ENV] = "1"
        for key, value in (("hydra.run.dir", "."), ("hydra.output_subdir", "null"), ("hydra/job_logging", "stdout")):
            if not any(a.lstrip("+").startswith(key + "=") for a in args):
                args.append(f"{key}={value}")
    return args


def _finish_sweeps() -> int:
    """Print the per-job table of every sweep this process ran; the exit status (1 if any job failed)."""
    from decoderlab.sweep import results

    code = 1 if results.PLAN_INVALID else 0
    for sweep_dir, jobs in results.session_results().items():
        results.print_summary(sweep_dir, jobs)
        code = code or int(any(not j.ok for j in jobs))
    return code


def main() -> None:
    """Console entry point ``decoderlab-train``."""
    import hydra

    sys.argv[1:] = _cli_args(sys.argv[1:])
    _prepare_process()
    app = hydra.main(version_base=None, config_path=conf_dir(), config_name="train")(task)
    try:
        app()
    except KeyboardInterrupt:
        _finish_sweeps()
        sys.exit(130)
    sys.exit(_finish_sweeps())


if __name__ == "__main__":
    main()
