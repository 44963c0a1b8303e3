"""Arithmetic problems of a chosen difficulty, generated from a seed: a task on which a small
model starts neither at 0% nor at 100%, so that training has a signal to follow.

    python -m entroll_learner.arithmetic --seed 0 --count 2000 --level 2 --out train.jsonl

Each line is `{"id", "question", "answer"}`, the format `entroll eval` and the learner read.
Levels (operands drawn uniformly):
  1: a + b, a and b of one or two digits
  2: a + b or a - b, two-digit operands
  3: a + b, a - b or a * b, two-digit operands (products of a two-digit and a one-digit number)
  4: like 3, with three-digit sums and differences
The same seed, count and level always give the same problems; `--skip N` draws and drops the
first N, so a held-out set (`--skip` = the training count) shares no draw with the training set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys


def problem(rng: random.Random, level: int) -> tuple[str, int]:
    """One question and its answer."""
    if level == 1:
        a, b = rng.randint(1, 99), rng.randint(1, 9 if rng.random() < 0.5 else 99)
        return f"What is {a} + {b}?", a + b
    ops = ["+", "-"] if level == 2 else ["+", "-", "*"]
    op = rng.choice(ops)
    high = 999 if level >= 4 else 99
    if op == "*":
        a, b = rng.randint(11, 99), rng.randint(2, 9)
        return f"What is {a} * {b}?", a * b
    a, b = rng.randint(10, high), rng.randint(10, high)
    if op == "-":
        return f"What is {a} - {b}?", a - b
    return f"What is {a} + {b}?", a + b


def generate(count: int, seed: int, level: int, skip: int = 0) -> list[dict]:
    """`count` problems after the first `skip` of this seed and level."""
    if level not in (1, 2, 3, 4):
        raise ValueError(f"level {level} is not one of 1-4")
    rng = random.Random(seed * 10 + level)
    rows = []
    for i in range(skip + count):
        question, answer = problem(rng, level)
        if i >= skip:
            rows.append({"id": f"L{level}-{i}", "question": question, "answer": str(answer)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate arithmetic problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--level", type=int, default=2)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    with open(args.out, "w") as f:
        for row in generate(args.count, args.seed, args.level, args.skip):
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
