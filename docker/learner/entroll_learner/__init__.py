"""A SIREN / AER learner that trains a policy through entroll.

Each step: POST /rollouts (grouped samples with per-token statistics and verified rewards) →
loss (Dr.GRPO policy loss plus SIREN's self-anchored top-p entropy term, or AER's adaptive
entropy bonus) → optimizer step → save a safetensors checkpoint → POST /weights, so the next
rollouts come from the updated policy.
"""
