"""Arithmetic problems of a chosen difficulty, generated from a seed: a task on which a small
model starts neither at 0% nor at 100%, so that training has a signal to follow.

    python -m entroll_learner.arithmetic --seed 0 --count 2000 --level 1 --out train.jsonl
    python -m entroll_learner.arithmetic --seed 0 --count 100 --level 1 --held-out --out heldout.jsonl

Each line is `{"id", "question", "answer"}`, the format `entroll eval` and the learner read.
Levels (operands drawn uniformly):
  1: a + b, a of 1-20 and b of 1-9 (180 questions)
  2: a + b, a and b of one or two digits
  3: a + b or a - b, two-digit operands
  4: a + b, a - b or a * b, two-digit operands (products of a two-digit and a one-digit number)
  5: like 4, with three-digit sums and differences
One question in five (by a checksum of its text) is held out: training sets never draw it, and
`--held-out` draws only those, each at most once, so an evaluation on them measures questions
the policy was never trained on. The same seed, count and level always give the same problems.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib

LEVELS = (1, 2, 3, 4, 5)


def problem(rng: random.Random, level: int) -> tuple[str, int]:
    """One question and its answer."""
    if level == 1:
        a, b = rng.randint(1, 20), rng.randint(1, 9)
        return f"What is {a} + {b}?", a + b
    if level == 2:
        a, b = rng.randint(1, 99), rng.randint(1, 9 if rng.random() < 0.5 else 99)
        return f"What is {a} + {b}?", a + b
    op = rng.choice(["+", "-"] if level == 3 else ["+", "-", "*"])
    high = 999 if level == 5 else 99
    if op == "*":
        a, b = rng.randint(11, 99), rng.randint(2, 9)
        return f"What is {a} * {b}?", a * b
    a, b = rng.randint(10, high), rng.randint(10, high)
    if op == "-":
        return f"What is {a} - {b}?", a - b
    return f"What is {a} + {b}?", a + b


def held_out(question: str) -> bool:
    """Whether a question belongs to the held-out fifth: a checksum of its text, the same in
    every process and Python version (unlike `hash`)."""
    return zlib.crc32(question.encode()) % 5 == 0


def generate(count: int, seed: int, level: int, held: bool = False) -> list[dict]:
    """`count` training problems of this seed and level (repeats allowed), or with `held` up to
    `count` distinct held-out ones (fewer when the level has fewer)."""
    if level not in LEVELS:
        raise ValueError(f"level {level} is not one of {LEVELS[0]}-{LEVELS[-1]}")
    rng = random.Random(seed * 10 + level)
    rows, seen = [], set()
    # A level's held-out questions are exhausted once this many draws in a row bring no new one.
    misses = 0
    while len(rows) < count and misses < 10_000:
        question, answer = problem(rng, level)
        if held_out(question) != held or (held and question in seen):
            misses += 1
            continue
        misses = 0
        if held:
            seen.add(question)
        rows.append({"id": f"L{level}-{'h' if held else 't'}{len(rows)}", "question": question, "answer": str(answer)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate arithmetic problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--held-out", action="store_true", help="only held-out questions, each once")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    with open(args.out, "w") as f:
        for row in generate(args.count, args.seed, args.level, args.held_out):
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
