//! The HTTP layer, at the top: the server that a request meets first and everything it is
//! configured with. [`server`] holds the routes and [`server::serve`], [`state`] the state they
//! share; [`openai`] serves OpenAI's dialect on the same service, [`vllm`] and [`sglang`] those
//! engines' own generation and control routes, and [`control`] what every dialect's control
//! routes do; [`validation`] checks a
//! request's limits and applies its defaults; [`stream`] writes the streamed answer and
//! [`deadline`] bounds what a request waits for; [`error`] answers a failed request with its
//! status; [`auth`] decides who may call which route; [`listen`] accepts connections under a cap
//! and deadlines, and [`body`] reads a request's body under its own; [`shutdown`] is the
//! graceful shutdown's phases; [`config`] is the server's settings file, from which every layer
//! below takes its part.
//!
//! It may import every layer below (`weights`, `rollout`, `api`, `engine`, `stats`,
//! `telemetry`); nothing of the crate imports it.

pub mod auth;
pub mod body;
pub mod config;
pub mod control;
pub mod deadline;
pub mod error;
pub mod listen;
pub mod openai;
pub mod server;
pub mod sglang;
pub mod shutdown;
pub mod state;
pub mod stream;
pub mod validation;
pub mod vllm;
