"""Checkpoints entroll can serve: Hugging Face safetensors directories.

`python -m entroll_learner.checkpoints MODEL.gguf OUT_DIR` converts the default GGUF model
(transformers dequantizes it to float32; the tokenizer and chat template come from its metadata).
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
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
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


def main() -> int:
    parser = argparse.ArgumentParser(description="Convert a GGUF model into a safetensors directory.")
    parser.add_argument("gguf")
    parser.add_argument("out")
    args = parser.parse_args()
    print(convert_gguf(args.gguf, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
