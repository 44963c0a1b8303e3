#!/usr/bin/env bash
# The verifier against Math-Verify 0.9.0 on the labelled cases, each pinned to CPU 0:
# per-file agreement with the labels, false positives, answers/s and p50/p99 latency.
#
#   verifier/bench/compare.sh [cases folder]      (default verifier/tests/cases)
#
# Installs math-verify==0.9.0 into a virtualenv under target/ the first time.
set -euo pipefail
cd "$(dirname "$0")/../.."
CASES=${1:-verifier/tests/cases}
VENV=target/mvenv
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q math-verify==0.9.0; }
cargo build --quiet --release -p verifier --example corpus
out=$(mktemp -d)
taskset -c 0 target/release/examples/corpus "$CASES" > "$out/ours.json"
taskset -c 0 "$VENV/bin/python" verifier/bench/math_verify_baseline.py "$CASES" > "$out/mv.json"
python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
ours, mv = (json.load(open(os.path.join(d, f))) for f in ("ours.json", "mv.json"))
print("| file | cases | entroll verifier | Math-Verify 0.9.0 |")
print("|---|---|---|---|")
tot = {"o": 0, "m": 0, "n": 0, "on": 0, "mn": 0, "nn": 0}
for f, (a, n) in ours["per_file"].items():
    b = mv["per_file"][f][0]
    print(f"| {f} | {n} | {100*a/n:.1f}% | {100*b/n:.1f}% |")
    tot["o"] += a; tot["m"] += b; tot["n"] += n
    if "gsm8k" not in f:
        tot["on"] += a; tot["mn"] += b; tot["nn"] += n
print(f"| **all** | {tot['n']} | **{100*tot['o']/tot['n']:.2f}%** | {100*tot['m']/tot['n']:.2f}% |")
print(f"| all but GSM8K | {tot['nn']} | **{100*tot['on']/tot['nn']:.2f}%** | {100*tot['mn']/tot['nn']:.2f}% |")
print(f"| false positives | | {ours['false_positives']} | {mv['false_positives']} |")
print()
print("| one core | answers/s | p50 | p99 |")
print("|---|---|---|---|")
for name, r in (("entroll verifier", ours), ("Math-Verify 0.9.0", mv)):
    print(f"| {name} | {r['answers_per_s']:,.0f} | {r['p50_ms']*1000:.1f} µs | {r['p99_ms']*1000:.1f} µs |")
print(f"\nthroughput ratio: {ours['answers_per_s']/mv['answers_per_s']:.0f}x")
PY
