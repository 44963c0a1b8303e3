"""Sampling-mask replay against entroll itself: the learner recomputes the served model in
float32 and, with each token's mask, reproduces entroll's `sampling_logprob` (the log-prob under
the truncated distribution the token was drawn from) and `sampling_mass`. Starts the `entroll`
binary (ENTROLL_BIN, default target/release/entroll) on the tiny random Llama that
scripts/learner-env makes."""

import base64
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entroll_learner import losses, replay  # noqa: E402
from entroll_learner.client import Entroll, served  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def test_the_wire_form_matches_entroll_s_known_bytes():
    # The bytes src/stats/mask_codec.rs's unit test pins for [0, 1, 200, 49151].
    wire = base64.b64encode(bytes([0x00, 0x00, 0xC6, 0x01, 0xB6, 0xFE, 0x02])).decode()
    assert replay.decode_mask(wire) == [0, 1, 200, 49_151]
    assert replay.decode_mask("") == []
    with pytest.raises(ValueError):
        replay.decode_mask(base64.b64encode(bytes([0x80])).decode())


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("ENTROLL_BIN", os.path.join(ROOT, "target", "release", "entroll"))
    home = os.environ.get("ENTROLL_HOME") or os.path.expanduser("~/.cache/entroll")
    model = os.path.join(home, "models", "tiny-random-llama")
    assert os.path.exists(binary), f"{binary} is missing: build entroll first (scripts/test does)"
    assert os.path.exists(model), f"{model} is missing: run scripts/learner-env"
    with served(binary, "--model", model) as url:
        client = Entroll(url)
        client.wait_ready()
        yield client, model


def test_replayed_masks_reproduce_entroll_s_sampling_logprobs(server):
    from transformers import AutoModelForCausalLM

    client, model_dir = server
    temperature = 0.8
    request = {
        "prompts": [{"text": "The capital of France is"}, {"messages": [{"role": "user", "content": "Count to ten."}]}],
        "group_size": 2,
        "sampling": {"temperature": temperature, "top_p": 0.9, "top_k": 30, "max_tokens": 24, "seed": 5},
        "return_sampling_mask": True,
    }
    # Streamed, as the trainer reads them.
    groups = [line for kind, line in client.stream_rollouts(request) if kind == "group"]
    assert len(groups) == 2
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    worst_full = worst_replay = worst_mass = 0.0
    cut = 0
    with torch.no_grad():
        for group in groups:
            for sample in group["samples"]:
                tokens = torch.tensor(sample["token_ids"])
                logits = losses.response_logits(model, group["prompt_token_ids"], sample["token_ids"], temperature)
                full = losses.token_logprobs(logits, tokens)
                replayed = replay.sampling_logprobs(logits, tokens, sample["sampling_mask"])
                entroll_full = torch.tensor(sample["logprobs"])
                entroll_sampling = torch.tensor(sample["sampling_logprobs"])
                worst_full = max(worst_full, (full - entroll_full).abs().max().item())
                worst_replay = max(worst_replay, (replayed - entroll_sampling).abs().max().item())
                for t, wire in enumerate(sample["sampling_mask"]):
                    if wire is None:
                        continue
                    kept = torch.tensor(replay.decode_mask(wire))
                    assert len(kept) <= 30
                    mass = torch.logsumexp(logits[t][kept], -1) - torch.logsumexp(logits[t], -1)
                    worst_mass = max(worst_mass, abs(mass.item() - torch.tensor(sample["sampling_mass"][t]).log().item()))
                    cut += int(sample["sampling_mass"][t] < 0.99)
    # The truncation mattered (the full softmax would not reproduce the sampling log-probs) ...
    assert cut > 0
    gaps = [
        abs(lp - slp)
        for g in groups
        for s in g["samples"]
        for lp, slp in zip(s["logprobs"], s["sampling_logprobs"])
    ]
    assert max(gaps) > 1e-2
    # ... and the replayed masks reproduce them.
    assert worst_full < 1e-3, f"full log-probs differ by {worst_full}"
    assert worst_replay < 1e-3, f"replayed sampling log-probs differ by {worst_replay}"
    assert worst_mass < 1e-3, f"ln sampling_mass differs by {worst_mass}"
