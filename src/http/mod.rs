//! The HTTP layer, at the top: the server that a request meets first and everything it is
//! configured with. [`server`] holds the routes, the state they share and [`server::serve`];
//! [`validation`] checks a request's limits and applies its defaults; [`stream`] writes the
//! streamed answer and [`deadline`] bounds what a request waits for; [`error`] answers a failed
//! request with its status; [`auth`] decides who may call which route; [`listen`] accepts
//! connections under a cap and deadlines, and [`body`] reads a request's body under its own;
//! [`shutdown`] is the graceful shutdown's phases; [`config`] is the server's settings file,
//! from which every layer below takes its part.
//!
//! It may import every layer below (`weights`, `rollout`, `api`, `engine`, `stats`,
//! `telemetry`); nothing of the crate imports it.

pub mod auth;
pub mod body;
pub mod config;
pub mod deadline;
pub mod error;
pub mod listen;
pub mod server;
pub mod shutdown;
pub mod stream;
pub mod validation;
