"""The official `openai` Python SDK, unchanged, against entroll: completions and chat, whole and
streamed, n > 1, log-probs with their alternatives, vLLM's token-id fields, and errors. Every
choice is checked against the `/rollouts` sample the same seed draws, the route whose statistics
the oracle tests check."""

import openai
import pytest
import requests

PROMPTS = ["Question: What is 6 times 7?\nAnswer:", "Count to five:"]
SAMPLING = {"temperature": 0.9, "top_p": 0.9, "top_k": 40, "max_tokens": 16, "seed": 11}


def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def rollouts(server, prompts, n):
    return server.rollouts({"prompts": prompts, "group_size": n, "sampling": SAMPLING})


def sdk_sampling():
    """SAMPLING as the SDK takes it: top_k is vLLM's, so it travels in extra_body."""
    return {k: v for k, v in SAMPLING.items() if k != "top_k"}


def test_completions_are_the_rollouts_samples(server):
    r = client(server).completions.create(
        model=server.model,
        prompt=PROMPTS,
        n=2,
        logprobs=0,
        extra_body={"top_k": SAMPLING["top_k"], "return_token_ids": True},
        **sdk_sampling(),
    )
    expected = rollouts(server, [{"text": p} for p in PROMPTS], 2)
    assert len(r.choices) == 4
    lengths = 0
    for choice in r.choices:
        group, index = divmod(choice.index, 2)
        sample = expected["groups"][group]["samples"][index]
        extra = choice.model_extra
        assert choice.text == sample["text"]
        assert extra["token_ids"] == sample["token_ids"]
        assert extra["prompt_token_ids"] == expected["groups"][group]["prompt_token_ids"]
        assert choice.finish_reason == sample["finish_reason"]
        assert choice.logprobs.token_logprobs == pytest.approx(sample["sampling_logprobs"], abs=0)
        assert len(choice.logprobs.tokens) == len(sample["token_ids"])
        for key in ("entropy", "top_p_size", "top_p_entropy", "peak", "logprobs", "weights_version"):
            assert extra["entroll"][key] == sample[key], key
        lengths += sample["length"]
    assert r.usage.completion_tokens == lengths
    assert r.usage.prompt_tokens == sum(len(g["prompt_token_ids"]) for g in expected["groups"])


def test_token_id_prompts_draw_what_their_text_draws(server):
    sdk = client(server)
    ids = requests.post(f"{server.url}/tokenize", json={"prompt": PROMPTS[0]}, timeout=30).json()["tokens"]
    by_text = sdk.completions.create(model=server.model, prompt=PROMPTS[0], **sdk_sampling())
    by_ids = sdk.completions.create(model=server.model, prompt=ids, **sdk_sampling())
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.choices[0].model_extra["entroll"] == by_text.choices[0].model_extra["entroll"]


def test_chat_is_the_rollouts_sample_with_tokens_named_by_id(server):
    messages = [{"role": "user", "content": "Name three colours."}]
    r = client(server).chat.completions.create(
        model=server.model,
        messages=messages,
        n=3,
        logprobs=True,
        extra_body={"top_k": SAMPLING["top_k"], "return_tokens_as_token_ids": True, "return_token_ids": True},
        **sdk_sampling(),
    )
    expected = rollouts(server, [{"messages": messages}], 3)
    group = expected["groups"][0]
    assert len(r.choices) == 3
    assert r.model_extra["prompt_token_ids"] == group["prompt_token_ids"]
    for choice in r.choices:
        sample = group["samples"][choice.index]
        assert choice.message.role == "assistant"
        assert choice.message.content == sample["text"]
        assert [t.token for t in choice.logprobs.content] == [f"token_id:{i}" for i in sample["token_ids"]]
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(sample["sampling_logprobs"], abs=0)
        assert choice.model_extra["entroll"]["top_p_mass"] == sample["top_p_mass"]


def test_alternatives_are_the_sample_s_in_the_sdk_s_types(server):
    """Top log-probs through the SDK's own types: chat's `top_logprobs` objects and completions'
    `top_logprobs` dicts hold the sample's alternatives that the truncation kept, most probable
    first, with the listing's (processed) log-probs; a completions dict adds the drawn token."""
    sdk = client(server)
    extra = {"top_k": SAMPLING["top_k"], "return_tokens_as_token_ids": True}
    chat = sdk.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Name a colour."}],
        logprobs=True, top_logprobs=4, extra_body=extra, **sdk_sampling(),
    ).choices[0]
    text = sdk.completions.create(
        model=server.model, prompt=PROMPTS[0], logprobs=3, extra_body=extra, **sdk_sampling(),
    ).choices[0]
    for choice, top in ((chat, 4), (text, 3)):
        sample = choice.model_extra["entroll"]
        assert len(sample["top_logprobs"]) == len(sample["token_ids"])
        for t, alternatives in enumerate(sample["top_logprobs"]):
            kept = [(f"token_id:{a['id']}", a["sampling_logprob"]) for a in alternatives[:top] if a["sampling_logprob"] is not None]
            assert [a["logprob"] for a in alternatives] == sorted((a["logprob"] for a in alternatives), reverse=True)
            if choice is chat:
                listed = [(a.token, a.logprob) for a in choice.logprobs.content[t].top_logprobs]
                assert listed == kept
            else:
                listed = list(choice.logprobs.top_logprobs[t].items())
                drawn = (f"token_id:{sample['token_ids'][t]}", sample["sampling_logprobs"][t])
                assert listed[: len(kept)] == kept
                assert listed[len(kept):] == ([] if drawn[0] in dict(kept) else [drawn])
            # The most probable kept token is at least as likely as the drawn one.
            assert kept[0][1] >= sample["sampling_logprobs"][t]


@pytest.mark.parametrize("route", ["completions", "chat"])
def test_a_stream_adds_up_to_the_whole_answer(server, route):
    sdk = client(server)
    if route == "completions":
        create, args = sdk.completions.create, {"prompt": PROMPTS}
        text = lambda c: c.text  # noqa: E731
    else:
        create, args = sdk.chat.completions.create, {"messages": [{"role": "user", "content": "Say hello."}]}
        text = lambda c: c.message.content if hasattr(c, "message") else (c.delta.content or "")  # noqa: E731
    whole = create(model=server.model, n=2, **args, **sdk_sampling())
    streamed, usage, finish = {}, None, {}
    for chunk in create(model=server.model, n=2, stream=True, stream_options={"include_usage": True}, **args, **sdk_sampling()):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + text(c)
            if c.finish_reason:
                finish[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert sorted(streamed) == sorted(c.index for c in whole.choices)
    for c in whole.choices:
        assert streamed[c.index] == text(c)
        assert finish[c.index] == c.finish_reason
    assert usage == whole.usage


def test_temperature_0_is_greedy_and_repeatable(server):
    args = {"model": server.model, "prompt": PROMPTS[1], "temperature": 0, "max_tokens": 16}
    a = client(server).completions.create(seed=1, n=2, **args)
    b = client(server).completions.create(seed=2, **args)
    assert a.choices[0].text == a.choices[1].text == b.choices[0].text
    assert all(v == 0 for v in a.choices[0].model_extra["entroll"]["sampling_logprobs"])


def test_the_model_list_names_the_served_model_and_its_context(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == [server.model]
    info = requests.get(f"{server.url}/info", timeout=30).json()
    assert info["max_context"] > 0
    assert models[0].model_extra["max_model_len"] == info["max_context"]


def test_errors_reach_the_sdk_as_its_own_exceptions(server):
    sdk = client(server)
    with pytest.raises(openai.BadRequestError) as e:
        sdk.completions.create(model=server.model, prompt="hi", max_tokens=4, extra_body={"min_p": 0.2})
    assert e.value.param == "min_p" and e.value.code == "validation"
    with pytest.raises(openai.BadRequestError) as e:
        sdk.completions.create(model=server.model, prompt="hi", max_tokens=4, frequency_penalty=0.5)
    assert e.value.param == "frequency_penalty"
    with pytest.raises(openai.BadRequestError) as e:
        sdk.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=21)
    assert e.value.param == "top_logprobs"
    with pytest.raises(openai.NotFoundError) as e:
        sdk.completions.create(model="not-" + server.model, prompt="hi", max_tokens=4)
    assert e.value.param == "model"
