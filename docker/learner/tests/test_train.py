"""The learner's update: each objective's aggregation over a mini-batch, by hand, and the
gradient norms of its terms against separate gradients."""

import argparse
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entroll_learner import losses, train  # noqa: E402


def terms(*rows):
    """SequenceTerms from (pg_sum, siren_mean, entropy_sum, length, sequence_tokens)."""
    return [
        losses.SequenceTerms(torch.tensor(pg), torch.tensor(h), torch.tensor(e), n, seq, 0.0, 0)
        for pg, h, e, n, seq in rows
    ]


def args(method, **kw):
    base = {"method": method, "max_tokens": 10, "beta": 2.0, "micro_batch_tokens": 100}
    return argparse.Namespace(**dict(base, **kw))


def test_siren_objective_squares_per_token_budget_micro_batch():
    batch = terms((1.0, 0.2, 0, 5, 60), (2.0, 0.4, 0, 5, 40), (3.0, 0.9, 0, 5, 90))
    pg, term, current, micro = train.objective(batch, [1, 1, 1], args("siren"), 0.5, None)
    assert pg.item() == pytest.approx(6.0 / 3 / 10)  # seq-mean of token sums over max_tokens
    # 190 tokens under 100: two micro-batches, {90} and {60, 40}: 2 * (1/3 (0.9-0.5)^2 + 2/3 (0.3-0.5)^2).
    assert micro == 2
    assert term.item() == pytest.approx(2.0 * 0.08)
    assert current == pytest.approx(0.5)
    # With a budget that holds the batch, the square of its mean (here 0).
    _, term, _, micro = train.objective(batch, [1, 1, 1], args("siren", micro_batch_tokens=4096), 0.5, None)
    assert micro == 1 and term.item() == pytest.approx(0.0, abs=1e-7)
    # 0: one longest sequence, the longest prompt (85) + max_tokens (10) = 95 tokens: as 100.
    _, term, _, micro = train.objective(batch, [1, 1, 1], args("siren", micro_batch_tokens=0), 0.5, None)
    assert micro == 2 and term.item() == pytest.approx(2.0 * 0.08)


def test_aer_objective_is_a_weighted_token_mean():
    batch = terms((0.0, 0, 6.0, 3, 10), (0.0, 0, 2.0, 1, 10))
    _, term, current, _ = train.objective(batch, [0.5, 1.0], args("aer"), None, 0.1)
    assert term.item() == pytest.approx(-0.1 * (0.5 * 6.0 + 1.0 * 2.0) / 4)
    assert current == pytest.approx(8.0 / 4)


def test_term_gradient_norms_are_each_terms_own():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    params = list(model.parameters())
    x = torch.randn(5, 4)

    def parts():
        out = model(x)
        return out.pow(2).mean(), 0.3 * out.sum()

    pg, term = parts()
    expected = [torch.sqrt(sum(g.pow(2).sum() for g in torch.autograd.grad(t, params, retain_graph=True))).item() for t in (pg, term)]
    pg, term = parts()
    g_pg, g_term = train.backward_with_term_norms(pg, term, params)
    assert (g_pg, g_term) == pytest.approx(expected, rel=1e-6)
    # The accumulated gradient is the whole loss's.
    whole = torch.autograd.grad(sum(parts()), params)
    assert all(torch.allclose(p.grad, g) for p, g in zip(params, whole))
    for p in params:
        p.grad = None
    pg, _ = parts()
    assert train.backward_with_term_norms(pg, torch.zeros(()), params)[1] == 0.0


class FakeStream:
    """Answers stream_rollouts with the groups in the order given, then a summary."""

    def __init__(self, groups):
        self.groups = groups

    def stream_rollouts(self, request):
        for g in self.groups:
            yield "group", g
        yield "summary", {"summary": {}, "weights_version": 0}


def test_streamed_terms_place_samples_by_request_position_whatever_order_groups_finish(monkeypatch):
    def grp(pid, rate, lengths):
        samples = [{"index": i, "token_ids": list(range(n))} for i, n in enumerate(lengths)]
        return {"id": pid, "prompt_token_ids": [7], "pass_rate": rate, "samples": samples}

    request = {"prompts": [{"id": "p0"}, {"id": "p1"}, {"id": "p2"}], "group_size": 2}
    # p2 finishes first, p0 last; p1's second sample is empty.
    stream = FakeStream([grp("p2", 1.0, [3, 1]), grp("p1", 0.5, [2, 0]), grp("p0", 0.0, [4, 4])])
    computed = []
    monkeypatch.setattr(losses, "sequence_terms", lambda model, ids, sample, *a: computed.append(sample["token_ids"]) or len(sample["token_ids"]))
    a = argparse.Namespace(aer_weight="linear", aer_tau=0.4, temperature=1.0, method="siren")
    rollout, samples, terms, _ = train.streamed_terms(stream, request, None, a, {}, first={0, 1, 2})
    # Request order: p0's samples at 0 and 1, p1's at 2 (3 is empty, left out), p2's at 4 and 5.
    assert [s[0] for s in samples] == [0, 1, 2, 4, 5]
    assert [s[3] for s in samples] == [1.0, 1.0, 0.5, 0.0, 0.0]
    # The first update's samples (positions 0-2) were computed while streaming, and only they.
    assert terms == {0: 4, 1: 4, 2: 2} and len(computed) == 3
    assert [g["id"] for g in rollout["groups"]] == ["p2", "p1", "p0"]


@pytest.mark.parametrize("flag", [["--mini-batches", "0"], ["--epochs", "0"], ["--micro-batch-tokens", "-1"]])
def test_settings_that_cannot_train_are_refused(flag, capsys):
    base = ["--method", "siren", "--dataset", "d", "--model-dir", "m", "--checkpoints", "c", "--out", "o"]
    assert train.parse_args(base).mini_batches == 1
    with pytest.raises(SystemExit):
        train.parse_args(base + flag)
    assert "must be" in capsys.readouterr().err
