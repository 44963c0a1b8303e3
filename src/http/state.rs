//! The state every handler shares ([`AppState`]): the rollout service, the settings, the
//! metrics, the shutdown phase and the weight updater, and whether the server still takes new
//! work.

use std::sync::Arc;

use axum::extract::FromRef;

use super::body::BodyLimits;
use super::config::Config;
use super::shutdown::{Phase, Shutdown};
use crate::api::error::ApiError;
use crate::engine::loader::EngineLoader;
use crate::engine::Engine;
use crate::rollout::service::RolloutService;
use crate::telemetry::metrics::Exporter;
use crate::weights::swap::WeightUpdater;

/// Shared state of every handler.
pub struct AppState {
    /// The rollout service.
    pub service: Arc<RolloutService>,
    /// The resolved settings.
    pub config: Config,
    /// Renders the Prometheus metrics.
    pub metrics: Exporter,
    /// Shutdown phase, watched by every request.
    pub shutdown: Arc<Shutdown>,
    /// Loads and swaps in new weights.
    pub weights: Arc<WeightUpdater>,
    /// Unix seconds when the server started (`/v1/models`' `created`).
    pub started: u64,
}

impl AppState {
    /// A server's state: `engine` serves weights version 0; `loader` loads the next weights.
    pub fn new(
        engine: Arc<dyn Engine>,
        loader: Arc<dyn EngineLoader>,
        config: Config,
        metrics: Exporter,
    ) -> Arc<Self> {
        Arc::new(Self {
            service: Arc::new(RolloutService::new(engine, &config.rollout())),
            weights: Arc::new(WeightUpdater::new(
                loader,
                config.weights_in_flight,
                config.max_engines,
            )),
            config,
            metrics,
            shutdown: Arc::new(Shutdown::default()),
            started: unix_now(),
        })
    }
}

impl FromRef<Arc<AppState>> for BodyLimits {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.config.body()
    }
}

impl AppState {
    /// Refuses new work once shutdown has begun.
    pub fn accepting(&self) -> Result<(), ApiError> {
        match self.shutdown.phase() {
            Phase::Serving | Phase::Announcing => Ok(()),
            Phase::Draining | Phase::Cancelling => Err(ApiError::ShuttingDown),
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
