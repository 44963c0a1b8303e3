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
# (steps.jsonl, after.json, entroll.log), training.png, results.md; with DOCS set, the runs' data
# are copied there and the plot and the table drawn from all the runs it holds.
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
if [ -n "${DOCS:-}" ]; then
  # Runs join those in $DOCS only where the initial policy's evaluation is the same one: the
  # same scores and, per problem, the same samples' outcomes, lengths and entropies: the same
  # problems, model, binary and settings, and the same CPU (on an Intel Xeon the evaluation
  # counted 80 correct samples of 344 where AMD EPYCs counted 79: docs/learning.md). The wall
  # time, the URL and the files' paths may differ.
  DOCS=$(realpath -m "$DOCS")
  same_evaluation='import json, sys
def key(path):
    r = json.load(open(path))
    return r["k"], r["sampling"], r["overall"], [d["problems"] for d in r["datasets"].values()]
sys.exit(key(sys.argv[1]) != key(sys.argv[2]))'
  if [ -f "$DOCS/before.json" ] && ! "$python" -c "$same_evaluation" "$DOCS/before.json" "$OUT/before.json"; then
    echo "learning-demo: $DOCS/before.json is another initial evaluation than this run's; move $DOCS/before.json and $DOCS/runs away to start afresh there" >&2
    exit 1
  fi
fi

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
  # The figures' data go with them (each run's steps, evaluation, anchor, wall time and commit),
  # so the plot and the table can be drawn again, and a method run later (METHODS=...) joins
  # the runs already there (checked above: the same initial evaluation).
  mkdir -p "$DOCS/runs"
  cp "$OUT/before.json" "$DOCS/before.json"
  for run in "$OUT"/runs/*-s*; do
    rm -rf "$DOCS/runs/${run##*/}"
    mkdir -p "$DOCS/runs/${run##*/}"
    cp "$run"/{steps.jsonl,after.json,seconds} "$DOCS/runs/${run##*/}/"
    [ ! -f "$run/anchor.json" ] || cp "$run/anchor.json" "$DOCS/runs/${run##*/}/"
    git rev-parse HEAD > "$DOCS/runs/${run##*/}/commit"
  done
  (cd docker/learner && "$python" -m entroll_learner.learning "$DOCS" --png "$DOCS/training.png" --table "$DOCS/results.md")
fi
