//! The statistics layer: the arithmetic of one next-token distribution, with no engine, no
//! request and no I/O. [`distribution`] measures a logits row (log-prob, entropy, the SIREN
//! nucleus) and draws from it; [`sampling`] is the seeded counter-based draw and the per-step
//! sampler the engines call; [`quantile`] is the one quantile rule (peak thresholds, the QAE
//! baseline); [`mask_codec`] is the wire form of a sampling mask.
//!
//! It may import nothing else of the crate (it sits beside `telemetry`, at the bottom): every
//! layer above builds on it.

pub mod distribution;
pub mod mask_codec;
pub mod quantile;
pub mod sampling;
#[cfg(any(test, feature = "native"))]
pub(crate) mod test_rng;
