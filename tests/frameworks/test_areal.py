"""AReaL's own SGLang client (`areal.engine.sglang_remote.RemoteSGLangEngine`, areal 1.0.4),
unchanged against entroll's SGLang routes, called as AReaL's trainer calls it: `agenerate` on
`POST /generate` (resubmitting a sample a pause aborted with the tokens it drew), and the disk
weight update of its FSDP engine: `pause_generation`, `update_weights_from_disk` (which waits for
the trainer's name record), `continue_generation`. Runs in target/areal-venv
(scripts/frameworks-env)."""

import asyncio
import os
import tempfile
import time
from datetime import datetime

import pytest
from areal.api.cli_args import GenerationHyperparameters, InferenceEngineConfig, NameResolveConfig
from areal.api.io_struct import ModelRequest, WeightUpdateMeta
from areal.engine.sglang_remote import RemoteSGLangEngine
from areal.utils import name_resolve, names

EXPERIMENT, TRIAL = "entroll", "t0"
# SmolLM2's end of sequence, which AReaL's workflows pass as `stop_token_ids`.
EOS = 2


@pytest.fixture(scope="module")
def loop():
    """One event loop for the module, as a trainer keeps one: AReaL's client binds its HTTP
    sessions to the loop it first runs on."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(server, loop):
    root = tempfile.mkdtemp(prefix="entroll-areal-")
    # The trainer's name records (NFS-style, under a directory): the disk update waits on the
    # record the trainer writes once the checkpoint is saved.
    name_resolve.reconfigure(NameResolveConfig(type="nfs", nfs_record_root=os.path.join(root, "names")))
    config = InferenceEngineConfig(
        experiment_name=EXPERIMENT,
        trial_name=TRIAL,
        fileroot=root,
        max_concurrent_rollouts=4,
        consumer_batch_size=1,
        setup_timeout=60,
        request_timeout=300,
        request_retries=1,
        pause_grace_period=0.0,
    )
    engine = RemoteSGLangEngine(config)
    engine.initialize(addr=server.url.removeprefix("http://"), train_data_parallel_size=1)
    yield engine
    engine.destroy()


def prompt_ids(server, text):
    return server.post("/tokenize", {"prompt": text})["tokens"]


def test_greedy_generation_is_the_rollouts_sample(server, engine, loop):
    ids = prompt_ids(server, "What is 6 times 7?")
    gconfig = GenerationHyperparameters(max_new_tokens=12, greedy=True, stop_token_ids=[EOS])
    response = loop.run_until_complete(engine.agenerate(ModelRequest(input_ids=ids, gconfig=gconfig)))
    # Greedy is the most likely token: /rollouts draws it as top-k 1 at temperature 1, and
    # lists the untruncated log-probs (as SGLang's greedy path does).
    answer = server.post(
        "/rollouts",
        {
            "prompts": [{"token_ids": ids}],
            "group_size": 1,
            "sampling": {"temperature": 1.0, "top_k": 1, "max_tokens": 12},
        },
    )
    sample = answer["groups"][0]["samples"][0]
    assert list(response.output_tokens) == sample["token_ids"]
    assert len(response.output_logprobs) == len(sample["logprobs"])
    for got, want in zip(response.output_logprobs, sample["logprobs"]):
        assert abs(got - want) < 1e-6, (got, want)
    assert response.stop_reason == sample["finish_reason"]


def test_a_disk_update_with_a_request_in_flight_as_the_trainer_sends_it(server, engine, loop):
    # A count to go on: at temperature 1 SmolLM2 ends "Count to twenty." at once in one sample
    # of eight, this continuation before its 30th token in about one of 64.
    ids = prompt_ids(server, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    new_tokens = 120
    gconfig = GenerationHyperparameters(max_new_tokens=new_tokens, temperature=1.0, stop_token_ids=[EOS])
    weight_dir = os.path.join(os.path.dirname(server.model_path), "SmolLM2-135M-Instruct-hf")
    decoded = "entroll_engine_decode_batch_sum"
    aborted = 'entroll_samples_interrupted_total{in_flight="pause"}'

    async def paused_in_flight():
        """Sends the request and pauses the server (SGLang's default mode, abort) once it has
        decoded 5 tokens; the request, aborted and waiting to be resubmitted. A sample that
        ended before the pause reached it is drawn again: the pause is checked on one that was
        still decoding."""
        for _ in range(5):
            before = (server.metric(decoded), server.metric(aborted))
            in_flight = asyncio.create_task(engine.agenerate(ModelRequest(input_ids=ids, gconfig=gconfig)))
            deadline = time.monotonic() + 60
            # Polled off the event loop, which the client's request needs.
            while await asyncio.to_thread(server.metric, decoded) < before[0] + 5 and not in_flight.done():
                assert time.monotonic() < deadline, "the request never ran"
                await asyncio.sleep(0.05)
            steps_at_pause = float("inf")
            if not in_flight.done():
                await asyncio.to_thread(engine.pause_generation)
                if server.metric(aborted) == before[1] + 1:
                    return in_flight
                steps_at_pause = server.metric(decoded) - before[0]
                await asyncio.to_thread(engine.continue_generation)
            # Not aborted: the sample must have ended before the pause (the first token comes
            # from the prefill, the rest one per decoding step); a failed request raises here.
            ended = await in_flight
            assert len(ended.output_tokens) <= steps_at_pause + 1, "the pause did not stop the request"
        pytest.fail("5 samples in a row ended before the pause reached them")

    async def run():
        in_flight = await paused_in_flight()
        version = engine.get_version()
        # The rest of FSDPEngine's disk update, after the pause: load, continue.
        meta = WeightUpdateMeta(type="disk", path=weight_dir, clear_checkpoint_after_load=False)
        update = engine.update_weights_from_disk(meta)
        name_resolve.add(
            names.update_weights_from_disk(EXPERIMENT, TRIAL, version),
            str(datetime.now().timestamp()),
            keepalive_ttl=120,
        )
        await asyncio.to_thread(update.result, 300)
        await asyncio.to_thread(engine.continue_generation)
        engine.set_version(version + 1)
        return await in_flight

    served_before = int(server.get("/get_weight_version")["weight_version"])
    response = loop.run_until_complete(run())
    # AReaL resubmitted the aborted sample with the tokens it drew and got the rest after the
    # resume: one whole sample, as long as asked unless it ended.
    tokens = list(response.output_tokens)
    assert len(tokens) == new_tokens or tokens[-1] == EOS, len(tokens)
    assert len(response.output_logprobs) == len(tokens)
    assert int(server.get("/get_weight_version")["weight_version"]) == served_before + 1
