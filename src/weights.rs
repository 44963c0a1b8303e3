//! `POST /weights`: load new weights beside the served ones, check them, and swap them in.
//!
//! The new engine is loaded while the old one keeps serving. It must declare the same
//! architecture (`config.json` shape keys) and produce the same vocabulary width; otherwise the
//! update is refused and nothing changes. The swap is atomic: requests that started before it
//! finish on the old weights (and report the old version), every request after it runs on the
//! new ones. The old engine is dropped with its last request; the new one starts with an empty
//! prefix cache. Updates run one at a time.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{WeightsRequest, WeightsResponse};
use crate::checkpoint;
use crate::engine::EngineLoader;
use crate::error::ApiError;
use crate::metrics;
use crate::rollout::{Live, RolloutService};

/// Loads and swaps in new weights for a [`RolloutService`].
pub struct WeightUpdater {
    loader: Arc<dyn EngineLoader>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl WeightUpdater {
    /// An updater that loads engines with `loader`.
    pub fn new(loader: Arc<dyn EngineLoader>) -> Self {
        Self {
            loader,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Serves the weights of `request` from now on, or leaves everything as it was (and says
    /// why in the log and in `entroll_weight_updates_total{outcome="rejected"}`). `source`
    /// labels the metrics: `http` (POST /weights) or `watch` (the watched directory).
    pub async fn update(
        &self,
        service: &RolloutService,
        request: WeightsRequest,
        source: &'static str,
    ) -> Result<WeightsResponse, ApiError> {
        let result = self.swap(service, request, source).await;
        if let Err(e) = &result {
            metrics::weights_rejected(source);
            tracing::warn!(source, error = %e, "weight update refused; the served weights are unchanged");
        }
        result
    }

    async fn swap(
        &self,
        service: &RolloutService,
        request: WeightsRequest,
        source: &'static str,
    ) -> Result<WeightsResponse, ApiError> {
        let _turn = self.one_at_a_time.lock().await;
        let current = service.live();
        let version = request.version.unwrap_or(current.version + 1);
        if version <= current.version {
            return Err(ApiError::Invalid(format!(
                "version {version} must exceed the served version {}",
                current.version
            )));
        }
        let path = Path::new(&request.path);
        let served = current.engine.info();
        let shape = checkpoint::inspect(path).map_err(|e| ApiError::Invalid(e.to_string()))?;
        if let (Some(old), Some(new)) = (&served.shape, &shape) {
            let differences = old.differences(new);
            if !differences.is_empty() {
                return Err(ApiError::Invalid(format!(
                    "{} has another architecture than the served model ({})",
                    request.path,
                    differences.join(", ")
                )));
            }
        }
        let started = Instant::now();
        let engine = self.loader.load(path).await.map_err(|e| {
            ApiError::Invalid(format!("cannot load weights from {}: {e:#}", request.path))
        })?;
        let loaded = engine.info();
        if loaded.vocab_size != served.vocab_size {
            return Err(ApiError::Invalid(format!(
                "{} has a vocabulary of {} rows, the served model {}",
                request.path, loaded.vocab_size, served.vocab_size
            )));
        }
        let load = started.elapsed();
        let response = WeightsResponse {
            weights_version: version,
            previous_version: current.version,
            model: loaded.id.clone(),
            path: request.path,
            load_ms: load.as_millis() as u64,
        };
        service.swap(Live { engine, version });
        metrics::weights_swapped(version, load, source);
        tracing::info!(
            version,
            path = %response.path,
            load_ms = response.load_ms,
            "new weights serving"
        );
        Ok(response)
    }
}
