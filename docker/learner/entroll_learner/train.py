"""The learner: trains a policy with Dr.GRPO, SIREN or AER through an entroll server.

    python -m entroll_learner.train --url http://127.0.0.1:8000 --method siren --steps 5 \\
        --model-dir MODEL_DIR --checkpoints CKPT_DIR --out OUT_DIR

`MODEL_DIR` is the safetensors directory entroll serves at version 0; `CKPT_DIR` must be a
path entroll can read too (the same machine, or a shared volume). Each step writes a checkpoint
there and asks entroll to serve it (POST /weights, version = step), then logs one JSON line to
OUT_DIR/steps.jsonl; at the end OUT_DIR/training.png plots the run.

With replicas (docs/replicas.md): `--url` is the load balancer, `--publish-dir` the directory
every replica watches (`watch_weights`), `--replicas` the replicas' own URLs. Each step then
publishes its checkpoint as `PUBLISH_DIR/<version>/` plus `READY`, and either waits until every
replica serves it (on-policy, the default) or, with `--max-staleness K`, goes on and requests
rollouts again when one ran more than K versions behind (off-policy).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from . import checkpoints, losses, plot, replicas
from .client import Entroll

PROMPT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def load_problems(path: str) -> list[tuple[str, str]]:
    """(question, gold answer) pairs from a JSONL file with `question`/`problem` and `answer`;
    GSM8K's `... #### 18` golds keep only the final number."""
    problems = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            question = row.get("question") or row.get("problem")
            answer = str(row["answer"]).split("####")[-1].strip()
            problems.append((question, answer))
    if not problems:
        raise SystemExit(f"{path} holds no problems")
    return problems


def streamed_terms(server: Entroll, request: dict, model, args, stats: dict):
    """Requests the step's rollouts as a stream and computes each sample's loss terms (the
    current policy's forward pass) as soon as its group arrives, while entroll still generates
    the other groups. Returns the rollout (its groups in completion order), the terms, their
    difficulty weights and the seconds spent in the forward passes."""
    groups, terms, weights, forward_s = [], [], [], 0.0
    for kind, line in server.stream_rollouts(request):
        if kind == "summary":
            return dict(line, groups=groups), terms, weights, forward_s
        started = time.time()
        groups.append(line)
        for sample in line["samples"]:
            if not sample["token_ids"]:
                continue
            terms.append(losses.sequence_terms(model, line["prompt_token_ids"], sample, args.temperature, stats, args.method))
            weights.append(losses.difficulty_weight(line.get("pass_rate")))
        forward_s += time.time() - started
    raise RuntimeError("unreachable: stream_rollouts ends with the summary")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SIREN / AER learner training through entroll")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument(
        "--method",
        choices=["drgrpo", "siren", "aer"],
        required=True,
        help="drgrpo: the policy loss alone; siren, aer: with their entropy terms",
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--dataset", required=True, help="JSONL with question/problem and answer")
    p.add_argument("--model-dir", required=True, help="the safetensors directory entroll serves at version 0")
    p.add_argument("--checkpoints", required=True, help="where checkpoints go (readable by entroll)")
    p.add_argument("--out", required=True, help="steps.jsonl and training.png go here")
    p.add_argument("--instruction", default=PROMPT_SUFFIX, help="appended to each problem in the user message")
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=0.005, help="SIREN's entropy coefficient")
    p.add_argument("--rho", type=float, default=0.9, help="AER: target entropy = rho * H0")
    p.add_argument("--aer-eta", type=float, default=0.005, help="AER: step size of the global coefficient")
    p.add_argument("--aer-alpha", type=float, default=0.005, help="AER: initial global coefficient")
    p.add_argument("--aer-alpha-max", type=float, default=0.05)
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept on disk")
    p.add_argument("--publish-dir", help="publish checkpoints here for replicas watching it, instead of POST /weights")
    p.add_argument("--replicas", default="", help="comma-separated replica URLs to wait for (default: --url)")
    p.add_argument("--max-staleness", type=int, help="off-policy: accept rollouts this many versions old; default: wait for every replica")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    problems = load_problems(args.dataset)
    rng.shuffle(problems)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.checkpoints, exist_ok=True)
    log_path = os.path.join(args.out, "steps.jsonl")
    open(log_path, "w").close()

    server = Entroll(args.url)
    server.wait_ready()
    fleet = [Entroll(u) for u in args.replicas.split(",") if u] or [server]
    keep = max(args.keep, 2) if args.publish_dir else args.keep
    version = server.info()["weights_version"]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    aer = losses.AerController(args.rho, args.aer_eta, args.aer_alpha, args.aer_alpha_max)
    # The statistics parameters the requests run with (they set none): SIREN's nucleus and peaks.
    stats = server.info()["defaults"]["stats"]
    siren_anchor = None
    saved: list[str] = []

    for step in range(1, args.steps + 1):
        batch = [problems[((step - 1) * args.prompts_per_step + i) % len(problems)] for i in range(args.prompts_per_step)]
        t0 = time.time()
        request = {
            "prompts": [
                {"id": f"s{step}p{i}", "messages": [{"role": "user", "content": q + args.instruction}], "answer": a}
                for i, (q, a) in enumerate(batch)
            ],
            "group_size": args.group_size,
            "sampling": {"temperature": args.temperature, "max_tokens": args.max_tokens, "seed": args.seed * 100_000 + step},
            "advantage": "drgrpo",
        }
        dropped = 0
        while True:
            optimizer.zero_grad()
            rollout, terms, weights, forward_s = streamed_terms(server, request, model, args, stats)
            if args.max_staleness is None:
                if rollout["weights_version"] != version:
                    raise SystemExit(f"step {step}: rollouts came from version {rollout['weights_version']}, expected {version}")
                break
            if replicas.fresh_enough(rollout, version, args.max_staleness):
                break
            dropped += 1
        rollout_s = time.time() - t0
        summary = rollout["summary"]
        if rollout["stats"] != stats:
            raise SystemExit(f"step {step}: the rollouts ran with stats {rollout['stats']}, not {stats}")
        if siren_anchor is None:
            siren_anchor = summary["siren_anchor"]  # the initial policy's H_anchor (step 1)
        alpha = aer.observe(summary["entropy_mean"]) if args.method == "aer" else None

        t1 = time.time()
        pg = torch.stack([t.pg_sum for t in terms]).mean() / args.max_tokens
        if args.method == "drgrpo":
            entropy_term = torch.zeros(())
            current_entropy = None
        elif args.method == "siren":
            h_bar = torch.stack([t.siren_mean for t in terms]).mean()
            entropy_term = args.beta * (h_bar - siren_anchor) ** 2
            current_entropy = h_bar.item()
        else:
            tokens = sum(t.length for t in terms)
            weighted = sum(w * t.entropy_sum for w, t in zip(weights, terms)) / tokens
            entropy_term = -alpha * weighted
            current_entropy = (sum(t.entropy_sum for t in terms) / tokens).item()
        loss = pg + entropy_term
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        optimizer.step()
        train_s = time.time() - t1

        t2 = time.time()
        if args.publish_dir:
            version += 1
            path = checkpoints.publish(model, tokenizer, args.publish_dir, version)
            if args.max_staleness is None:
                replicas.wait_for_version(fleet, version)
        else:
            path = os.path.abspath(os.path.join(args.checkpoints, f"{args.method}-step-{step}"))
            checkpoints.save(model, tokenizer, path)
            version = server.load_weights(path, version + 1)["weights_version"]
        saved.append(path)
        while len(saved) > keep:
            shutil.rmtree(saved.pop(0), ignore_errors=True)
        swap_s = time.time() - t2

        groups = rollout["groups"]
        row = {
            "step": step,
            "method": args.method,
            "rollout_weights_version": rollout["weights_version"],
            "stale_rollouts_dropped": dropped,
            "served_weights_version": version,
            "loss": loss.item(),
            "policy_loss": pg.item(),
            "entropy_term": entropy_term.item(),
            "entropy_mean": summary["entropy_mean"],
            "top_p_entropy_mean": summary["top_p_entropy_mean"],
            "siren_anchor": summary["siren_anchor"],
            "siren_anchor_step1": siren_anchor,
            "learner_entropy": current_entropy,
            "aer_alpha": alpha,
            "aer_target": aer.target if args.method == "aer" else None,
            "reward_mean": sum(g["reward_mean"] for g in groups) / len(groups),
            "pass_rate": sum(g["pass_rate"] for g in groups) / len(groups),
            "tokens": summary["tokens"],
            "logprob_gap": sum(t.logprob_gap for t in terms) / len(terms),
            "grad_norm": grad_norm,
            "rollout_s": round(rollout_s, 2),
            "forward_while_streaming_s": round(forward_s, 2),
            "train_s": round(train_s, 2),
            "save_and_swap_s": round(swap_s, 2),
        }
        with open(log_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    plot.plot(log_path, os.path.join(args.out, "training.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
