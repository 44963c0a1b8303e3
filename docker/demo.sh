#!/usr/bin/env bash
# The learner demo without Docker: for each method (SIREN, then AER) start entroll on the
# default model (converted to safetensors, weights version 0), train STEPS learner steps
# through it (rollouts -> loss -> optimizer step -> checkpoint -> POST /weights), stop it with
# SIGTERM. Then plot both runs into one PNG and check the run: every step's rollouts came from
# the weights of the step before, the served version advanced each step, the learner's float32
# recomputation agrees with entroll's statistics, and the entropy statistics changed.
#
#   docker/demo.sh                               # 5 steps of each method
#   STEPS=2 BUILT=1 docker/demo.sh               # the shortened run in scripts/test
#   LEARNER_ARGS="--group-size 8 --max-tokens 128" docker/demo.sh
#
# Output in $OUT (default target/demo): <method>/steps.jsonl, <method>/training.png,
# training.png (both methods), entroll-<method>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-5}
METHODS=${METHODS:-siren aer}
PROFILE=${PROFILE:-release}
OUT=$(realpath -m "${OUT:-target/demo}")
DATASET=$(realpath "${DATASET:-docker/learner/data/gsm8k-sample.jsonl}")
read -r -a extra <<< "${LEARNER_ARGS:-}"

source loadtest/lib.sh
keys_on  # entroll requires keys; the learner sends them (ENTROLL_API_KEY, ENTROLL_ADMIN_KEY)
learner_setup
python=$PYTHON model=$MODEL
rm -rf "$OUT"; mkdir -p "$OUT"

for method in $METHODS; do
  mkdir -p "$OUT/checkpoints"  # POST /weights loads only from there (weights_root)
  "$ENTROLL_BIN" serve --port 0 --model "$model" --weights-root "$OUT/checkpoints" > "$OUT/entroll-$method.stdout" 2> "$OUT/entroll-$method.log" &
  pid=$!
  trap 'kill -9 $pid 2>/dev/null || true' EXIT
  for _ in $(seq 600); do grep -q "listening on" "$OUT/entroll-$method.stdout" 2>/dev/null && break; sleep 0.2; done
  url=$(sed -n 's/^entroll listening on //p' "$OUT/entroll-$method.stdout")
  [ -n "$url" ] || { cat "$OUT/entroll-$method.log" >&2; exit 1; }
  echo "== $method: $STEPS steps against $url" >&2
  (cd docker/learner && "$python" -m entroll_learner.train --url "$url" --method "$method" \
      --steps "$STEPS" --dataset "$DATASET" --model-dir "$model" \
      --checkpoints "$OUT/checkpoints" --out "$OUT/$method" "${extra[@]}")
  kill -TERM "$pid"
  status=0; wait "$pid" || status=$?
  trap - EXIT
  [ "$status" -eq 0 ] || { echo "entroll exited with $status on SIGTERM" >&2; exit 1; }
done
rm -rf "$OUT/checkpoints"

logs=()
for method in $METHODS; do logs+=("$OUT/$method/steps.jsonl"); done
(cd docker/learner && "$python" -m entroll_learner.plot "${logs[@]}" --png "$OUT/training.png" > /dev/null)
"$python" - "$STEPS" "$OUT/training.png" "${logs[@]}" <<'PY'
import json, os, sys
steps, png, logs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
assert os.path.getsize(png) > 10_000, "the plot is missing"
for log in logs:
    rows = [json.loads(l) for l in open(log)]
    name = rows[0]["method"] if rows else log
    assert len(rows) == steps, f"{name}: {len(rows)} of {steps} steps logged"
    for i, r in enumerate(rows):
        assert r["rollout_weights_version"] == i, f"{name} step {r['step']}: rollouts from version {r['rollout_weights_version']}"
        assert r["served_weights_version"] == i + 1, f"{name} step {r['step']}: entroll serves {r['served_weights_version']}"
    # Every step the learner recomputes, in float32 PyTorch, the policy entroll just sampled
    # from (its own weights, served through POST /weights): the log-probs must agree, which
    # also shows the swap served exactly the saved checkpoint; SIREN's masked top-p entropy H-bar
    # over the first update's samples must equal entroll's over the same samples.
    for r in rows:
        assert r["logprob_gap"] < 1e-3, f"{name} step {r['step']}: log-probs differ by {r['logprob_gap']}"
        # With several updates per batch the later ones see a policy the earlier ones moved:
        # the ratio to entroll's behaviour log-probs drifts from 1.
        for u in (r["per_update"] or [])[1:]:
            assert u["ratio_drift"] > r["logprob_gap"], f"{name} step {r['step']}: update {u} saw no drift"
    if name == "siren":
        for r in rows:
            gap = abs(r["learner_entropy"] - r["behaviour_entropy"])
            assert gap < 1e-2, f"siren step {r['step']}: learner H-bar {r['learner_entropy']} vs entroll's {r['behaviour_entropy']}"
    entropies = [r["entropy_mean"] for r in rows]
    assert steps < 2 or len(set(entropies)) > 1, f"{name}: entropy never changed: {entropies}"
    print(f"{name}: {steps} steps, weights versions 0..{steps}, entropy "
          + " -> ".join(f"{h:.3f}" for h in entropies)
          + f", top-p entropy {rows[0]['top_p_entropy_mean']:.3f} -> {rows[-1]['top_p_entropy_mean']:.3f}")
print(f"plot: {png}")
PY
