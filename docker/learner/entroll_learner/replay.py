"""Replaying entroll's sampling distribution in the learner (`return_sampling_mask`).

Each token whose draw top-k or top-p truncated carries the ids the truncation kept, in a
compact wire form (docs/api.md): the ids ascending, each written as its gap to the one before
(the first as itself, later ones as `id - previous - 1`) in LEB128, base64 with padding. With
the set, the learner computes the behaviour log-prob on the support that was actually sampled:
`ln π_T(y) = z_y − logsumexp(z[mask])` for the tempered logits `z`, instead of the full
softmax's, so the importance ratio is taken on the same distribution as the draw.
"""

from __future__ import annotations

import base64

import torch


def decode_mask(wire: str) -> list[int]:
    """The kept token ids of one wire-form mask, ascending."""
    ids, nxt, gap, shift = [], 0, 0, 0
    for byte in base64.b64decode(wire, validate=True):
        gap |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            nxt += gap
            ids.append(nxt)
            nxt += 1
            gap, shift = 0, 0
    if shift:
        raise ValueError("the last number of the mask is cut short")
    return ids


def sampling_logprobs(logits: torch.Tensor, tokens: torch.Tensor, masks: list[str | None]) -> torch.Tensor:
    """`ln` of each token's probability under the distribution it was drawn from: the softmax
    of the tempered `logits` row restricted to its mask (the full row where the mask is None)."""
    rows = []
    for t, wire in enumerate(masks):
        z = logits[t]
        if wire is not None:
            kept = torch.tensor(decode_mask(wire))
            position = (kept == tokens[t]).nonzero()
            if len(position) != 1:
                raise ValueError(f"token {t}: the drawn token {int(tokens[t])} is not in its mask")
            z = z[kept]
            rows.append(z[position[0, 0]] - torch.logsumexp(z, dim=-1))
        else:
            rows.append(torch.log_softmax(z, dim=-1)[tokens[t]])
    return torch.stack(rows) if rows else logits.new_zeros(0)
