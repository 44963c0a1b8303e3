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
import statistics
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


def streamed_terms(server: Entroll, request: dict, model, args, stats: dict, first: set[int]):
    """Requests the step's rollouts as a stream and computes, as soon as each group arrives and
    while entroll still generates the others, the loss terms (the current policy's forward pass)
    of the samples of the first update (`first`: their positions in the request, prompt · G +
    sample, so the mini-batches do not depend on the order groups finish in). Returns the
    rollout (its groups in completion order), every non-empty sample in request order as
    `(position, prompt_ids, sample, difficulty weight)`, the first update's terms by position
    and the seconds spent in the forward passes."""
    order = {p["id"]: i for i, p in enumerate(request["prompts"])}
    groups, samples, terms, forward_s = [], [], {}, 0.0
    for kind, line in server.stream_rollouts(request):
        if kind == "summary":
            return dict(line, groups=groups), sorted(samples, key=lambda s: s[0]), terms, forward_s
        started = time.time()
        groups.append(line)
        for sample in line["samples"]:
            position = order[line["id"]] * request["group_size"] + sample["index"]
            if not sample["token_ids"]:
                continue
            weight = losses.difficulty_weight(line.get("pass_rate"), args.aer_weight, args.aer_tau)
            samples.append((position, line["prompt_token_ids"], sample, weight))
            if position in first:
                terms[position] = losses.sequence_terms(model, line["prompt_token_ids"], sample, args.temperature, stats, args.method)
        forward_s += time.time() - started
    raise RuntimeError("unreachable: stream_rollouts ends with the summary")


def initial_batch(server: Entroll, problems: list[tuple[str, str]], args, stats: dict, version: int) -> dict:
    """SIREN's anchor and AER's H₀ from one batch of the initial policy: `--anchor-prompts`
    problems (the first steps' and the ones after) × the group size, sampled as training samples
    them. Both values are recomputed from the per-token statistics (`losses.initial_anchor`) and
    checked against entroll's own summary of the batch."""
    count = args.anchor_prompts or 8 * args.prompts_per_step
    request = {
        "prompts": [
            {"id": f"anchor-p{i}", "messages": [{"role": "user", "content": q + args.instruction}], "answer": a}
            for i, (q, a) in enumerate(problems[j % len(problems)] for j in range(count))
        ],
        "group_size": args.group_size,
        "sampling": {"temperature": args.temperature, "max_tokens": args.max_tokens, "seed": args.seed * 100_000},
    }
    rollout = server.rollouts(request)
    if rollout["weights_version"] != version or rollout["stats"] != stats:
        raise SystemExit(f"the initial batch ran on version {rollout['weights_version']} with {rollout['stats']}")
    siren_anchor, h0 = losses.initial_anchor(rollout["groups"])
    summary = rollout["summary"]
    for name, ours, theirs in [("siren_anchor", siren_anchor, summary["siren_anchor"]), ("entropy_mean", h0, summary["entropy_mean"])]:
        if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
            raise SystemExit(f"the initial batch's {name}: {ours} recomputed, {theirs} from entroll")
    return {
        "siren_anchor": siren_anchor,
        "aer_h0": h0,
        "prompts": count,
        "responses": sum(len(g["samples"]) for g in rollout["groups"]),
        "tokens": summary["tokens"],
        "weights_version": version,
        "pass_rate": sum(g["pass_rate"] or 0.0 for g in rollout["groups"]) / len(rollout["groups"]),
    }


def objective(terms: list, weights: list[float], args, siren_anchor: float | None, alpha: float | None):
    """One update's loss over a mini-batch: the Dr.GRPO policy loss (seq-mean-token-sum over
    `max_tokens`) and the method's entropy term. Returns (policy loss, entropy term, the
    learner's current entropy statistic, the micro-batches SIREN squared over)."""
    pg = torch.stack([t.pg_sum for t in terms]).mean() / args.max_tokens
    if args.method == "drgrpo":
        return pg, torch.zeros(()), None, 0
    if args.method == "siren":
        h_means = torch.stack([t.siren_mean for t in terms])
        # SIREN's script sets the budget to one longest sequence (max prompt + max response
        # tokens, 1,024 + 3,072); 0 does the same here with this batch's longest prompt.
        # A budget below one sequence is raised to it (verl asserts instead).
        longest = max(t.sequence_tokens for t in terms)
        budget = max(args.micro_batch_tokens or max(t.sequence_tokens - t.length for t in terms) + args.max_tokens, longest)
        batches = losses.micro_batches([t.sequence_tokens for t in terms], budget)
        term = args.beta * losses.siren_penalty(h_means, batches, siren_anchor)
        return pg, term, h_means.mean().item(), len(batches)
    tokens = sum(t.length for t in terms)
    weighted = sum(w * t.entropy_sum for w, t in zip(weights, terms)) / tokens
    return pg, -alpha * weighted, (sum(t.entropy_sum for t in terms) / tokens).item(), 0


def backward_with_term_norms(pg: torch.Tensor, term: torch.Tensor, params: list) -> tuple[float, float]:
    """Sets the parameters' gradients to those of pg + term and returns the norm of each part's
    own gradient: what each term does to the update (loss values do not show it: on-policy the
    policy loss is near 0 because advantages are centred, while its gradient is not)."""
    parts = [pg, term] if term.requires_grad else [pg]
    grads = [torch.autograd.grad(t, params, retain_graph=i + 1 < len(parts), allow_unused=True) for i, t in enumerate(parts)]

    def norm(gs) -> float:
        return torch.sqrt(sum((g.double() ** 2).sum() for g in gs if g is not None)).item()

    for i, p in enumerate(params):
        found = [g[i] for g in grads if g[i] is not None]
        p.grad = sum(found[1:], found[0].clone()) if found else None
    return norm(grads[0]), norm(grads[1]) if len(grads) > 1 else 0.0


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
    p.add_argument("--beta", type=float, default=0.005, help="SIREN's entropy coefficient (its code's 0.005)")
    p.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=0,
        help="SIREN: the token budget (prompt + response) of a micro-batch, over which its square is taken (its code's dynamic batch size); "
        "0: one longest sequence, the longest prompt + --max-tokens, as SIREN's script sets it (4,096 = 1,024 + 3,072)",
    )
    p.add_argument(
        "--anchor-prompts",
        type=int,
        help="problems in the initial batch that sets SIREN's anchor and AER's H0, each sampled group-size times (default: 8 x --prompts-per-step)",
    )
    p.add_argument("--siren-anchor", type=float, help="SIREN's anchor, as recorded by an earlier run (skips the initial batch)")
    p.add_argument("--aer-h0", type=float, help="AER's initial entropy H0, as recorded by an earlier run (skips the initial batch)")
    p.add_argument(
        "--grad-norms-every",
        type=int,
        default=1,
        help="log the gradient norm of each term apart every this many steps (at the step's first update; it costs a second backward pass)",
    )
    p.add_argument("--mini-batches", type=int, default=1, help="policy updates per epoch over each step's batch")
    p.add_argument("--epochs", type=int, default=1, help="passes over each step's batch")
    # AER's paper could not be read (docs/learning.md): every AER setting below is this
    # project's choice, not the paper's.
    p.add_argument("--rho", type=float, default=0.9, help="AER (our choice): target entropy = rho * H0")
    p.add_argument("--aer-eta", type=float, default=0.005, help="AER (our choice): step size of the global coefficient")
    p.add_argument("--aer-alpha", type=float, default=0.005, help="AER (our choice): initial global coefficient")
    p.add_argument("--aer-alpha-max", type=float, default=0.05, help="AER (our choice): the global coefficient's upper bound")
    p.add_argument(
        "--aer-weight",
        choices=["linear", "threshold"],
        default="linear",
        help="AER (our choice): per-sample weight from the group's pass rate: 1 - pass rate, or 1 up to --aer-tau and 0 above",
    )
    p.add_argument("--aer-tau", type=float, default=0.4, help="AER (our choice): the pass-rate threshold of --aer-weight threshold")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept on disk")
    p.add_argument("--publish-dir", help="publish checkpoints here for replicas watching it, instead of POST /weights")
    p.add_argument("--replicas", default="", help="comma-separated replica URLs to wait for (default: --url)")
    p.add_argument("--max-staleness", type=int, help="off-policy: accept rollouts this many versions old; default: wait for every replica")
    args = p.parse_args(argv)
    for name in ("mini_batches", "epochs", "steps", "prompts_per_step", "group_size", "grad_norms_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.micro_batch_tokens < 0:
        p.error("--micro-batch-tokens must be 0 (one longest sequence) or a token count")
    return args


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
    params = [p for p in model.parameters() if p.requires_grad]
    initial = {"siren_anchor": args.siren_anchor, "aer_h0": args.aer_h0, "from": "the command line"}
    if args.method == "drgrpo":
        initial["from"] = "none: Dr.GRPO takes no anchor"
    elif (args.siren_anchor if args.method == "siren" else args.aer_h0) is None:
        initial = dict(initial_batch(server, problems, args, stats, version), **{"from": "the initial batch"})
    with open(os.path.join(args.out, "anchor.json"), "w") as f:
        json.dump(initial, f, indent=2)
    if args.method == "aer":
        aer.h0 = initial["aer_h0"]
    saved: list[str] = []
    per_step = args.prompts_per_step * args.group_size
    # The sample at request position k (prompt · G + sample) belongs to mini-batch k·M // N, so
    # mini-batches hold whole groups when M divides the prompts, in request order as verl splits
    # its batch; the first one's forward passes run while entroll streams.
    chunk_of = [k * args.mini_batches // per_step for k in range(per_step)]

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
        first = {k for k in range(per_step) if chunk_of[k] == 0}
        while True:
            rollout, samples, streamed, forward_s = streamed_terms(server, request, model, args, stats, first)
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
        alpha = aer.observe(summary["entropy_mean"]) if args.method == "aer" else None

        t1 = time.time()
        if not samples:
            raise SystemExit(f"step {step}: every sample came back empty")
        updates, norms = [], (None, None)
        measure = (step - 1) % args.grad_norms_every == 0
        for epoch in range(args.epochs):
            for chunk in range(args.mini_batches):
                members = [s for s in samples if chunk_of[s[0]] == chunk]
                if not members:
                    continue
                if epoch == 0 and chunk == 0:
                    terms = [streamed[k] for k, *_ in members]
                else:
                    terms = [losses.sequence_terms(model, ids, smp, args.temperature, stats, args.method) for _, ids, smp, _ in members]
                pg, entropy_term, current, micro = objective(terms, [w for *_, w in members], args, initial["siren_anchor"], alpha)
                optimizer.zero_grad()
                if updates or not measure:
                    (pg + entropy_term).backward()
                else:
                    # AER's term at α = 0 is 0 with a zero gradient: no second pass needed.
                    term = entropy_term if alpha != 0 else entropy_term.detach()
                    norms = backward_with_term_norms(pg, term, params)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
                optimizer.step()
                tokens = sum(t.length for t in terms)
                updates.append(
                    {
                        "epoch": epoch + 1,
                        "mini_batch": chunk + 1,
                        "samples": len(terms),
                        "tokens": tokens,
                        # entroll's H̄ of the same samples, for the first update the policy's own
                        "behaviour_entropy": statistics.fmean(smp["peak_top_p_entropy_mean"] for _, _, smp, _ in members)
                        if args.method == "siren"
                        else None,
                        "loss": (pg + entropy_term).item(),
                        "policy_loss": pg.item(),
                        "entropy_term": entropy_term.item(),
                        "learner_entropy": current,
                        "micro_batches": micro,
                        "ratio_drift": sum(t.drift * t.length for t in terms) / tokens,
                        "clip_fraction": sum(t.clipped for t in terms) / tokens,
                        "grad_norm": grad_norm,
                    }
                )
                del terms, pg, entropy_term
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
        head = updates[0]
        g_pg, g_term = norms
        row = {
            "step": step,
            "method": args.method,
            "rollout_weights_version": rollout["weights_version"],
            "stale_rollouts_dropped": dropped,
            "served_weights_version": version,
            "loss": head["loss"],
            "policy_loss": head["policy_loss"],
            "entropy_term": head["entropy_term"],
            "grad_norm_policy": g_pg,
            "grad_norm_entropy_term": g_term,
            "micro_batches": head["micro_batches"],
            "entropy_mean": summary["entropy_mean"],
            "top_p_entropy_mean": summary["top_p_entropy_mean"],
            "siren_anchor": summary["siren_anchor"],
            "siren_anchor_initial": initial["siren_anchor"],
            "learner_entropy": head["learner_entropy"],
            "behaviour_entropy": head["behaviour_entropy"],
            "aer_alpha": alpha,
            "aer_h0": aer.h0 if args.method == "aer" else None,
            "aer_target": aer.target if args.method == "aer" else None,
            "reward_mean": sum(g["reward_mean"] for g in groups) / len(groups),
            "pass_rate": sum(g["pass_rate"] for g in groups) / len(groups),
            "tokens": summary["tokens"],
            # The first update's drift is the learner's recomputation against entroll's
            # statistics of the same policy; later updates' is the policy's own drift.
            "logprob_gap": head["ratio_drift"],
            "ratio_drift_max": max(u["ratio_drift"] for u in updates),
            "clip_fraction": sum(u["clip_fraction"] * u["tokens"] for u in updates) / sum(u["tokens"] for u in updates),
            "updates": len(updates),
            "per_update": updates if len(updates) > 1 else None,
            "grad_norm": head["grad_norm"],
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
