"""The baseline entroll replaces: rollouts the TRL-without-vLLM way, with Hugging Face
transformers' `generate` plus a per-token entropy pass over the returned scores.

    python loadtest/baseline/transformers_generate.py --model MODEL_DIR \\
        --dataset datasets/gsm8k_test.jsonl --prompts 64 --group-size 8 \\
        --max-tokens 256 --batch-prompts 32 --device cuda --dtype bfloat16 --output report.json

Same work as `loadtest` against entroll: chat-formatted problems with the boxed-answer
instruction, G samples per prompt (`num_return_sequences`), temperature T, top_p = 1, no top_k,
up to `max_tokens` new tokens. Reports generated tokens/s (tokens up to and including EOS),
with the entropy pass timed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def problems(path: str, n: int) -> list[str]:
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.append((row.get("problem") or row.get("question")) + SUFFIX)
    return [out[i % len(out)] for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-prompts", type=int, default=8, help="prompts per generate call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(args.device)
    model.eval()
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in problems(args.dataset, args.prompts)
    ]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    generated = 0
    gen_s = entropy_s = 0.0
    entropy_sum = 0.0
    for start in range(0, len(texts), args.batch_prompts):
        batch = tok(texts[start : start + args.batch_prompts], return_tensors="pt", padding=True).to(args.device)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **batch,
                do_sample=True,
                temperature=args.temperature,
                top_p=1.0,
                top_k=0,
                num_return_sequences=args.group_size,
                max_new_tokens=args.max_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
            )
        sync()
        t1 = time.perf_counter()
        # Tokens up to and including the first EOS of each sequence.
        new = out.sequences[:, batch["input_ids"].shape[1] :]
        is_eos = new == tok.eos_token_id
        before_eos = (is_eos.cumsum(1) - is_eos.int()) == 0
        # Per-token entropy from the processed scores (temperature applied), masked likewise.
        with torch.no_grad():
            for t, scores in enumerate(out.scores):
                logp = torch.log_softmax(scores.float(), dim=-1)
                h = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
                entropy_sum += (h * before_eos[:, t]).sum().item()
        sync()
        t2 = time.perf_counter()
        generated += int(before_eos.sum().item())
        gen_s += t1 - t0
        entropy_s += t2 - t1

    report = {
        "engine": "transformers.generate",
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "prompts": args.prompts,
        "group_size": args.group_size,
        "max_tokens": args.max_tokens,
        "batch_prompts": args.batch_prompts,
        "generated_tokens": generated,
        "generate_s": gen_s,
        "entropy_s": entropy_s,
        "tokens_per_s": generated / (gen_s + entropy_s),
        "tokens_per_s_without_entropy": generated / gen_s,
        "entropy_mean": entropy_sum / max(generated, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
