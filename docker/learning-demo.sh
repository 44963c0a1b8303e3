#!/usr/bin/env bash
# The learning demo: Dr.GRPO (no entropy term), SIREN and AER train the default model
# (SmolLM2-135M-Instruct, safetensors) through entroll on generated arithmetic, a task it starts
# on between 10% and 70%. The initial policy and each trained one are evaluated with
# `entroll eval` on held-out problems of the same task; then one plot and one table.
#
#   docker/learning-demo.sh                          # the run in docs/learning.md
#   STEPS=4 SEEDS=0 docker/learning-demo.sh          # a quick look
#
# Settings (environment): STEPS learner steps per run; SEEDS the learner seeds (each method runs
# once per seed; the problems and the evaluation are the same for all); LEVEL the task's
# difficulty (docker/learner/entroll_learner/arithmetic.py); TRAIN the training problems;
# HELDOUT the most held-out questions (distinct, never trained on; level 1 has 43); K samples
# per held-out question; MAX_TOKENS per sample; LEARNER_ARGS more learner flags.
# Output in $OUT (default target/learning-demo): data/, before.json, runs/<method>-s<seed>/
# (steps.jsonl, after.json, entroll.log), training.png, results.md; with DOCS set, the plot and
# the table are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh
keys_on  # entroll requires keys; the learner and `entroll eval` send them
STEPS=${STEPS:-18}
SEEDS=${SEEDS:-0 1}
METHODS=${METHODS:-drgrpo siren aer}
LEVEL=${LEVEL:-1}
TRAIN=${TRAIN:-2000}
HELDOUT=${HELDOUT:-100}
K=${K:-8}
MAX_TOKENS=${MAX_TOKENS:-32}
# At temperature 1 the 135M model answers almost nothing; at 0.5 about 20% of level 1.
TEMPERATURE=${TEMPERATURE:-0.5}
PROFILE=${PROFILE:-release}
OUT=$(realpath -m "${OUT:-target/learning-demo}")
# Nothing after the question: the model answers in its own words and the verifier reads the
# last number (an instruction to box the answer lowered its pass rate).
INSTRUCTION=${INSTRUCTION:-}
# SIREN's beta and AER's controller are set for this task (docs/learning.md says why). One
# update per step, as the runs before; `--mini-batches 4` took about as long a step here
# (docs/learning.md).
# Each term's gradient norm every third step (steps 1, 4, ..., 16): each costs a second backward
# pass, about 25 s here.
read -r -a extra <<< "${LEARNER_ARGS:---prompts-per-step 4 --group-size 8 --lr 2e-5 --beta 1 --aer-alpha 0.005 --aer-eta 0.1 --aer-alpha-max 1 --grad-norms-every 3}"

learner_setup
python=$PYTHON model=$MODEL bin=$ENTROLL_BIN
rm -rf "$OUT"; mkdir -p "$OUT/data" "$OUT/runs"

(cd docker/learner && "$python" -m entroll_learner.arithmetic --level "$LEVEL" --count "$TRAIN" --out "$OUT/data/train.jsonl" \
  && "$python" -m entroll_learner.arithmetic --level "$LEVEL" --count "$HELDOUT" --held-out --out "$OUT/data/heldout.jsonl")

# evaluate URL FILE: the held-out problems, K samples each, the same seeds every time.
evaluate() {
  "$bin" eval --url "$1" --dataset "$OUT/data/heldout.jsonl" --k "$K" --max-tokens "$MAX_TOKENS" \
    --temperature "$TEMPERATURE" --seed 1000 --concurrency 8 --instruction "$INSTRUCTION" --output "$2"
}

stop() { [ -z "${ENTROLL_PID:-}" ] || stop_entroll "$ENTROLL_PID"; }
trap stop EXIT

echo "== the initial policy on $HELDOUT held-out problems" >&2
start_entroll "$bin" "$OUT/entroll-before.log" --model "$model"
evaluate "$ENTROLL_URL" "$OUT/before.json"
stop

for seed in $SEEDS; do
  for method in $METHODS; do
    run=$OUT/runs/$method-s$seed
    mkdir -p "$run"
    echo "== $method, seed $seed: $STEPS steps" >&2
    start=$SECONDS
    mkdir -p "$OUT/checkpoints"  # POST /weights loads only from there (weights_root)
    start_entroll "$bin" "$run/entroll.log" --model "$model" --weights-root "$OUT/checkpoints"
    (cd docker/learner && "$python" -m entroll_learner.train --url "$ENTROLL_URL" --method "$method" \
        --steps "$STEPS" --seed "$seed" --dataset "$OUT/data/train.jsonl" --model-dir "$model" \
        --checkpoints "$OUT/checkpoints" --out "$run" --max-tokens "$MAX_TOKENS" --temperature "$TEMPERATURE" \
        --instruction "$INSTRUCTION" "${extra[@]}" > "$run/train.log")
    evaluate "$ENTROLL_URL" "$run/after.json"
    stop
    echo $((SECONDS - start)) > "$run/seconds"
    rm -rf "$OUT/checkpoints"
  done
done

(cd docker/learner && "$python" -m entroll_learner.learning "$OUT" --png "$OUT/training.png" --table "$OUT/results.md")
if [ -n "${DOCS:-}" ]; then
  mkdir -p "$DOCS"
  cp "$OUT/training.png" "$DOCS/training.png"
  cp "$OUT/results.md" "$DOCS/results.md"
fi
