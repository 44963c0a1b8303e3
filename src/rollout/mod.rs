//! The rollout layer: what happens to a validated request between the HTTP layer and the
//! engine. [`admission`] admits it or refuses it at once; [`service`] tokenizes its prompts
//! ([`request`]) and starts one engine sequence per sample; [`running`] regroups the finished
//! samples and answers, whole or group by group, built by [`assemble`] (per-token arrays, peak
//! flags, sums, the summary) with the verifier's rewards and advantages ([`rewards`]).
//! [`in_flight`] holds the live engine and carries the samples running across a weight swap as
//! the swap's policy says.
//!
//! It may import `api` (the wire types it fills), `engine`, `stats` and `telemetry`; nothing
//! above (weights swaps and HTTP routes build on it).

pub mod admission;
pub mod assemble;
pub mod in_flight;
pub mod request;
pub mod rewards;
pub mod running;
pub mod service;
