//! entroll: a rollout and scoring server for reinforcement learning with verifiable rewards.
//!
//! A training loop POSTs prompts to `/rollouts`; entroll generates G samples per prompt on an
//! inference engine and returns every generated token with the statistics of the distribution
//! it was drawn from (log-prob, entropy, SIREN nucleus, peak flags), per `docs/statistics.md`.
//!
//! The crate is built in layers, one folder each, bottom first; a layer imports only the layers
//! below it, and no two modules import each other (`scripts/check-layers` checks both):
//!
//! - [`telemetry`]: every Prometheus metric, named and recorded in one place, and panic
//!   messages.
//! - [`stats`]: the statistics of one logits row, the seeded draw, the quantile rule and the
//!   sampling mask's wire form.
//! - [`engine`]: the engine trait and its implementations (entroll's own batched engine on
//!   candle in `native`, mistral.rs in `mistralrs`), their settings, and what a checkpoint
//!   declares; it calls `stats` for every token and imports no HTTP type.
//! - [`api`]: the wire format: request and response types of every route, and the errors a
//!   request can end in with their `error_type`.
//! - [`rollout`]: admission, tokenization, one engine sequence per sample, the assembly of the
//!   answer (peak flags, sums, summary), rewards from the `verifier` crate, and what a weight
//!   swap does to the samples in flight.
//! - [`weights`]: loading, checking and swapping in new weights, the watched weights directory,
//!   and the model store.
//! - [`http`]: the routes, validation (limits and defaults), streamed answers, deadlines,
//!   errors as HTTP statuses, graceful shutdown, and the server's settings file.
//!
//! Above them all: [`eval`] (the `entroll eval` client, which speaks the wire format) and the
//! `entroll` binary.

pub mod api;
pub mod engine;
pub mod eval;
pub mod http;
pub mod rollout;
pub mod stats;
pub mod telemetry;
pub mod weights;
