#!/usr/bin/env bash
# The one check to run on the first GPU machine, in one device call (its start included, within
# 8 minutes): the environment, the token-statistics kernel on the GPU against its CPU harness
# bit for bit, the engine's consistency checks on the GPU, then throughput at decode batches 64
# and 256 against transformers' `generate`, as one report.
#
#   loadtest/gpu/check.sh target/ship/part1   # on the GPU machine; part1 from loadtest/gpu/ship.sh
#   SMOKE=1 loadtest/gpu/check.sh             # on the CPU (CI runs it): every step, toy sizes
#
# Steps, each a section of $OUT/report.md (printed at the end):
#   1. the GPU, its driver, and the CUDA libraries the binary resolves (`ldd`);
#   2. `entroll check-kernels`: the kernel on the device against its CPU harness (bit for bit)
#      and the host sampler, over the adversarial rows and 256 random rows of V = 151,936;
#   3. loadtest/gpu/consistency.py against a server with the device kernels on, compared with a
#      second server with them off (same model and device);
#   4. throughput with the device kernels on and off, and of transformers' `generate`, on the
#      Qwen2-1.5B-shaped model (random bf16 weights, the real 151,936-token vocabulary): requests
#      of 8 prompts × G = 8, 1 and 4 at a time (decode batches 64 and 256), 256 new tokens.
# The GPU run needs only part1 (the binaries and the Qwen tokenizer; the model is made there).
# Environment: STAGE, OUT, PYTHON as in bench.sh. Exits 1 if a check that must hold failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source loadtest/lib.sh
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  target=$(realpath "${CARGO_TARGET_DIR:-target}")
  export STAGE=${STAGE:-$target/gpu-check-smoke} DEVICE=cpu
  export ENTROLL_BIN=${ENTROLL_BIN:-$target/release/entroll}
  export LOADTEST_BIN=${LOADTEST_BIN:-$target/release/loadtest}
  export PYTHON=${PYTHON:-$(scripts/learner-env)}
  rm -rf "$STAGE" && mkdir -p "$STAGE"
  # The tiny random Qwen2 of scripts/learner-env stands in for the Qwen2-1.5B shape.
  models=$(dirname "$("$ENTROLL_BIN" fetch-model)")
  ln -s "$models/tiny-random-qwen2" "$STAGE/qwen2-1.5b-random"
  random_rows=8 g=2 tokens=8 batches="1 2"
else
  export STAGE=${STAGE:-/root/entroll-stage} DEVICE=cuda PYTHON=${PYTHON:-python3}
  export ENTROLL_BIN=${ENTROLL_BIN:-$STAGE/entroll} LOADTEST_BIN=${LOADTEST_BIN:-$STAGE/loadtest}
  [ $# -ge 1 ] && loadtest/gpu/bench.sh stage "$1"
  loadtest/gpu/bench.sh prepare >&2
  random_rows=256 g=8 tokens=256 batches="1 4"
fi
export OUT=${OUT:-$STAGE/out}
rm -rf "$OUT" && mkdir -p "$OUT"
report=$OUT/report.md
model=$STAGE/qwen2-1.5b-random
failed=0
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

{
  echo "# entroll device check ($(date -u +%F), device $DEVICE)"
  echo
  echo "## 1. Environment"
  echo
  echo '```'
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  else
    echo "nvidia-smi: not found (no GPU)"
  fi
  echo "CPU: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  ldd "$ENTROLL_BIN" | grep -Ei 'cuda|cublas|curand|nvrtc' || echo "no CUDA library linked"
  echo '```'
  echo
  echo "## 2. The kernel on $DEVICE against its CPU harness and the host sampler"
  echo
} > "$report"

"$ENTROLL_BIN" check-kernels --device "$DEVICE" --vocab 151936 --batch "$random_rows" \
    >> "$report" 2> "$OUT/check-kernels.log" || { failed=1; tail -5 "$OUT/check-kernels.log" >> "$report"; }

{
  echo
  echo "## 3. The engine's consistency checks"
  echo
} >> "$report"
common=(--device "$DEVICE" --model "$model" --max-running-sequences 64 --max-group-size 8)
start_entroll "$ENTROLL_BIN" "$OUT/kernel-server.log" "${common[@]}" --device-kernels on
kernel_url=$ENTROLL_URL kernel_pid=$ENTROLL_PID
start_entroll "$ENTROLL_BIN" "$OUT/host-server.log" "${common[@]}" --device-kernels off
host_url=$ENTROLL_URL host_pid=$ENTROLL_PID
"$PYTHON" loadtest/gpu/consistency.py "$kernel_url" "$host_url" >> "$report" || failed=1
stop_entroll "$kernel_pid"
stop_entroll "$host_pid"

configs="kernels=--engine native --device-kernels on;candle=--engine native --device-kernels off"
for conc in $batches; do
  loadtest/gpu/bench.sh run qwen2-1.5b "$g" "$tokens" "$conc" "$configs" >&2 || failed=1
  loadtest/gpu/bench.sh baseline qwen2-1.5b "$g" "$tokens" "$((conc * 8))" >&2 ||
    { echo "transformers baseline at $((conc * 8)) prompts failed" >&2; failed=1; }
done
{
  echo
  echo "## 4. Throughput (G = $g, $tokens new tokens, decode batch = 8 × G × requests at once)"
  echo
  loadtest/gpu/bench.sh table || { echo "(the table lacks runs: see above)"; failed=1; }
  echo
  echo "Predicted for the anchor workload (docs/benchmarks.md): about 4.8 ms per decode step at"
  echo "batch 256 on an H100-class GPU once the whole design is in; the forward and draw columns"
  echo "above are what this build measures."
} >> "$report"
cat "$report"
exit "$failed"
