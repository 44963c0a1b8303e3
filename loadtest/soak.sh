#!/usr/bin/env bash
# Soak and overload run: one server on the default model, small limits, and a mix of normal,
# oversized, disconnecting and deadline requests from more clients than it admits, for
# DURATION seconds. Fails if any request gets an answer a correct server would not give, if
# resident memory grows by more than MAX_GROWTH_MIB (default 64) after the first tenth of the
# run, if the server is unhealthy afterwards, or if it does not exit 0 on SIGTERM.
#
#   DURATION=1800 loadtest/soak.sh            # the 30-minute soak of docs/reliability.md
#   DURATION=20 loadtest/soak.sh  # the smoke run in scripts/test (with BUILT=1)
#
# Extra arguments go to the load generator. The report lands in $OUT (default target/soak).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
DURATION=${DURATION:-60}
DATASET=${DATASET:-datasets/gsm8k_test.jsonl}
OUT=${OUT:-target/soak}
mkdir -p "$OUT"
# BUILT=1: the binaries are built already (scripts/test builds them once, with the tests).
[ -n "${BUILT:-}" ] || cargo build --quiet --profile "$PROFILE" -p entroll -p loadtest --bins
target=${CARGO_TARGET_DIR:-target}
dir=$target/$PROFILE; [ "$PROFILE" = dev ] && dir=$target/debug

"$dir/entroll" serve --port 0 --max-requests 4 --max-running-sequences 4 \
    --max-body-bytes 1048576 --shutdown-grace-ms 10000 > "$OUT/server.stdout" 2> "$OUT/server.log" &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -q "listening on" "$OUT/server.stdout" 2>/dev/null && break; sleep 0.2; done
url=$(sed -n 's/^entroll listening on //p' "$OUT/server.stdout")
[ -n "$url" ] || { cat "$OUT/server.log" >&2; exit 1; }

"$dir/loadtest" --url "$url" --dataset "$DATASET" --label soak --quiet --requests 0 \
    --duration "$DURATION" --concurrency 6 --backoff-ms 500 --prompts-per-request 1 --group-size 2 \
    --max-tokens 16 --mix normal=4,oversized=1,disconnect=3,deadline=2 \
    --scrape-every "$(( DURATION >= 300 ? 30 : 2 ))" --output "$OUT/report.json" "$@" > /dev/null

# Still healthy, and idle again once the abandoned sequences are gone.
python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=10)' "$url"
python3 - "$OUT/report.json" "${MAX_GROWTH_MIB:-64}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bound = float(sys.argv[2])
m = r["memory"]
print(f"{r['wall_s']:.0f} s: {sum(sum(o.values()) for o in r['outcomes'].values())} requests, "
      f"unexpected {r['requests_unexpected']}")
for kind, outcomes in r["outcomes"].items():
    print(f"  {kind:10s} " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
print(f"  server: {r['server']['generated_tokens']:.0f} tokens, "
      f"{r['server']['sequences_cancelled']:.0f} sequences cancelled")
print(f"  resident memory: start {m['start_bytes']/2**20:.0f} MiB, end {m['end_bytes']/2**20:.0f} MiB, "
      f"max {m['max_bytes']/2**20:.0f} MiB, growth after warm-up {m['growth_after_warmup_bytes']/2**20:+.1f} MiB")
assert m["growth_after_warmup_bytes"] <= bound * 2**20, f"memory grew more than {bound} MiB after warm-up"
# Normal requests were served and oversized ones refused, not only answered 429 (which every
# kind allows): a server that refuses everything as overloaded fails here. (Whether a
# disconnect or a deadline ends first depends on the load: they are counted, not required.)
for kind, wanted in {"normal": "200", "oversized": "413 validation"}.items():
    n = r["outcomes"].get(kind, {}).get(wanted, 0)
    assert n > 0, f"no {kind} request ended {wanted}: {r['outcomes'].get(kind)}"
    print(f"  {kind}: {n} ended {wanted}")
PY
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
trap - EXIT
[ "$status" -eq 0 ] || { echo "entroll exited with $status on SIGTERM" >&2; exit 1; }
echo "SIGTERM: exit 0"
