"""verifiers' training client (`verifiers.v1.clients.train.TrainClient`), which prime-rl trains
through, unchanged against entroll: it renders the chat with the model's own tokenizer, asks
`GET /v1/models` for the context, and samples through vLLM's `POST /inference/v1/generate`
(`renderers.client.generate`). What it reads back must be the `/rollouts` sample the same seed
draws; around a weight update it runs as prime-rl runs it (prime-rl is not on PyPI: its three
control calls, `/pause?mode=keep`, `/update_weights {weight_dir}` and `/resume`, are sent as its
`transports/weights/filesystem.py` sends them) with a request in flight."""

import asyncio
import time

import verifiers.v1 as vf
from verifiers.v1.clients.train import TrainClient
from verifiers.v1.configs.client import TrainClientConfig
from verifiers.v1.dialects import ChatDialect

import requests

MESSAGES = [{"role": "user", "content": "What is 6 times 7?"}]


def sampling(max_tokens, seed):
    """prime-rl's training sampling (`TrainSamplingConfig.to_sampling_args`), a seed through its
    `extra_body`, which reaches `sampling_params` unchanged."""
    return vf.SamplingConfig(
        temperature=1.0,
        top_p=1.0,
        logprobs=True,
        max_completion_tokens=max_tokens,
        extra_body={"seed": seed, "cache_salt": "step-0"},
    )


async def train_response(server, max_tokens, seed):
    """One response of the training client, as prime-rl's environment server asks for it."""
    client = TrainClient(TrainClientConfig(base_url=f"{server.url}/v1", renderer_model_name=server.tokenizer))
    try:
        return await client.get_response(
            ChatDialect(),
            {"model": server.model, "messages": MESSAGES},
            sampling(max_tokens, seed),
            session_id="trace-1",
        )
    finally:
        await client.close()


def rollouts_sample(server, prompt_ids, max_tokens, seed):
    """The `/rollouts` sample of the same prompt tokens and seed."""
    answer = server.post(
        "/rollouts",
        {
            "prompts": [{"token_ids": prompt_ids}],
            "group_size": 1,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": max_tokens, "seed": seed},
        },
    )
    return answer["groups"][0]["samples"][0], answer["weights_version"]


def test_the_training_client_reads_the_rollouts_sample(server):
    response = asyncio.run(train_response(server, 24, 5))
    tokens = response.tokens
    sample, _ = rollouts_sample(server, list(tokens.prompt_ids), 24, 5)
    assert list(tokens.completion_ids) == sample["token_ids"]
    # The listing is the processed (sampling) distribution's, as prime-rl runs vLLM
    # (`logprobs_mode=processed_logprobs`): at top-p 1 the temperature-1 distribution's.
    assert len(tokens.completion_logprobs) == len(sample["token_ids"])
    for got, want in zip(tokens.completion_logprobs, sample["sampling_logprobs"]):
        assert abs(got - want) < 1e-6, (got, want)
    assert response.finish_reason == sample["finish_reason"]


def test_a_weight_update_as_prime_rl_sends_it_with_a_request_in_flight(server):
    tokens_long = 160

    async def run():
        before = server.metric("entroll_engine_decode_batch_sum")
        in_flight = asyncio.create_task(train_response(server, tokens_long, 7))
        # Until the engine has drawn for it.
        deadline = time.monotonic() + 60
        while server.metric("entroll_engine_decode_batch_sum") < before + 5:
            assert time.monotonic() < deadline, "the request never ran"
            await asyncio.sleep(0.05)
        post = lambda *a, **k: asyncio.to_thread(server.post, *a, **k)  # noqa: E731
        paused = await post("/pause", mode="keep", clear_cache="false")
        assert paused["status"] == "paused"
        # While paused a new request waits (a plain /rollouts, beside the client's).
        waiting = asyncio.create_task(asyncio.to_thread(rollouts_sample, server, [1, 2, 3], 4, 1))
        await asyncio.sleep(0.5)
        assert not waiting.done() and not in_flight.done()
        updated = await post("/update_weights", {"weight_dir": server.model_path})
        assert updated["status"] == "ok"
        assert updated["weights_version"] >= 1
        await post("/resume")
        return await in_flight, await waiting, updated["weights_version"]

    response, (_, waited_on), version = asyncio.run(run())
    # The frozen request went on after the resume and ended as it would have: the same weights
    # under a new version draw the same tokens from the same keys.
    assert waited_on == version
    sample, _ = rollouts_sample(server, list(response.tokens.prompt_ids), tokens_long, 7)
    got = list(response.tokens.completion_ids)
    common = next((i for i, (a, b) in enumerate(zip(got, sample["token_ids"])) if a != b), min(len(got), len(sample["token_ids"])))
    assert common == len(got) == len(sample["token_ids"]) or common > 100, (common, len(got))
    assert response.finish_reason in ("stop", "length")
    models = requests.get(f"{server.url}/v1/models", timeout=30).json()
    assert models["data"][0]["weights_version"] == version
