//! The real-model tier: the `entroll` binary serving the default model (and small random
//! Llama, Qwen2 and Qwen3 checkpoints), checked through its public API against independent
//! references: the oracle's plain forward, mistral.rs, a real Prometheus, the verifier, and
//! the statistics' own definitions. One test binary, so its tests share one default server
//! (`common::server`) and fill both cores between them.
//! `tests/fast` holds the HTTP and rollout logic on a tiny random model.

#[path = "../common/mod.rs"]
mod common;

mod engines;
mod eval;
mod logprob_entropy;
mod native;
mod oracle;
mod prometheus;
mod rewards;
mod rollouts;
