//! The weights layer: which weights are served, and how new ones arrive. [`swap`] loads new
//! weights beside the served ones, checks them against the served model and swaps them into
//! the rollout service (`POST /weights`); [`watch`] finds the versions a learner publishes in a
//! shared directory and swaps them in the same way; [`confine`] keeps a client's paths inside
//! the weights root; [`model_store`] is where the default model
//! is installed (`entroll fetch-model`).
//!
//! It may import `rollout` (the live engine a swap replaces), `api`, `engine` and `telemetry`;
//! nothing above: the HTTP layer hands the watcher what it needs (the service, the updater and
//! whether the server still serves), not its state.

pub mod confine;
pub mod model_store;
pub mod swap;
pub mod watch;
