//! The telemetry layer, at the bottom: every Prometheus metric, named and recorded in
//! [`metrics`], and the panic messages that the engines and the HTTP layer report ([`panic`]).
//!
//! It may import nothing else of the crate; every layer above may record through it. What it
//! records is passed in as plain values (counts, durations, per-token slices), so it knows no
//! engine, request or wire type.

pub mod metrics;
pub mod panic;
