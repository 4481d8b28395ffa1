#!/usr/bin/env bash
# Length extrapolation of every registered positional encoding (plugins included), end to end:
# train one small model per encoding on Shakespeare (conf/experiment/pe_extrapolation.yaml), then score every run
# at 1x, 2x, 4x and 8x its training block_size and write the table and plot.
#
#   scripts/pe_extrapolation.sh                         # -> multirun/pe_extrapolation/eval/extrapolation.{csv,md,png}
#   scripts/pe_extrapolation.sh /tmp/pe trainer.max_steps=1000   # sweep directory, then any extra overrides
set -euo pipefail
SWEEP=${1:-multirun/pe_extrapolation}
shift || true
ENCODINGS=$(${PYTHON:-python3} -c 'from decoderlab.plugins import load_plugins; load_plugins()
from decoderlab.components import POSITIONAL; print(",".join(POSITIONAL.names()))')
echo "positional encodings: ${ENCODINGS}"
decoderlab-train -m +experiment=pe_extrapolation "model/positional=${ENCODINGS}" "hydra.sweep.dir=${SWEEP}" "$@"
decoderlab-eval "${SWEEP}" --lengths 1,2,4,8 --max-tokens 50000
