"""Start-up benchmark: seconds from process start to the first training step of ``decoderlab-train``, and the
import time of what it imports. Not a test; writes ``benchmarks/results/startup.{md,json}``.

    python benchmarks/bench_startup.py                 # default settings, warm token cache, wandb offline, 3 repeats
    python benchmarks/bench_startup.py --python /path/to/venv/bin/python --repeats 5

The first-step figure is the line ``first training step X s after the process started`` that every run writes to its
``train.log`` (:class:`decoderlab.logs.ValidationLog`, from ``/proc``). Each figure is the minimum over repeats:
on a shared machine the minimum is the closest to a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"
# Default settings; one step and a 10-window validation so each repeat ends quickly (start-up does not depend on it).
RUN_ARGS = ["trainer.max_steps=1", "trainer.val_check_interval=1", "loader.val_max_windows=10"]
IMPORTS = ["torch", "hydra", "lightning.pytorch", "wandb", "decoderlab.train"]


def first_step_seconds(python: str, env: dict[str, str]) -> float:
    """One ``decoderlab-train`` run in a fresh directory; its start-up time from ``train.log``."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([python, "-m", "decoderlab.train", *RUN_ARGS, f"hydra.run.dir={d}/run"], env=env, cwd=d,
                       check=True, capture_output=True, text=True)
        log = (Path(d) / "run" / "train.log").read_text(encoding="utf-8")
    return float(re.search(r"first training step ([\d.]+) s", log).group(1))


def import_seconds(python: str, module: str, env: dict[str, str]) -> float:
    """Cumulative ``python -X importtime`` of ``module`` in a fresh process."""
    err = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"], env=env, capture_output=True,
                         text=True, check=True).stderr
    last = [ln for ln in err.splitlines() if ln.rstrip().endswith(f"| {module}")][-1]
    return int(last.split("|")[1]) / 1e6


def heavy_modules(python: str, env: dict[str, str]) -> list[str]:
    """Which optional heavyweights ``import lightning.pytorch`` pulls into this environment."""
    code = ("import sys, lightning.pytorch; print(' '.join(m for m in ('transformers', 'scipy.signal', 'sympy', "
            "'torch._dynamo', 'torchmetrics') if m in sys.modules))")
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the environment to measure")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--label", default="", help="a name for the environment in the results")
    ap.add_argument("--out", default="startup", help="results file stem under benchmarks/results/")
    args = ap.parse_args()
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO / "src"))
    env.pop("WANDB_API_KEY", None)
    first_step_seconds(args.python, env)  # warms the token cache and the OS file cache
    steps = [first_step_seconds(args.python, env) for _ in range(args.repeats)]
    imports = {m: min(import_seconds(args.python, m, env) for _ in range(args.repeats)) for m in IMPORTS}
    result = {"label": args.label or args.python, "first_step_s_min": min(steps), "first_step_s_all": steps,
              "import_s_min": imports, "lightning_pulls": heavy_modules(args.python, env), "repeats": args.repeats,
              "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| `import {m}` | {s:.2f} |" for m, s in imports.items())
    (OUT / f"{args.out}.md").write_text(
        f"# Start-up ({result['label']}; {args.repeats} repeats, minimum; load average {result['load_avg_1min']:.1f} "
        f"on {result['cpus']} CPUs)\n\n| what | seconds |\n|---|---|\n"
        f"| process start -> first training step (default run, warm cache, wandb offline) | {min(steps):.2f} |\n"
        f"{rows}\n\n`import lightning.pytorch` pulls in: {', '.join(result['lightning_pulls'])}\n")
    print((OUT / f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
