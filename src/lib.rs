//! entroll: a rollout and scoring server for reinforcement learning with verifiable rewards.
//!
//! A training loop POSTs prompts to `/rollouts`; entroll generates G samples per prompt on an
//! inference engine and returns every generated token with the statistics of the distribution
//! it was drawn from (log-prob, entropy, SIREN nucleus, peak flags), per `docs/statistics.md`.
//!
//! Layout: [`api`] (wire types) → [`server`] (routes) → [`validation`] (limits, defaults, then
//! tokens) → [`rollout`] (admission and fan-out) → [`engine`] (the engine trait and its
//! implementations; it imports no HTTP type), which calls [`sampling`] and [`stats`] for every
//! token; [`rewards`] scores answers with the `verifier` crate; [`assemble`] builds the response
//! (peak flags, sums, summary). [`weights`] swaps in new weights, and [`in_flight`] carries
//! the requests running across a swap as its policy says. [`error`] maps failures to HTTP
//! answers; [`panic`] and [`quantile`] are shared helpers.

pub mod api;
pub mod assemble;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod in_flight;
pub mod mask_codec;
pub mod metrics;
pub mod model_store;
pub mod panic;
pub mod quantile;
pub mod rewards;
pub mod rollout;
pub mod sampling;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod stream;
#[cfg(any(test, feature = "native"))]
mod test_rng;
pub mod validation;
pub mod watch;
pub mod weights;
