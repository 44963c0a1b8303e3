#!/usr/bin/env bash
# What OpenAI's dialect costs over `/rollouts` on the same load: one server, the same prompts,
# group size and seeds sent to `POST /rollouts` and to `POST /v1/chat/completions` (one
# conversation a request: the same draws), in rounds that alternate which route goes first, so
# that drift in the machine falls on both alike. Prints each round's ratios and the ratios of
# the two routes' sums: throughput, and the server's CPU time per generated token (from
# /proc/PID/stat, which the client's share of the two cores does not blur as it does wall time).
#
#   ROUNDS=3 loadtest/routes.sh [loadtest flags...]
#
# Needs the default model (`cargo run -- fetch-model`) and the release build (BUILT=1 skips the
# build); the JSON reports stay in $OUT (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
DATASET=${DATASET:-datasets/gsm8k_test.jsonl}
ROUNDS=${ROUNDS:-3}
[ -n "${BUILT:-}" ] || cargo build --quiet --release -p entroll -p loadtest --bins
dir=${CARGO_TARGET_DIR:-target}/release
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

start_entroll "$dir/entroll" "$out/server.log" ${SERVER_FLAGS:-} || exit 1
cpu() { awk '{print $14 + $15}' "/proc/$ENTROLL_PID/stat"; } # the server's user + system ticks
for round in $(seq 1 "$ROUNDS"); do
  order="rollouts chat"; [ $((round % 2)) = 0 ] && order="chat rollouts"
  for api in $order; do
    before=$(cpu)
    "$dir/loadtest" --url "$ENTROLL_URL" --dataset "$DATASET" --api "$api" --prompts-per-request 1 \
        --label "$api" --quiet --output "$out/$api-$round.json" "$@" > /dev/null
    echo $(( $(cpu) - before )) > "$out/$api-$round.cpu"
  done
done
stop_entroll "$ENTROLL_PID"
python3 - "$out" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
d, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = {}
for r in range(1, rounds + 1):
    rate, cost = {}, {}
    for api in ("rollouts", "chat"):
        rep = json.load(open(os.path.join(d, f"{api}-{r}.json")))
        assert rep["requests_unexpected"] == 0, rep["unexpected_examples"]
        cpu = int(open(os.path.join(d, f"{api}-{r}.cpu")).read()) / hz
        t = total.setdefault(api, [0, 0.0, 0.0])
        t[0] += rep["generated_tokens"]; t[1] += rep["wall_s"]; t[2] += cpu
        rate[api], cost[api] = rep["tokens_per_s"], cpu / rep["generated_tokens"] * 1e3
    print(f"round {r}: throughput rollouts {rate['rollouts']:.1f}, chat {rate['chat']:.1f} tok/s "
          f"(ratio {rate['chat'] / rate['rollouts']:.4f}); server CPU rollouts {cost['rollouts']:.3f}, "
          f"chat {cost['chat']:.3f} ms/token (ratio {cost['chat'] / cost['rollouts']:.4f})")
assert total["rollouts"][0] == total["chat"][0], f"the routes drew different token counts: {total}"
rate = {api: t[0] / t[1] for api, t in total.items()}
cost = {api: t[2] / t[0] * 1e3 for api, t in total.items()}
print(f"all rounds: throughput chat / rollouts {rate['chat'] / rate['rollouts']:.4f} "
      f"({rate['rollouts']:.1f} and {rate['chat']:.1f} tok/s); server CPU per token chat / rollouts "
      f"{cost['chat'] / cost['rollouts']:.4f} ({cost['rollouts']:.3f} and {cost['chat']:.3f} ms)")
PY
