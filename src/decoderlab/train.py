"""``decoderlab-train``: the Hydra app that composes a run, trains it with Lightning and summarizes it.

    decoderlab-train                                   # default: nanoGPT's CPU recipe on Shakespeare
    decoderlab-train model/positional=rope model.positional.base=500000 trainer.max_steps=500
    decoderlab-train -m model/positional=sinusoidal,rope,t5
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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    out = run_dir()
    try:
        from decoderlab.runner import run

        return run(cfg, out)
    except UserError as e:
        write_status(out, "failed", error=str(e))
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        _report_user_error(e)
        sys.exit(1)
    except BaseException as e:
        write_status(out, "failed", error=f"{type(e).__name__}: {e}")
        raise


def _report_user_error(e: UserError) -> None:
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True).print(Text("error: ", style="bold red") + Text(str(e)))


def main() -> None:
    """Console entry point ``decoderlab-train``."""
    import hydra

    _prepare_process()
    app = hydra.main(version_base=None, config_path=conf_dir(), config_name="train")(task)
    app()


if __name__ == "__main__":
    main()
