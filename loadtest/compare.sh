#!/usr/bin/env bash
# Rollout throughput of several server configurations on the same binary, model, prompts and
# load, one after the other in one run, with ratios to the first.
#
#   loadtest/compare.sh [loadtest flags...]
#
# CONFIGS lists the configurations as `label=server flags`, separated by `;`. The default
# compares the native engine with all statistics, the native engine drawing without
# statistics, and mistral.rs with all statistics:
#   CONFIGS='native=--engine native;native-nostats=--engine native --sampler engine;mistralrs=--engine mistralrs'
# Flags that start with `@PATH ` run the entroll binary at PATH instead of this tree's (an A/B
# of two builds on the same load): `CONFIGS='before=@/tmp/entroll-old --engine native;after=--engine native'`.
# Needs the default model (`cargo run -- fetch-model`). Prints a line per configuration and the
# ratios; the full JSON reports (with the server's step breakdown) stay in $OUT (default: a
# temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
PROFILE=${PROFILE:-release}
DATASET=${DATASET:-datasets/gsm8k_test.jsonl}
CONFIGS=${CONFIGS:-"native=--engine native;native-nostats=--engine native --sampler engine;mistralrs=--engine mistralrs"}
# BUILT=1: the binaries are built already (with PROFILE=dev, `scripts/test`'s build serves:
# building one package here would resolve other features and rebuild mistral.rs and candle).
[ -n "${BUILT:-}" ] || cargo build --quiet --profile "$PROFILE" -p entroll -p loadtest --bins
target=${CARGO_TARGET_DIR:-target}
dir=$target/$PROFILE; [ "$PROFILE" = dev ] && dir=$target/debug
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

run() { # label "server flags" loadtest-flags...
  local label=$1 flags=$2 bin=$dir/entroll; shift 2
  if [[ $flags == @* ]]; then bin=${flags%% *}; bin=${bin#@}; flags=${flags#* }; fi
  # shellcheck disable=SC2086
  start_entroll "$bin" "$out/$label.log" $flags || exit 1
  "$dir/loadtest" --url "$ENTROLL_URL" --dataset "$DATASET" --label "$label" --quiet \
      --output "$out/$label.json" "$@" > /dev/null
  stop_entroll "$ENTROLL_PID"
}

labels=()
IFS=';' read -ra configs <<< "$CONFIGS"
for config in "${configs[@]}"; do
  label=${config%%=*}
  run "$label" "${config#*=}" "$@"
  labels+=("$label")
done
python3 - "$out" "${labels[@]}" <<'PY'
import json, sys, os
d, labels = sys.argv[1], sys.argv[2:]
reports = [json.load(open(os.path.join(d, f"{n}.json"))) for n in labels]
base = reports[0]["tokens_per_s"]
for r in reports:
    print(f"{r['label']:16s} {r['tokens_per_s']:8.1f} tok/s  {r['samples_per_s']:6.2f} samples/s  "
          f"p50 {r['latency_p50_s']:.2f}s  p99 {r['latency_p99_s']:.2f}s  "
          f"tokens {r['generated_tokens']}  ratio to {labels[0]} {r['tokens_per_s'] / base:.3f}")
PY
