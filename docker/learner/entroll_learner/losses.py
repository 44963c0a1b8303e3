"""The training objectives, computed from the current policy's logits and entroll's statistics.

Conventions (`docs/statistics.md`, `methods-research.md`):
- Dr.GRPO policy loss: PPO clip (ε = 0.2, dual clip c = 3) with advantages `r - mean(r)` per
  group, aggregated as seq-mean-token-sum-norm (sum over tokens, mean over sequences, divided by
  the constant `max_tokens`). The old log-probs are entroll's behaviour log-probs.
- SIREN (its official code, Linn3a/siren): top-p entropy over the strict nucleus (p = 0.8,
  K = 10,000 candidates) of the current policy, per-response peak mask (tokens above the
  response's 0.8 linear quantile, strict), seq-mean-token-mean within each micro-batch, squared
  per micro-batch against the anchor and weighted by the micro-batch's share of the mini-batch:
  β·Σ_m (n_m/n)·(H̄_m(θ) − H_anchor)² (`siren_penalty`), with micro-batches formed by a token
  budget as verl's dynamic batch size forms them (`micro_batches`). H_anchor is H̄ of the initial
  policy over one large initial batch (`initial_anchor`).
- AER (arXiv 2510.10959; its formulas could not be read, so each is this project's choice and
  says so): −α·token-mean(w_i · H_{i,t}(θ)) with the full-vocabulary entropy, w_i from the
  group's pass rate (`difficulty_weight`); α is adjusted by the caller (`AerController`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def response_logits(model, prompt_ids: list[int], response_ids: list[int], temperature: float) -> torch.Tensor:
    """The tempered logits `[L, V]` (float32) that predicted each response token."""
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0].float()
    start = len(prompt_ids) - 1
    return logits[start : start + len(response_ids)] / temperature


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`ln π(y_t)` for each row of `logits` and its token."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]


def full_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary entropy per row: `LSE(z) − Σ softmax(z)·z`."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def top_p_entropy(logits: torch.Tensor, p: float = 0.8, k: int = 10_000) -> torch.Tensor:
    """SIREN's nucleus entropy per row: the strict nucleus `{j : C_j < p}` of the K most probable
    tokens, renormalised (0 when it holds fewer than two tokens). The gradient reaches only the
    logits inside the nucleus."""
    k = min(k, logits.shape[-1])
    top, index = torch.topk(logits, k, dim=-1)
    with torch.no_grad():
        cums = torch.softmax(logits, dim=-1).gather(-1, index).cumsum(-1)
        inside = cums < p
        # Keep the top token in every row so no row is all -inf (its entropy is zeroed below).
        keep = inside.clone()
        keep[..., 0] = True
    masked = top.masked_fill(~keep, float("-inf"))
    logq = torch.log_softmax(masked, dim=-1)
    q = logq.exp()
    h = -(q * logq.nan_to_num(neginf=0.0)).sum(-1)
    return torch.where(inside.sum(-1) >= 2, h, torch.zeros_like(h))


def peak_mask(values: torch.Tensor, quantile: float = 0.8) -> torch.Tensor:
    """Tokens strictly above the response's linear-interpolation quantile (none for one token)."""
    if values.numel() <= 1:
        return torch.zeros_like(values, dtype=torch.bool)
    threshold = torch.quantile(values.detach(), quantile, interpolation="linear")
    return values.detach() > threshold


def micro_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """The micro-batches verl's dynamic batch size (`use_dynamic_bsz`) splits a mini-batch into:
    ceil(Σ lengths / budget) of them (at most one per response), with the responses spread so
    their token counts balance; like verl's, one may exceed the budget a little. `lengths` are
    prompt + response tokens. verl balances with Karmarkar–Karp; this uses longest-first greedy
    (the project's choice: the same count, a comparable balance). Indices ascend inside each
    micro-batch, and micro-batches are ordered by their first index."""
    if not lengths:
        return []
    if budget < max(lengths):
        raise ValueError(f"a response of {max(lengths)} tokens exceeds the micro-batch budget of {budget}")
    count = min(len(lengths), -(-sum(lengths) // budget))
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [0] * count
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        b = min(range(count), key=lambda b: (loads[b], b))
        bins[b].append(i)
        loads[b] += lengths[i]
    return sorted((sorted(b) for b in bins), key=lambda b: b[0])


def siren_penalty(h_means: torch.Tensor, batches: list[list[int]], anchor: float) -> torch.Tensor:
    """SIREN's self-anchored term at the official code's granularity, without β: per micro-batch
    the square of (its seq-mean H̄_m − anchor), weighted by the micro-batch's share of the
    mini-batch, Σ_m (n_m/n)·(H̄_m − anchor)². One micro-batch gives the square of the batch mean;
    one response per micro-batch, the mean of per-response squares (which also penalises the
    spread between responses)."""
    n = sum(len(b) for b in batches)
    terms = [len(b) / n * (h_means[b].mean() - anchor) ** 2 for b in batches]
    return torch.stack(terms).sum()


def initial_anchor(groups: list[dict]) -> tuple[float, float]:
    """SIREN's H_anchor and AER's H₀ from one batch of the initial policy's rollouts, recomputed
    from entroll's per-token statistics (independently of its `summary`): H_anchor is the
    seq-mean over every response of its mean top-p entropy on its peak tokens (0 when it has
    none, an empty response included, as entroll counts it), H₀ the token-mean full entropy over
    every response token."""
    peaks, entropy, tokens = [], 0.0, 0
    for group in groups:
        for sample in group["samples"]:
            picked = [h for h, p in zip(sample["top_p_entropy"], sample["peak"]) if p]
            peaks.append(sum(picked) / len(picked) if picked else 0.0)
            entropy += sum(sample["entropy"])
            tokens += len(sample["entropy"])
    if not tokens:
        raise ValueError("the initial batch holds no response token")
    return sum(peaks) / len(peaks), entropy / tokens


def policy_loss(
    new_logp: torch.Tensor, old_logp: torch.Tensor, advantage: float, clip: float = 0.2, dual_clip: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss with dual clip for negative advantages, and where the ε-clip acted
    (the clipped loss exceeded the unclipped one: verl's `pg_clipfrac`)."""
    ratio = torch.exp(new_logp - old_logp)
    a = torch.full_like(ratio, advantage)
    unclipped = -a * ratio
    clipped = -a * ratio.clamp(1 - clip, 1 + clip)
    loss = torch.maximum(unclipped, clipped)
    if advantage < 0:
        loss = torch.minimum(loss, -a * dual_clip)
    return loss, (clipped > unclipped).detach()


@dataclass
class SequenceTerms:
    """What one response contributes to the objectives, under the current policy."""

    pg_sum: torch.Tensor  # Σ_t policy loss
    siren_mean: torch.Tensor  # mean top-p entropy over current-policy peak tokens (0 if none)
    entropy_sum: torch.Tensor  # Σ_t full entropy
    length: int  # response tokens
    sequence_tokens: int  # prompt + response tokens (the micro-batch budget counts these)
    drift: float  # mean |ln π_θ − ln π_old| over tokens, before the update (π_old: entroll's)
    clipped: int  # tokens where the clip acted


def sequence_terms(
    model, prompt_ids: list[int], sample: dict, temperature: float, stats: dict, need: str
) -> SequenceTerms:
    """Recomputes the current policy on one sample and returns its loss terms. The old
    log-probs of the ratio are entroll's behaviour log-probs of the sample."""
    tokens = sample["token_ids"]
    logits = response_logits(model, prompt_ids, tokens, temperature)
    tok = torch.tensor(tokens)
    new_logp = token_logprobs(logits, tok)
    old_logp = torch.tensor(sample["logprobs"], dtype=torch.float32)
    advantage = sample.get("advantage") or 0.0
    pg, clipped = policy_loss(new_logp, old_logp, advantage)
    zero = torch.zeros(())
    siren = zero
    if need == "siren":
        hp = top_p_entropy(logits, stats["top_p"], stats["top_k_candidates"])
        mask = peak_mask(hp, stats["peak_quantile"])
        siren = (hp * mask).sum() / mask.sum() if mask.any() else zero
    entropy = full_entropy(logits).sum() if need == "aer" else zero
    drift = (new_logp.detach() - old_logp).abs().mean().item()
    return SequenceTerms(pg.sum(), siren, entropy, len(tokens), len(prompt_ids) + len(tokens), drift, int(clipped.sum()))


class AerController:
    """AER's dynamic global coefficient, as this project implements it. The paper (arXiv
    2510.10959) names its three components, but its body and code could not be read here
    (docs/learning.md), so the rule is the project's choice: dual ascent as in SAC's
    temperature, α ← clip(α + η·(H* − Ĥ), 0, α_max) once per step, with the target
    H* = ρ·H₀ (the paper says only "a moderate range below its initial level"; ρ, η, α₀ and
    α_max are ours), H₀ the initial batch's token-mean entropy and Ĥ the step's token-mean
    entropy of the rollouts (entroll's, exact for the policy that sampled them)."""

    def __init__(self, rho: float, eta: float, alpha: float, alpha_max: float):
        self.rho, self.eta, self.alpha, self.alpha_max = rho, eta, alpha, alpha_max
        self.h0: float | None = None

    def observe(self, entropy_mean: float) -> float:
        """Updates α from this step's entropy; returns the α to use for this step's loss."""
        if self.h0 is None:
            self.h0 = entropy_mean
        self.alpha = min(max(self.alpha + self.eta * (self.target - entropy_mean), 0.0), self.alpha_max)
        return self.alpha

    @property
    def target(self) -> float:
        return self.rho * (self.h0 or 0.0)


def difficulty_weight(pass_rate: float | None, rule: str = "linear", tau: float = 0.4) -> float:
    """AER's per-sample coefficient from the group's pass rate, as this project defines it (the
    paper says "difficulty-aware coefficient allocation" and no formula could be read):
    `linear` gives 1 − pass rate (unsolved prompts the whole bonus, solved ones none);
    `threshold` gives 1 when the pass rate is at most τ and 0 above (a summary of the paper names
    a threshold τ ≈ 0.4 without defining it). A group without rewards counts as unsolved."""
    rate = pass_rate if pass_rate is not None else 0.0
    if rule == "linear":
        return 1.0 - rate
    if rule == "threshold":
        return 1.0 if rate <= tau else 0.0
    raise ValueError(f"unknown difficulty rule {rule!r}")
