#!/usr/bin/env bash
# Rollout throughput with entroll's sampler and all statistics vs mistral.rs's own sampler with
# none, on the same binary, model, prompts and load, one after the other in one run.
#
#   loadtest/compare-samplers.sh [loadtest flags...]
#
# Needs the default model (`cargo run -- fetch-model`). Prints both reports and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
DATASET=${DATASET:-../shared/datasets/gsm8k_test.jsonl}
cargo build --quiet --profile "$PROFILE" -p entroll -p loadtest --bins
target=${CARGO_TARGET_DIR:-target}
dir=$target/$PROFILE; [ "$PROFILE" = dev ] && dir=$target/debug
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

run() { # sampler label
  local fifo=$out/$1.stdout
  "$dir/entroll" serve --port 0 --sampler "$1" --exit-on-stdin-eof < <(sleep infinity) > "$fifo" 2>"$out/$1.log" &
  local pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$fifo" 2>/dev/null && break; sleep 0.2; done
  local url; url=$(sed -n 's/^entroll listening on //p' "$fifo")
  [ -n "$url" ] || { cat "$out/$1.log" >&2; exit 1; }
  "$dir/loadtest" --url "$url" --dataset "$DATASET" --label "$1" --quiet \
      --output "$out/$1.json" "${@:2}" > /dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run entroll "$@"
run engine "$@"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
a, b = (json.load(open(os.path.join(d, f"{n}.json"))) for n in ("entroll", "engine"))
for r in (a, b):
    print(f"{r['label']:8s} {r['tokens_per_s']:8.1f} tok/s  {r['samples_per_s']:6.2f} samples/s  "
          f"p50 {r['latency_p50_s']:.2f}s  p99 {r['latency_p99_s']:.2f}s  tokens {r['generated_tokens']}")
print(f"entroll (all statistics) / engine sampler (none): {a['tokens_per_s'] / b['tokens_per_s']:.3f}")
PY
