//! The fast tier: the HTTP and rollout logic (validation, keys, hostile connections, overload,
//! cancellation, faults, shutdown, rewards, weight updates and what they do to requests in
//! flight, streamed answers, sampling masks, what errors and logs reveal) on servers in this
//! process (the `entroll` binary where a test needs its environment or its log), on a tiny
//! random Llama, in one test binary.
//! `scripts/test-fast` runs it with the unit tests; the real-model tier (`tests/model`) runs
//! the `entroll` binary on the default model.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod alternatives;
mod assembly;
mod auth;
mod bad_input;
mod cancellation;
mod connections;
mod device_kernels;
mod faults;
mod frameworks;
mod in_flight;
mod leaks;
mod openai;
mod overload;
mod rewards;
mod sampling_mask;
mod shutdown;
mod startup;
mod streaming;
mod watch;
mod weights;
