#!/usr/bin/env bash
# The one check to run on the first GPU machine, in one device call that leaves room for a
# second: every step under its own time limit, one GPU process at a time, and a report written
# whatever happens (a step that fails or runs out of time is reported and the next one runs;
# only missing libraries stop the check, in seconds, with their names).
#
#   loadtest/gpu/check.sh target/ship/part1   # on the GPU machine; part1 from loadtest/gpu/ship.sh
#   SMOKE=1 loadtest/gpu/check.sh             # on the CPU (CI runs it): every step, toy sizes
#
# Steps, with their time limits and, on an H100-class GPU, the estimate from reading the code
# (docs/benchmarks.md, "The first device run"); the whole estimate is ~5 minutes of a 10-minute
# call:
#   1. environment  (limit  30 s, est.   5 s) the GPU, its driver, and the CUDA libraries the
#      binary links (`ldd`) and opens by name (cuBLAS, cuBLASLt, cuRAND, NVRTC, the runtime),
#      found in this machine's Python environment and /usr/local/cuda/lib64;
#   2. prepare      (limit 150 s, est.  45 s) unpack the carried binaries; make the Qwen2-1.5B-
#      shaped checkpoint (random bf16 weights, the real 151,936-token vocabulary, logits scaled
#      to a trained model's peakedness);
#   3. kernels      (limit  90 s, est.  20 s) `entroll bench-kernels`: the statistics kernel on
#      [256, 151,936] peaked and flat rows, with and without top-k; attention at 256 queries
#      over contexts 256, 1,024 and 4,096 (CUDA events);
#   4. harness      (limit 120 s, est.  30 s) `entroll check-kernels`: the kernel on the GPU
#      against its CPU harness bit for bit (the harness on every core) and the host sampler,
#      over the adversarial rows and 64 random rows;
#   5. kernels on   (limit 180 s, est.  90 s) a server with the device kernels on:
#      consistency.py (its answer saved), then throughput at decode batch 256;
#   6. kernels off  (limit 150 s, est.  60 s) a server with them off, alone: consistency.py
#      against the saved answer, then throughput;
#   7. transformers (limit 120 s, est.  45 s) transformers' `generate` at batch 256;
#   8. table        (limit  30 s, est.   2 s) the throughput table.
# $OUT (default $STAGE/out) receives two files, report.md and logs.tar.gz (every step's log
# and JSON); it is never emptied. Environment: STAGE, OUT, PYTHON as in bench.sh. Exits 1 if a
# step failed or a check that must hold did not.
set -uo pipefail
self=$(realpath "$0")
cd "$(dirname "$0")/../.."
source loadtest/lib.sh

# The steps: each one runs as `check.sh --step NAME` under `timeout` (the settings below reach
# it through the environment), writing its section of the report to $WORK/NAME.md and its logs
# beside it.
run_step() {
  local section=$WORK/$1.md
  case $1 in
    environment)
      {
        echo '```'
        command -v nvidia-smi >/dev/null &&
          nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv ||
          echo "nvidia-smi: not found (no GPU)"
        echo "CPU: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
        echo '```'
      } > "$section"
      [ "$DEVICE" = cpu ] && { echo "No CUDA library is needed on the CPU." >> "$section"; return 0; }
      [ -x "$ENTROLL_BIN" ] || [ -f "$STAGE/entroll.xz" ] ||
        { echo "No entroll binary at $ENTROLL_BIN (carry part1 of loadtest/gpu/ship.sh)." >> "$section"; return 1; }
      [ -x "$ENTROLL_BIN" ] || { xz -d -k -f "$STAGE/entroll.xz" && chmod +x "$ENTROLL_BIN"; }
      local missing
      missing=$(ldd "$ENTROLL_BIN" | awk '/not found/ {print $1}')
      # cudarc opens these with dlopen, by the names it tries in order.
      local opened
      opened=$("$PYTHON" - <<'PY'
import ctypes
for lib in ("cuda", "cublas", "cublasLt", "curand", "nvrtc", "cudart"):
    for name in [f"lib{lib}.so"] + [f"lib{lib}.so.{v}" for v in (13, 12, 11, 10, 9, 1)]:
        try:
            handle = ctypes.CDLL(name)
        except OSError:
            continue
        path = next((l.split()[-1] for l in open("/proc/self/maps") if f"/lib{lib}.so" in l), name)
        print(f"{lib}: {name} -> {path}")
        break
    else:
        print(f"{lib}: NOT FOUND")
PY
)
      { echo; echo '```'; ldd "$ENTROLL_BIN" | grep -Ei 'cuda|cublas|curand|nvrtc' || true
        echo "$opened"; echo '```'; } >> "$section"
      missing="$missing $(echo "$opened" | awk '/NOT FOUND/ {print "lib" $1}' | tr -d :)"
      if [ -n "${missing// /}" ]; then
        echo "**Missing:** $missing" >> "$section"
        return 1
      fi
      ;;
    prepare)
      loadtest/gpu/bench.sh prepare > "$WORK/prepare.log" 2>&1 || { tail -20 "$WORK/prepare.log" > "$section"; return 1; }
      "$PYTHON" - "$MODEL/config.json" >> "$section" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"Model: {c.get('num_hidden_layers')} layers, hidden {c.get('hidden_size')}, "
      f"V = {c.get('vocab_size')}, {c.get('torch_dtype') or c.get('dtype')}")
PY
      ;;
    kernels)
      # shellcheck disable=SC2086
      "$ENTROLL_BIN" bench-kernels --device "$DEVICE" $BENCH_FLAGS > "$section" 2> "$WORK/bench-kernels.log" ||
        { tail -5 "$WORK/bench-kernels.log" >> "$section"; return 1; }
      ;;
    harness)
      "$ENTROLL_BIN" check-kernels --device "$DEVICE" --vocab 151936 --batch "$RANDOM_ROWS" \
        > "$section" 2> "$WORK/check-kernels.log" || { tail -5 "$WORK/check-kernels.log" >> "$section"; return 1; }
      ;;
    kernels-on | kernels-off)
      local kernels=${1#kernels-} label=kernels
      [ "$kernels" = off ] && label=candle
      start_entroll "$ENTROLL_BIN" "$WORK/server-$kernels.log" --device "$DEVICE" --model "$MODEL" \
          --max-running-sequences 256 --max-requests 256 --max-group-size 64 --device-kernels "$kernels" ||
        { echo "The server with the device kernels $kernels did not start:" > "$section"
          tail -10 "$WORK/server-$kernels.log" >> "$section"; return 1; }
      local failed=0
      if [ "$kernels" = on ]; then
        "$PYTHON" loadtest/gpu/consistency.py "$ENTROLL_URL" --save "$WORK/kernels-on.json" > "$section" || failed=1
      else
        "$PYTHON" loadtest/gpu/consistency.py "$ENTROLL_URL" --against "$WORK/kernels-on.json" > "$section" || failed=1
      fi
      stop_entroll "$ENTROLL_PID"
      # bench.sh starts its own server with these flags (one at a time: this one is stopped).
      OUT=$WORK/runs loadtest/gpu/bench.sh run qwen2-1.5b "$G" "$TOKENS" "$CONCURRENCY" \
          "$label=--engine native --device-kernels $kernels" >> "$WORK/bench.log" 2>&1 || failed=1
      return "$failed"
      ;;
    transformers)
      OUT=$WORK/runs loadtest/gpu/bench.sh baseline qwen2-1.5b "$G" "$TOKENS" "$((CONCURRENCY * 8))" \
        > "$WORK/transformers.log" 2>&1 || { tail -5 "$WORK/transformers.log" > "$section"; return 1; }
      ;;
    table)
      {
        echo "G = $G, $TOKENS new tokens, decode batch = 8 prompts × G × $CONCURRENCY requests at once."
        echo
        OUT=$WORK/runs loadtest/gpu/bench.sh table
        echo
        echo "Predicted for the anchor workload: docs/benchmarks.md (the per-step model)."
      } > "$section" 2>> "$WORK/table.log"
      ;;
    *)
      echo "unknown step $1" >&2
      return 2
      ;;
  esac
}

if [ "${1:-}" = --step ]; then
  run_step "$2"
  exit $?
fi

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
  export RANDOM_ROWS=8 G=2 TOKENS=8 CONCURRENCY=1
  export BENCH_FLAGS="--rows 4 --vocab 3000 --contexts 16,64 --iterations 2"
else
  export STAGE=${STAGE:-/root/entroll-stage} DEVICE=cuda PYTHON=${PYTHON:-python3}
  export ENTROLL_BIN=${ENTROLL_BIN:-$STAGE/entroll} LOADTEST_BIN=${LOADTEST_BIN:-$STAGE/loadtest}
  export RANDOM_ROWS=64 G=8 TOKENS=256 CONCURRENCY=4
  export BENCH_FLAGS="--rows 256 --vocab 151936 --contexts 256,1024,4096 --iterations 20"
  [ $# -ge 1 ] && loadtest/gpu/bench.sh stage "$1"
  cuda_library_path
fi
export OUT=${OUT:-$STAGE/out}
mkdir -p "$OUT"
# Everything but the two files lands here; bench.sh writes its runs to $WORK/runs.
WORK=$(mktemp -d)
export WORK MODEL=$STAGE/qwen2-1.5b-random
report=$OUT/report.md

steps=(environment:30 prepare:150 kernels:90 harness:120 kernels-on:180 kernels-off:150
  transformers:120 table:30)
titles=([0]="The GPU and the libraries" [1]="The checkpoint" [2]="The kernels alone"
  [3]="The statistics kernel against its CPU harness and the host sampler"
  [4]="Device kernels on: consistency and throughput"
  [5]="Device kernels off: consistency against the kernels-on answer, and throughput"
  [6]="transformers' generate" [7]="Throughput")
results=()
failed=0

# The report and the archive, whatever happened (also on an interrupt).
finish() {
  {
    echo "# entroll device check ($(date -u +%F), device $DEVICE)"
    echo
    echo "| step | result | seconds (limit) |"
    echo "|---|---|---|"
    printf '%s\n' "${results[@]}"
    local i=0
    for entry in "${steps[@]}"; do
      local name=${entry%%:*}
      if [ -s "$WORK/$name.md" ]; then
        echo
        echo "## $((i + 1)). ${titles[$i]}"
        echo
        cat "$WORK/$name.md"
      fi
      i=$((i + 1))
    done
  } > "$report"
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" . 2>/dev/null
  cat "$report"
}
trap finish EXIT
trap 'exit 1' INT TERM

for entry in "${steps[@]}"; do
  name=${entry%%:*} limit=${entry##*:}
  started=$(date +%s)
  timeout -k 10 "$limit" "$self" --step "$name" > "$WORK/$name.log" 2>&1
  status=$?
  took=$(($(date +%s) - started))
  case $status in
    0) result=ok ;;
    124 | 137) result="**out of time**" ;;
    *) result="**failed** (exit $status)" ;;
  esac
  results+=("| $name | $result | $took ($limit) |")
  echo "check.sh: $name: $result in $took s" >&2
  if [ "$status" -ne 0 ]; then
    failed=1
    # Without its libraries or its binary nothing after can run: report now.
    [ "$name" = environment ] && break
  fi
done
exit "$failed"
