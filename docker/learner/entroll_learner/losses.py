"""The training objectives, computed from the current policy's logits and entroll's statistics.

Conventions (`docs/statistics.md`, `methods-research.md`):
- Dr.GRPO policy loss: PPO clip (ε = 0.2, dual clip c = 3) with advantages `r - mean(r)` per
  group, aggregated as seq-mean-token-sum-norm (sum over tokens, mean over sequences, divided by
  the constant `max_tokens`). The old log-probs are entroll's behaviour log-probs.
- SIREN: top-p entropy over the strict nucleus (p = 0.8, K = 10,000 candidates) of the current
  policy, per-response peak mask (tokens above the response's 0.8 linear quantile, strict),
  seq-mean-token-mean over the batch, self-anchored: β·(H̄(θ) − H_anchor)² with H_anchor the first
  batch's `siren_anchor`.
- AER: −α·token-mean(w_i · H_{i,t}(θ)) with the full-vocabulary entropy, w_i from the group's
  pass rate; α is adjusted by the caller (see `AerController`).
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


def policy_loss(
    new_logp: torch.Tensor, old_logp: torch.Tensor, advantage: float, clip: float = 0.2, dual_clip: float = 3.0
) -> torch.Tensor:
    """Per-token PPO-clip loss with dual clip for negative advantages."""
    ratio = torch.exp(new_logp - old_logp)
    a = torch.full_like(ratio, advantage)
    loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip))
    if advantage < 0:
        loss = torch.minimum(loss, -a * dual_clip)
    return loss


@dataclass
class SequenceTerms:
    """What one response contributes to the objectives, under the current policy."""

    pg_sum: torch.Tensor  # Σ_t policy loss
    siren_mean: torch.Tensor  # mean top-p entropy over current-policy peak tokens (0 if none)
    entropy_sum: torch.Tensor  # Σ_t full entropy
    length: int
    logprob_gap: float  # mean |ln π_learner − ln π_entroll| over tokens, before the update


def sequence_terms(
    model, prompt_ids: list[int], sample: dict, temperature: float, stats: dict, need: str
) -> SequenceTerms:
    """Recomputes the current policy on one sample and returns its loss terms."""
    tokens = sample["token_ids"]
    logits = response_logits(model, prompt_ids, tokens, temperature)
    tok = torch.tensor(tokens)
    new_logp = token_logprobs(logits, tok)
    old_logp = torch.tensor(sample["logprobs"], dtype=torch.float32)
    advantage = sample.get("advantage") or 0.0
    pg = policy_loss(new_logp, old_logp, advantage).sum()
    zero = torch.zeros(())
    siren = zero
    if need == "siren":
        hp = top_p_entropy(logits, stats["top_p"], stats["top_k_candidates"])
        mask = peak_mask(hp, stats["peak_quantile"])
        siren = (hp * mask).sum() / mask.sum() if mask.any() else zero
    entropy = full_entropy(logits).sum() if need == "aer" else zero
    gap = (new_logp.detach() - old_logp).abs().mean().item()
    return SequenceTerms(pg, siren, entropy, len(tokens), gap)


class AerController:
    """AER's global coefficient: α ← clip(α + η·(H* − Ĥ), 0, α_max) once per step, with the
    target H* = ρ·H₀ anchored to the first batch's token-mean entropy H₀, and Ĥ the step's
    token-mean entropy of the rollouts (entroll's, exact for the policy that sampled them)."""

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


def difficulty_weight(pass_rate: float | None) -> float:
    """AER's per-sample coefficient: 1 − pass rate, so unsolved prompts get the full entropy bonus
    and solved ones none (the paper leaves the function open; this is the simplest monotone one)."""
    return 1.0 - (pass_rate if pass_rate is not None else 0.0)
