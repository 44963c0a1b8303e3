//! The fast tier: the HTTP and rollout logic (validation, overload, cancellation, faults,
//! shutdown, rewards, weight updates and what they do to requests in flight, streamed answers,
//! sampling masks) on servers in this process, on a tiny random Llama, in one test binary.
//! `scripts/test-fast` runs it with the unit tests; the real-model tier (the other files of
//! `tests/`) runs the `entroll` binary on the default model.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod assembly;
mod auth;
mod bad_input;
mod cancellation;
mod device_kernels;
mod faults;
mod in_flight;
mod overload;
mod rewards;
mod sampling_mask;
mod shutdown;
mod startup;
mod streaming;
mod watch;
mod weights;
