"""lm-evaluation-harness, unchanged, against entroll: `local-completions` (prompts batched four to
a request) and `local-chat-completions` on a slice of the repository's GSM8K, from the task
definition in tasks/ (no hub). Its score is checked, not only that it ran: every response it
logged must be the greedy generation `/rollouts` gives the same prompt, and the exact-match score
it reports must be the one recomputed here from those responses."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

LIMIT = 8
TASK = "entroll_gsm8k_slice"
UNTIL = ["Question:", "\n\n"]


def run_lm_eval(server, tmp_path, model, model_args, *extra):
    out = tmp_path / model
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--model", model,
        "--model_args", model_args,
        "--tasks", TASK,
        "--include_path", os.path.join(os.path.dirname(__file__), "tasks"),
        "--limit", str(LIMIT),
        "--output_path", str(out),
        "--log_samples",
        *extra,
    ]
    if model == "local-chat-completions":
        cmd.append("--apply_chat_template")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    [samples] = glob.glob(str(out / "**" / f"samples_{TASK}_*.jsonl"), recursive=True)
    with open(results) as f:
        score = json.load(f)["results"][TASK]["exact_match,flexible-extract"]
    with open(samples) as f:
        logged = [json.loads(line) for line in f]
    print(f"{model}: exact match {score:.3f} on {len(logged)} GSM8K questions")
    return score, logged


def last_number(text):
    """The flexible-extract rule written out: the last number in the text, `$`, `,` and a final
    `.` dropped."""
    found = re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", text)
    if not found:
        return "[invalid]"
    value = [g for g in found[-1] if g][0]
    return re.sub(r"\.$", "", value.replace(",", "").replace("$", ""))


def check(server, score, logged, prompt_of):
    assert len(logged) == LIMIT
    logged.sort(key=lambda s: s["doc_id"])
    prompts = [prompt_of(s["doc"]) for s in logged]
    greedy = server.rollouts({
        "prompts": prompts,
        "group_size": 1,
        "sampling": {"temperature": 1.0, "top_k": 1, "max_tokens": 96, "stop": UNTIL},
    })
    correct = 0
    for sample, group in zip(logged, greedy["groups"], strict=True):
        text = group["samples"][0]["text"]
        assert sample["resps"][0][0] == text, f"doc {sample['doc_id']}: lm-eval logged another response"
        target = sample["doc"]["answer"].split("####")[-1].strip().replace(",", "")
        correct += last_number(text) == target
    assert score == pytest.approx(correct / LIMIT)


def test_local_completions_scores_a_gsm8k_slice(server, tmp_path):
    args = f"model={server.model},base_url={server.url}/v1/completions,num_concurrent=2,max_retries=1,tokenized_requests=False,tokenizer_backend=None"
    score, logged = run_lm_eval(server, tmp_path, "local-completions", args, "--batch_size", "4")
    check(server, score, logged, lambda doc: {"text": f"Question: {doc['question']}\nAnswer:"})


def test_local_chat_completions_scores_a_gsm8k_slice(server, tmp_path):
    args = f"model={server.model},base_url={server.url}/v1/chat/completions,num_concurrent=2,max_retries=1"
    score, logged = run_lm_eval(server, tmp_path, "local-chat-completions", args)
    check(
        server, score, logged,
        lambda doc: {"messages": [{"role": "user", "content": f"Question: {doc['question']}\nAnswer:"}]},
    )
