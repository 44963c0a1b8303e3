#!/usr/bin/env bash
# Runs entroll's throughput benchmark on a GPU machine, from the parts loadtest/gpu/ship.sh
# staged. Results (one JSON report per run, and a markdown table) go to $OUT.
#
#   loadtest/gpu/bench.sh stage target/ship/partN   # once per carried part
#   loadtest/gpu/bench.sh prepare                   # unpack; make the Qwen2-1.5B-shaped model
#   loadtest/gpu/bench.sh run MODEL G MAX_TOKENS CONCURRENCY [CONFIGS]
#   loadtest/gpu/bench.sh baseline MODEL G MAX_TOKENS BATCH_PROMPTS
#   loadtest/gpu/bench.sh table                     # $OUT/*.json → $OUT/table.md
#
# MODEL is `smollm2` (the default GGUF) or `qwen2-1.5b` (a Qwen2-1.5B-shaped checkpoint with
# random bf16 weights and the real 151,936-token Qwen tokenizer: throughput does not depend on
# the weights' values, the statistics' cost does depend on the vocabulary). CONFIGS as in
# loadtest/compare.sh; default: native with all statistics, native without, mistral.rs.
# Environment: STAGE (default /root/entroll-stage), DEVICE (cuda), ENTROLL_BIN and LOADTEST_BIN
# (default: the staged binaries), PYTHON (python3 with torch and transformers), OUT, QWEN_SHAPE
# (`tiny` for a smoke run on CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
source loadtest/lib.sh
STAGE=${STAGE:-/root/entroll-stage}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$STAGE/out}
ENTROLL_BIN=${ENTROLL_BIN:-$STAGE/entroll}
LOADTEST_BIN=${LOADTEST_BIN:-$STAGE/loadtest}
# GSM8K problems (MIT), from the repository (only the working tree travels to the GPU machine).
DATASET=${DATASET:-$(pwd)/docker/learner/data/gsm8k-sample.jsonl}
mkdir -p "$STAGE" "$OUT"
[ "$DEVICE" = cpu ] || cuda_library_path

model_path() {
  case $1 in
    smollm2) echo "$STAGE/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    qwen2-1.5b) echo "$STAGE/qwen2-1.5b-random" ;;
    *) echo "unknown model $1 (smollm2 or qwen2-1.5b)" >&2; exit 2 ;;
  esac
}

cmd=${1:-}
shift || true
case $cmd in
  stage)
    cp -r "$1"/. "$STAGE/"
    ;;
  prepare)
    [ -f "$STAGE/entroll.xz" ] && xz -d -f "$STAGE/entroll.xz" && chmod +x "$STAGE/entroll"
    [ -f "$STAGE/loadtest.xz" ] && xz -d -f "$STAGE/loadtest.xz" && chmod +x "$STAGE/loadtest"
    gguf=$(model_path smollm2)
    if ls "$STAGE"/model.gguf.part* >/dev/null 2>&1; then
      cat "$STAGE"/model.gguf.part* > "$gguf"
      rm "$STAGE"/model.gguf.part*
    fi
    # The GGUF is optional (check.sh runs on the Qwen2-shaped model alone).
    [ ! -f "$gguf" ] || [ ! -f "$STAGE/model.sha256" ] ||
      [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$(cat "$STAGE/model.sha256")" ] ||
      { echo "the joined GGUF does not match its checksum" >&2; exit 1; }
    qwen=$(model_path qwen2-1.5b)
    [ -f "$qwen/config.json" ] ||
      (cd docker/learner && "$PYTHON" -m entroll_learner.checkpoints random qwen2 \
          "$STAGE/qwen-tokenizer" "$qwen" --shape "${QWEN_SHAPE:-qwen2-1.5b}")
    ;;
  run)
    model=$1 g=$2 tokens=$3 conc=$4
    configs=${5:-"native=--engine native;native-nostats=--engine native --sampler engine;mistralrs=--engine mistralrs"}
    IFS=';' read -ra list <<< "$configs"
    # Every configuration is tried (one that fails says so and leaves the others their run);
    # the step fails if any did.
    failures=0
    for config in "${list[@]}"; do
      label=${config%%=*}
      name="$model-G$g-T$tokens-C$conc-$label"
      # shellcheck disable=SC2086
      if ! start_entroll "$ENTROLL_BIN" "$OUT/$name.log" --device "$DEVICE" \
          --model "$(model_path "$model")" --max-running-sequences 256 --max-requests 256 \
          --max-group-size 64 ${config#*=}; then
        echo "$name: the server did not start" >&2
        failures=$((failures + 1))
        continue
      fi
      # Saturating loads send many requests at once; each request is 8 prompts × G samples.
      if ! "$LOADTEST_BIN" --url "$ENTROLL_URL" --dataset "$DATASET" --label "$name" --quiet \
          --prompts-per-request 8 --group-size "$g" --max-tokens "$tokens" \
          --concurrency "$conc" --requests "$((conc * 2))" --output "$OUT/$name.json" > /dev/null; then
        echo "$name: load generator failed" >&2
        failures=$((failures + 1))
      fi
      stop_entroll "$ENTROLL_PID"
    done
    [ "$failures" -eq 0 ] || { echo "bench.sh run: $failures of ${#list[@]} configurations failed" >&2; exit 1; }
    ;;
  baseline)
    model=$1 g=$2 tokens=$3 batch=$4
    path=$(model_path "$model")
    [ -d "$path" ] || { echo "the transformers baseline needs a safetensors directory" >&2; exit 2; }
    "$PYTHON" loadtest/baseline/transformers_generate.py --model "$path" --dataset "$DATASET" \
        --prompts "$((batch * 2))" --group-size "$g" --max-tokens "$tokens" \
        --batch-prompts "$batch" --device "$DEVICE" --dtype bfloat16 \
        --output "$OUT/$model-G$g-T$tokens-B$batch-transformers.json"
    ;;
  table)
    "$PYTHON" - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    r = json.load(open(path))
    name = os.path.basename(path)[:-5]
    tps = r.get("tokens_per_s")
    step = (r.get("server") or {}).get("decode_step_ms") or {}
    rows.append(f"| {name} | {tps:.0f} | " + " | ".join(f"{step.get(k, float('nan')):.2f}" for k in ("forward", "copy", "draw")) + " |")
table = "| run | tok/s | forward ms/step | copy ms/step | draw ms/step |\n|---|---|---|---|---|\n" + "\n".join(rows)
open(os.path.join(out, "table.md"), "w").write(table + "\n")
print(table)
# A table with no run, or a run that generated nothing, measured nothing.
assert rows, f"no run in {out}"
idle = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(out, "*.json")))
        if not (json.load(open(p)).get("tokens_per_s") or 0) > 0]
assert not idle, f"runs without throughput: {idle}"
PY
    ;;
  *)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
