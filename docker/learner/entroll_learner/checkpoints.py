"""Checkpoints entroll can serve: Hugging Face safetensors directories.

`python -m entroll_learner.checkpoints convert MODEL.gguf OUT_DIR` converts the default GGUF model
(transformers dequantizes it to float32; the tokenizer and chat template come from its metadata).
`python -m entroll_learner.checkpoints random FAMILY TOKENIZER_DIR OUT_DIR [--shape S]` writes a
randomly initialised Llama, Qwen2 or Qwen3 model with the tokenizer of TOKENIZER_DIR: `tiny` (entroll's
tests check its engines on these architectures) or `qwen2-1.5b` (the
shape of Qwen2-1.5B, in bf16, for throughput benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel


def save(model: PreTrainedModel, tokenizer, out: str) -> str:
    """Writes `model` and `tokenizer` to `out` atomically, as a directory entroll loads.

    transformers 5 writes the RoPE base only under `rope_parameters`; mistral.rs reads
    `rope_theta`, so it is written at the top level too.
    """
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    config_path = os.path.join(tmp, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    # Readable by entroll, which runs as another user (its image's unprivileged `entroll`):
    # safetensors writes its file private (0600).
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), 0o644)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


# The file that marks a published version complete (entroll's `watch_weights`).
READY = "READY"


def publish(model: PreTrainedModel, tokenizer, directory: str, version: int) -> str:
    """Publishes `model` as weights version `version` for every replica watching `directory`
    (entroll's `watch_weights`): the checkpoint as `directory/<version>/`, then the empty file
    `READY`, which tells the replicas the version is complete."""
    out = save(model, tokenizer, os.path.join(directory, str(version)))
    with open(os.path.join(out, READY), "w"):
        pass
    return out


def convert_gguf(gguf: str, out: str, dtype: torch.dtype = torch.float32) -> str:
    """Converts a GGUF file into a safetensors directory at `out` (kept if already complete)."""
    needed = ("config.json", "tokenizer.json", "model.safetensors")
    if all(os.path.exists(os.path.join(out, f)) for f in needed):
        return out
    folder, name = os.path.split(os.path.abspath(gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the tensors
    # are already dequantized, so copy them into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    return save(model, tokenizer, out)


# Random model shapes: config overrides, and the weights' dtype.
SHAPES = {
    # 2 layers; weights, biases and norm gains large enough that the distributions depend on
    # the context (a test of the forward, not of a trained model).
    "tiny": (
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
             tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-6),
        torch.float32,
    ),
    # Qwen2-1.5B's published shape (151,936 vocabulary rows, tied embeddings).
    "qwen2-1.5b": (
        dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
             num_attention_heads=12, num_key_value_heads=2, head_dim=128,
             max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0,
             rms_norm_eps=1e-6),
        torch.bfloat16,
    ),
}

# Shapes whose random checkpoint gets a trained model's peaked logits: the final norm's gain.
# The embedding rows (tied with the output) are drawn from N(0, 0.02²) and the final norm leaves
# each hidden vector with an RMS equal to its gain, so a logit has σ ≈ gain · 0.02 · √hidden
# (0.78 · gain at hidden 1,536). Gain 5.5 gives σ ≈ 4.3: about 2–3 nats of entropy over 151,936
# tokens and a nucleus of tens to hundreds of tokens; the default gain 1 leaves the rows nearly
# flat (~ln V = 11.9 nats), the statistics kernel's worst case, which `entroll bench-kernels`
# measures on its own.
PEAKED_NORM_GAIN = {"qwen2-1.5b": 5.5}


def random_model(family: str, tokenizer_dir: str, out: str, shape: str = "tiny", seed: int = 0) -> str:
    """A `family` (llama, qwen2 or qwen3) model of `shape` (see SHAPES) with random weights, saved at
    `out` (kept if already there) with the tokenizer and chat template of `tokenizer_dir`."""
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    from transformers import AutoConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    overrides, dtype = SHAPES[shape]
    config = AutoConfig.for_model(
        family,
        **{"vocab_size": len(tokenizer), **overrides},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if shape == "tiny":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.4 if name.endswith("bias") else 0.2)
    if shape in PEAKED_NORM_GAIN:
        with torch.no_grad():
            model.model.norm.weight.fill_(PEAKED_NORM_GAIN[shape])
    return save(model, tokenizer, out)


def main() -> int:
    parser = argparse.ArgumentParser(description="Write safetensors checkpoints entroll serves.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert a GGUF model")
    convert.add_argument("gguf")
    convert.add_argument("out")
    random = commands.add_parser("random", help="a small random Llama/Qwen2/Qwen3 model")
    random.add_argument("family", choices=["llama", "qwen2", "qwen3"])
    random.add_argument("tokenizer_dir")
    random.add_argument("out")
    random.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    args = parser.parse_args()
    if args.command == "convert":
        print(convert_gguf(args.gguf, args.out))
    else:
        print(random_model(args.family, args.tokenizer_dir, args.out, args.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
