#!/usr/bin/env bash
# The scale test: three entroll replicas behind HAProxy (configs/haproxy.cfg, Debian's haproxy)
# on this machine, the load generator sending through the balancer and retrying what a client
# may retry (429, 502-504, a cut connection). Mid-run a new weights version is published in the
# replicas' shared `watch_weights` directory, one replica is killed (SIGKILL) and another
# stopped (SIGTERM). The same load first runs against one replica alone.
#
#   loadtest/scale.sh            # the default model (safetensors, from scripts/learner-env)
#   SMOKE=1 loadtest/scale.sh    # the tiny random Llama and a short load (scripts/test runs it)
#
# Prints one JSON report (also $OUT/scale.json): requests sent, completed and lost, retries,
# throughput with three replicas vs one, seconds until every live replica served the new
# version, requests by version and requests that mixed versions. Exits 1 if a request was lost,
# a request mixed versions, the stopped replica did not exit 0, or the replicas answered a
# caller without a key (they run with keys: loadtest/lib.sh's keys_on).
# BUILT=1: the binaries are built already (scripts/test builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
keys_on  # the replicas require keys; the load generator and the checks below send them
PROFILE=${PROFILE:-release}
[ -n "${BUILT:-}" ] || cargo build --quiet --profile "$PROFILE" -p entroll -p loadtest --bins
target=${CARGO_TARGET_DIR:-target}
dir=$target/$PROFILE; [ "$PROFILE" = dev ] && dir=$target/debug
bin=$dir/entroll
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
command -v haproxy >/dev/null || { echo "haproxy is required (Debian's haproxy package)" >&2; exit 1; }
trap 'kill -9 $(jobs -p) 2>/dev/null || true' EXIT

models=$(dirname "$("$bin" fetch-model)")
if [ "${SMOKE:-0}" = 1 ]; then
  model=$models/tiny-random-llama
  # For 10 s, past the stop at 6 s however fast the machine: the kill and the stop must land
  # while requests run (checked below).
  load=(--prompts-per-request 1 --group-size 2 --max-tokens 48 --concurrency 4 --requests 0 --duration 10)
  at=(2 4 6)     # seconds into the run: publish, kill, stop
else
  model=$models/SmolLM2-135M-Instruct-hf
  load=(--prompts-per-request 1 --group-size 4 --max-tokens 64 --concurrency 6 --requests 72)
  at=(20 40 60)
fi
[ -f "$model/config.json" ] || { echo "$model is missing: run scripts/learner-env" >&2; exit 1; }
weights=$out/weights
rm -rf "$weights"; mkdir -p "$weights"
common=(--model "$model" --watch-weights "$weights" --watch-interval-ms 200
        --shutdown-announce-ms 3000 --max-running-sequences 16)
# The load generator exits 1 when an answer was not a complete 200; its report says which, and
# its exit status is checked with the report below.
run_load() { # label url
  local status=0
  "$dir/loadtest" --url "$2" --dataset datasets/gsm8k_test.jsonl --label "$1" --quiet \
      --retries 20 --backoff-ms 250 --scrape-every 1 "${load[@]}" --output "$out/$1.json" \
      > /dev/null 2> "$out/$1.err" || status=$?
  echo "$status" > "$out/$1.exit"
}

# One replica alone, the same load.
start_entroll "$bin" "$out/single.log" "${common[@]}"
run_load single "$ENTROLL_URL"
stop_entroll "$ENTROLL_PID"

# Three replicas and the balancer.
mapfile -t ports < <(free_ports 4)
pids=() urls=()
for i in 1 2 3; do
  PORT=${ports[$i]} start_entroll "$bin" "$out/replica$i.log" "${common[@]}"
  pids+=("$ENTROLL_PID") urls+=("$ENTROLL_URL")
done
ENTROLL_LB_BIND=127.0.0.1:${ports[0]} ENTROLL_REPLICA_1=127.0.0.1:${ports[1]} \
ENTROLL_REPLICA_2=127.0.0.1:${ports[2]} ENTROLL_REPLICA_3=127.0.0.1:${ports[3]} \
  haproxy -db -f configs/haproxy.cfg > "$out/haproxy.log" 2>&1 &
balancer=$!
lb=http://127.0.0.1:${ports[0]}
for _ in $(seq 100); do curl -sf "$lb/health" > /dev/null && break; sleep 0.1; done
sleep 2   # every replica's first health check

run_load replicas "$lb" &
load_pid=$!
started=$(date +%s.%N)
wait_until() { sleep "$(python3 -c "import sys,time; print(max(0, $started + $1 - time.time()))")"; }

# A new version: its files (links to the served checkpoint), then READY.
wait_until "${at[0]}"
mkdir -p "$weights/1"
for f in "$model"/*; do ln -s "$f" "$weights/1/"; done
published=$(date +%s.%N)
touch "$weights/1/READY"
propagation=null
for _ in $(seq 600); do
  all=1
  for url in "${urls[@]}"; do
    v=$(curl -sf -H "Authorization: Bearer $ENTROLL_API_KEY" "$url/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["weights_version"])' || echo gone)
    [ "$v" = 1 ] || all=0
  done
  if [ "$all" = 1 ]; then
    propagation=$(python3 -c "print(round($(date +%s.%N) - $published, 2))")
    break
  fi
  sleep 0.05
done

# Keys are on through the balancer: no key is 401, the API key may not steer (403).
unkeyed_status=$(keyed_status "$lb/info")
api_key_on_weights=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ENTROLL_API_KEY" \
  -H 'content-type: application/json' -d '{"path": "/", "version": 9}' "$lb/weights")

# Whether the load was still running: a kill or a stop after it ended proves nothing.
running() { kill -0 "$load_pid" 2>/dev/null && echo true || echo false; }
wait_until "${at[1]}"
load_at_kill=$(running)
kill -9 "${pids[2]}"
killed_at=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
wait_until "${at[2]}"
load_at_stop=$(running)
kill -TERM "${pids[1]}"
stopped_at=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
stopped_exit=0
wait "${pids[1]}" || stopped_exit=$?
wait "$load_pid"
kill "$balancer" 2>/dev/null || true
stop_entroll "${pids[0]}"

python3 - "$out" "$propagation" "$killed_at" "$stopped_at" "$stopped_exit" "$load_at_kill" "$load_at_stop" \
  "$unkeyed_status" "$api_key_on_weights" <<'PY' | tee "$out/scale.json"
import json, os, sys
out, propagation, killed, stopped, stopped_exit, load_at_kill, load_at_stop, unkeyed, api_on_weights = sys.argv[1:]
single = json.load(open(os.path.join(out, "single.json")))
# HAProxy's HTTP log: ".../srv_conn/retries queues "METHOD path"; a '+' marks a redispatch.
import re
log = open(os.path.join(out, "haproxy.log")).read()
retried = sum(int(m.group(1)) > 0 for m in re.finditer(r'/\+?(\d+) \d+/\d+ "POST /rollouts', log))
many = json.load(open(os.path.join(out, "replicas.json")))
sent_by = lambda r: sum(sum(o.values()) for o in r["outcomes"].values())
exit_of = lambda label: int(open(os.path.join(out, label + ".exit")).read())
sent = sent_by(many)
report = {
    "replicas": 3,
    "requests_sent": sent,
    "requests_completed": many["requests_ok"],
    "requests_lost": sent - many["requests_ok"],
    "answers_not_a_complete_200": many["requests_unexpected"],
    "client_retries": many["retries"],
    "requests_by_weights_version": many["versions"],
    "requests_mixing_versions": many["mixed_version_requests"],
    "seconds_until_every_replica_served_the_new_version": None if propagation == "null" else float(propagation),
    "replica_killed_at_s": float(killed),
    "replica_stopped_at_s": float(stopped),
    "load_running_at_kill_and_stop": load_at_kill == "true" and load_at_stop == "true",
    "load_generator_exit_codes": [exit_of("single"), exit_of("replicas")],
    "stopped_replica_exit_code": int(stopped_exit),
    "balancer_retried_requests": retried,
    "tokens_per_s_one_replica": round(single["tokens_per_s"], 1),
    "tokens_per_s_three_replicas": round(many["tokens_per_s"], 1),
    "throughput_ratio": round(many["tokens_per_s"] / single["tokens_per_s"], 3),
    "one_replica_lost": sent_by(single) - single["requests_ok"],
    "status_without_a_key": int(unkeyed),
    "status_of_weights_with_the_api_key": int(api_on_weights),
}
print(json.dumps(report, indent=2))
checks = {
    "requests were sent": sent > 0,
    "no request lost": report["requests_lost"] == 0 and report["one_replica_lost"] == 0,
    "every answer a complete 200": report["answers_not_a_complete_200"] == 0
        and report["load_generator_exit_codes"] == [0, 0],
    "no request mixed versions": report["requests_mixing_versions"] == 0,
    "requests ran on the new version": many["versions"].get("1", 0) > 0,
    "the load ran through the kill and the stop": report["load_running_at_kill_and_stop"],
    "the stopped replica exited 0": report["stopped_replica_exit_code"] == 0,
    "every replica served the new version": report["seconds_until_every_replica_served_the_new_version"] is not None,
    "keys are required": report["status_without_a_key"] == 401 and report["status_of_weights_with_the_api_key"] == 403,
}
failed = [name for name, held in checks.items() if not held]
print(f"scale: {len(checks) - len(failed)} of {len(checks)} checks hold" + (f"; failed: {failed}" if failed else ""),
      file=sys.stderr)
sys.exit(1 if failed else 0)
PY
