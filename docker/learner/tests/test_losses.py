"""The learner's objectives against direct implementations of their definitions."""

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entroll_learner import losses  # noqa: E402


def reference_top_p_entropy(row: np.ndarray, p: float, k: int) -> float:
    """SIREN's code path in float64: top-K, inclusive cumsum, strict `C_j < p`, renormalise."""
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    top = np.sort(probs)[::-1][:k]
    kept = top[np.cumsum(top) < p]
    if len(kept) < 2:
        return 0.0
    q = kept / kept.sum()
    return float(-(q * np.log(q)).sum())


@pytest.mark.parametrize("scale", [0.5, 2.0, 6.0])
def test_top_p_entropy_matches_the_definition(scale):
    g = torch.Generator().manual_seed(int(scale * 10))
    logits = torch.randn(16, 3000, generator=g) * scale
    got = losses.top_p_entropy(logits, p=0.8, k=10_000)
    for row, h in zip(logits.double().numpy(), got):
        assert h.item() == pytest.approx(reference_top_p_entropy(row, 0.8, 10_000), abs=1e-5)


def test_the_crossing_token_is_excluded_and_tiny_nuclei_give_zero():
    # probabilities 8/15, 4/15, 2/15, 1/15: C = 0.533, 0.8, 0.933, 1 -> at p = 0.85 the nucleus
    # is the first two (the third crosses p and is left out); at p = 0.8 only the first (C = p
    # is not below p), which gives 0.
    logits = torch.tensor([[0.0, -math.log(2), -2 * math.log(2), -3 * math.log(2), -40.0]])
    probs = torch.softmax(logits, -1)[0]
    q = probs[:2] / probs[:2].sum()
    expected = -(q * q.log()).sum().item()
    assert losses.top_p_entropy(logits, p=0.85).item() == pytest.approx(expected, abs=1e-6)
    assert losses.top_p_entropy(logits, p=0.8).item() == 0.0
    peaked = torch.tensor([[10.0, 0.0, 0.0]])  # top-1 mass >= p: empty nucleus
    assert losses.top_p_entropy(peaked, p=0.8).item() == 0.0


def test_the_entropy_gradient_stays_inside_the_nucleus():
    logits = torch.tensor([[3.0, 2.9, 2.8, 0.0, -1.0, -2.0]], requires_grad=True)
    losses.top_p_entropy(logits, p=0.8).sum().backward()
    probs = torch.softmax(logits.detach(), -1)[0]
    inside = torch.cumsum(probs, 0) < 0.8
    assert torch.all(logits.grad[0][~inside] == 0)
    assert torch.any(logits.grad[0][inside] != 0)
    assert torch.isfinite(logits.grad).all()


def test_full_entropy_and_logprobs():
    logits = torch.randn(4, 50)
    p = torch.softmax(logits, -1)
    assert torch.allclose(losses.full_entropy(logits), -(p * p.log()).sum(-1), atol=1e-5)
    tokens = torch.tensor([1, 2, 3, 4])
    assert torch.allclose(losses.token_logprobs(logits, tokens), p[range(4), tokens].log(), atol=1e-5)


def test_peak_mask_is_strict_and_per_response():
    values = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    mask = losses.peak_mask(values, 0.8)
    # numpy's linear quantile: position 0.8 * 5 = 4 -> 1.0; strictly above it: only 2.0.
    assert mask.tolist() == [False, False, False, False, False, True]
    assert not losses.peak_mask(torch.tensor([3.0])).any()
    assert not losses.peak_mask(torch.ones(5)).any()


def test_policy_loss_clips_and_dual_clips():
    old = torch.zeros(3)
    new = torch.log(torch.tensor([0.5, 1.0, 2.0]))
    pos, clipped = losses.policy_loss(new, old, advantage=1.0)
    # -min(r A, clip(r) A): below 1 - eps the ratio itself counts, above 1 + eps the clip.
    assert pos.tolist() == pytest.approx([-0.5, -1.0, -1.2])
    assert clipped.tolist() == [False, False, True]
    neg, clipped = losses.policy_loss(torch.log(torch.tensor([10.0, 0.5])), torch.zeros(2), advantage=-1.0)
    assert neg.tolist() == pytest.approx([3.0, 0.8])  # capped at -A * c; 0.5 clipped up to 0.8
    assert clipped.tolist() == [False, True]


def test_micro_batches_follow_the_token_budget():
    # 280 tokens under a budget of 150: two micro-batches. Longest first, each to the lighter:
    # 100 -> a, 60 -> b, 50 -> b (110), 40 -> a (140), 30 -> b (140).
    assert losses.micro_batches([100, 60, 50, 40, 30], 150) == [[0, 3], [1, 2, 4]]
    assert losses.micro_batches([10, 20, 30], 4096) == [[0, 1, 2]]
    assert losses.micro_batches([10, 20, 30], 30) == [[0, 1], [2]]  # ceil(60 / 30) = 2
    assert losses.micro_batches([30, 30, 30], 30) == [[0], [1], [2]]
    lengths = [int(x) for x in np.random.default_rng(0).integers(20, 400, size=37)]
    batches = losses.micro_batches(lengths, 1000)
    assert sorted(i for b in batches for i in b) == list(range(37))
    assert len(batches) == math.ceil(sum(lengths) / 1000)
    with pytest.raises(ValueError):
        losses.micro_batches([10, 500], 100)


def test_siren_penalty_squares_per_micro_batch_weighted_by_share():
    h = torch.tensor([0.2, 0.4, 0.9], requires_grad=True)
    anchor = 0.5
    # One micro-batch: the square of the batch mean, which is the anchor here.
    assert losses.siren_penalty(h, [[0, 1, 2]], anchor).item() == pytest.approx(0.0, abs=1e-7)
    # One response each: the mean of the per-response squares, (0.09 + 0.01 + 0.16) / 3.
    assert losses.siren_penalty(h, [[0], [1], [2]], anchor).item() == pytest.approx(0.26 / 3)
    # Two micro-batches: 2/3 (0.3 - 0.5)^2 + 1/3 (0.9 - 0.5)^2 = 0.08.
    penalty = losses.siren_penalty(h, [[0, 1], [2]], anchor)
    assert penalty.item() == pytest.approx(0.08)
    # Its gradient against the second formula, verl's: each micro-batch's loss scaled by its
    # share and backpropagated on its own, the gradients accumulated.
    penalty.backward()
    ours = h.grad.clone()
    h.grad = None
    for batch in ([0, 1], [2]):
        part = h[batch].mean()
        (len(batch) / 3 * (part - anchor) ** 2).backward()
    assert torch.allclose(ours, h.grad)
    # By hand: 2 (H_m - a) / n for each response of micro-batch m.
    assert ours.tolist() == pytest.approx([-0.4 / 3, -0.4 / 3, 0.8 / 3])


def group(*samples):
    return {"samples": [{"token_ids": list(range(len(e))), "top_p_entropy": hp, "peak": pk, "entropy": e} for hp, pk, e in samples]}


def test_initial_anchor_is_one_mean_over_the_whole_initial_batch():
    a = ([0.1, 0.5, 0.9], [False, False, True], [1.0, 2.0, 3.0])  # peak mean 0.9
    b = ([0.2, 0.3], [False, True], [4.0, 5.0])  # 0.3
    c = ([0.0], [False], [6.0])  # no peak: counts 0
    empty = ([], [], [])  # no token, so no peak: counts 0, as entroll counts it
    anchor, h0 = losses.initial_anchor([group(a), group(b, c, empty)])
    assert anchor == pytest.approx((0.9 + 0.3 + 0.0 + 0.0) / 4)
    # Token-mean, not the mean of per-response means (2, 4.5, 6: 4.17).
    assert h0 == pytest.approx(21 / 6) and h0 != pytest.approx(12.5 / 3)
    # Not the mean of per-request anchors: the first group alone gives 0.9, the second 0.1.
    halves = [losses.initial_anchor([g])[0] for g in (group(a), group(b, c, empty))]
    assert sum(halves) / 2 == pytest.approx(0.5) and anchor != pytest.approx(0.5)
    with pytest.raises(ValueError):
        losses.initial_anchor([group(empty)])


def test_aer_controller_moves_alpha_toward_the_target():
    c = losses.AerController(rho=0.9, eta=0.1, alpha=0.01, alpha_max=1.0)
    a1 = c.observe(2.0)  # H0 = 2, target 1.8, entropy above target: alpha falls
    assert c.target == pytest.approx(1.8) and a1 < 0.01
    a2 = c.observe(1.0)  # below the target: alpha rises
    assert a2 > a1
    assert c.observe(100.0) == 0.0  # clipped at 0
    assert c.observe(-100.0) == 1.0  # and at alpha_max
    assert losses.difficulty_weight(0.25) == 0.75 and losses.difficulty_weight(None) == 1.0
    assert losses.difficulty_weight(0.4, "threshold", 0.4) == 1.0
    assert losses.difficulty_weight(0.5, "threshold", 0.4) == 0.0
    with pytest.raises(ValueError):
        losses.difficulty_weight(0.5, "cosine")
