"""The learning demo's task and figures: the generated arithmetic problems against an
independent evaluation of their text, and the table's windows over runs."""

import json
import os
import re
import sys
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entroll_learner import arithmetic, learning  # noqa: E402

QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")


@pytest.mark.parametrize("level", arithmetic.LEVELS)
def test_answers_are_the_questions_values(level):
    rows = arithmetic.generate(300, seed=3, level=level)
    ops = set()
    for row in rows:
        a, op, b = QUESTION.fullmatch(row["question"]).groups()
        ops.add(op)
        # The question's own text, evaluated apart from the generator.
        assert int(row["answer"]) == eval(f"{int(a)} {op} {int(b)}")
    assert ops == {1: {"+"}, 2: {"+"}, 3: {"+", "-"}}.get(level, {"+", "-", "*"})


@pytest.mark.parametrize("level", [1, 3])
def test_same_seed_same_problems_and_held_out_questions_are_never_trained_on(level):
    train = arithmetic.generate(2000, seed=0, level=level)
    assert train == arithmetic.generate(2000, seed=0, level=level)
    assert train != arithmetic.generate(2000, seed=1, level=level)
    held = arithmetic.generate(100, seed=0, level=level, held=True)
    questions = [r["question"] for r in held]
    assert len(set(questions)) == len(questions)
    assert {r["question"] for r in train}.isdisjoint(questions)
    if level == 1:
        # Every held-out question of the level's 180, found apart from the generator.
        pool = {f"What is {a} + {b}?" for a in range(1, 21) for b in range(1, 10)}
        assert set(questions) == {q for q in pool if zlib.crc32(q.encode()) % 5 == 0}
        assert 20 < len(questions) < 60
    else:
        assert len(questions) == 100
    with pytest.raises(ValueError):
        arithmetic.generate(1, seed=0, level=6)


def test_table_windows_are_over_the_first_and_last_five_steps(tmp_path):
    def evaluation(pass1):
        return {"k": 4, "overall": {"problems": 8, "pass@1": pass1, "pass@4": 2 * pass1, "entropy_mean": 0.5}}

    (tmp_path / "before.json").write_text(json.dumps(evaluation(0.1)))
    for seed, shift in [(0, 0.0), (1, 0.1)]:
        run = tmp_path / "runs" / f"drgrpo-s{seed}"
        run.mkdir(parents=True)
        steps = [
            {"step": i, "pass_rate": i / 10 + shift, "entropy_mean": 1.0 - i / 10, "top_p_entropy_mean": 0.5}
            for i in range(1, 8)
        ]
        (run / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
        (run / "after.json").write_text(json.dumps(evaluation(0.2 + shift)))
        (run / "seconds").write_text("120")
    before, runs = learning.load(str(tmp_path))
    row = learning.table(before, runs).splitlines()[2].split(" | ")
    # Steps 1-5 average 0.3 (seed 0) and 0.4 (seed 1); steps 3-7 average 0.5 and 0.6.
    assert row[3] == "0.350 (0.300–0.400) → 0.550 (0.500–0.600)"
    assert row[6] == "0.250 (0.200–0.300)"
    assert row[9].startswith("2.0")


def test_updates_table_reports_each_terms_gradient_norm_and_the_drift():
    def step(i, g_pg, g_term, drift, clipped):
        return {"step": i, "grad_norm_policy": g_pg, "grad_norm_entropy_term": g_term, "ratio_drift_max": drift, "clip_fraction": clipped}

    runs = {
        "siren": [{"seed": 0, "steps": [step(1, 2.0, 1.0, 0.01, 0.0), step(2, 4.0, 0.4, 0.03, 0.1), step(3, 1.0, 0.3, 0.02, 0.2)]}],
        "drgrpo": [{"seed": 1, "steps": [step(1, 3.0, 0.0, 0.05, 0.3)]}],
    }
    rows = learning.updates_table(runs).splitlines()
    assert rows[2].split(" | ")[0] == "| Dr.GRPO s1" and rows[2].split(" | ")[3] == "–"
    siren = rows[3].split(" | ")
    # Medians: policy 2.0, entropy term 0.4; ratios 0.5, 0.1, 0.3 -> median 0.3.
    assert siren[2:6] == ["2", "0.4", "0.3 (0.1–0.5)", "0.03"]
    assert siren[6] == "10.00% |"
