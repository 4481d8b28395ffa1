#!/usr/bin/env bash
# Issue 10's GPU checks as ONE call on a lent GPU machine (a session gets 15 minutes of device time in all).
#
#   here, once (PyPI reachable):   bash scripts/gpu_check.sh wheels     # .whl/ (git-ignored): hydra-core, omegaconf,
#                                                                       # antlr4, ijson: what the device's image lacks
#   on the device (the run tool):  carry [".whl"], command "bash scripts/gpu_check.sh", timeout_s 600
#   a second call, if time is left: "bash scripts/gpu_check.sh more"   # eager rows, the other encodings compiled
#
# Results under $OUT (benchmarks/results/gpu_check without it), 8 files: summary.txt, env.txt, lit_tests.log,
# bench.log, flex_tests.log, e2e_tests.log, gpu.md and gpu.json (written after every row, so a stage cut short keeps
# what it measured). Each stage has its own time limit and the whole stays under ~9.5 minutes. The device runs its own torch/Lightning (torch 2.11 there);
# decoderlab comes from src/ on PYTHONPATH, not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3)  # pure Python: built here, any platform
BINARY=(ijson==3.6.0)  # compiled: the device's CPython 3.12 on x86-64 Linux

if [[ "${1:-}" == wheels ]]; then
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  python3 -m pip wheel -q --no-deps -w .whl "${WHEELS[@]}" || exit  # antlr4 4.9.3 is an sdist on PyPI: build it
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${BINARY[@]}"
fi

out=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$out"
whl=${GPU_CHECK_WHEELS:-.whl}  # the carried wheels (a test points this elsewhere)
if compgen -G "$whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --root-user-action=ignore --target /tmp/site "$whl"/*.whl \
    || { echo "installing .whl/ failed" | tee "$out/summary.txt"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
{
  date -u
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  python3 -c "import torch, lightning, hydra; print('torch', torch.__version__, 'lightning', lightning.__version__,
'hydra', hydra.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
} >"$out/env.txt" 2>&1

stage() {  # stage NAME SECONDS LOG COMMAND...: run with a time limit, record the exit status and the wall time
  local name=$1 limit=$2 log=$3 t0=$SECONDS rc
  shift 3
  timeout "$limit" "$@" >"$out/$log" 2>&1
  rc=$?
  echo "$name: exit $rc$([[ $rc == 124 ]] && echo ' (time limit)') in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}

if [[ "${1:-}" == more ]]; then  # a second call: the eager rows, then the other encodings compiled
  stage bench-eager 230 bench_eager.log python3 benchmarks/bench_gpu.py --shapes gpt2 --modes eager \
    --models default t5 alibi llama --hand default --out "$out/eager"
  stage bench-encodings 330 bench_encodings.log python3 benchmarks/bench_gpu.py --shapes gpt2 --modes compiled \
    --models default rope sinusoidal none xpos --hand --out "$out/encodings"
  exit 0
fi

# Ordered by what the issue needs most; pytest runs verbose, so a stage cut short still names each test it ran.
# 1. The training step on CUDA (fast): bf16-mixed + fused AdamW + clipping, the divergence guard's found_inf skip and
#    stop on the fused kernel, no device sync between logging steps (t5 too: eager FlexAttention).
stage lit-tests 100 lit_tests.log python3 -m pytest -m cuda -p no:cacheprovider -v tests/test_lit.py
# 2. The targets' rows at the GPT-2-small shape, compiled: the hand-written loop for the default model (the
#    0.95x ratio, MFU) and decoderlab for the default, T5, ALiBi and llama (each vs the default: the 1.3x targets).
stage bench 280 bench.log python3 benchmarks/bench_gpu.py --shapes gpt2 --modes compiled \
  --models default t5 alibi llama --hand default --out "$out"
# 3. FlexAttention on CUDA: outputs and gradients equal SDPA's, the whole model as one Inductor graph, cached decoding.
stage flex-tests 130 flex_tests.log python3 -m pytest -m cuda -p no:cacheprovider -v tests/components/test_attention_flex.py
# 4. decoderlab.train end to end on the GPU (compiled, bf16-mixed; t5 through FlexAttention).
stage e2e-tests 60 e2e_tests.log python3 -m pytest -m cuda -p no:cacheprovider -v tests/test_api.py
