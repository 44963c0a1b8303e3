//! `POST /weights`: load new weights beside the served ones, check them, and swap them in.
//!
//! The new engine is loaded while the old one keeps serving. It must declare the same
//! architecture (`config.json`'s shape keys, or what a GGUF header says of them), checked
//! before a tensor is read, and produce the same vocabulary width; otherwise the update is
//! refused and nothing changes. The swap is atomic: every request after it runs on
//! the new weights; the samples running on the old ones finish there (and report the old
//! version), abort, or go on under the new weights, as the update's `in_flight` says
//! ([`crate::rollout::in_flight`]). The old engine is dropped with its last sample; the new one
//! starts with an empty prefix cache. Updates run one at a time.
//!
//! At most `max_engines` engines are in memory at once: the served one, older ones still
//! finishing their requests, and the one an update loads. An update that would load one more
//! is refused (429 `overloaded`) before it reads anything, so a loop of updates under the
//! `finish` policy cannot exhaust the host's or the GPU's memory; it succeeds once the requests
//! on older weights have finished (the watched directory retries it on its next look).

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::api::error::ApiError;
use crate::api::weights::{InFlight, WeightsRequest, WeightsResponse};
use crate::engine::checkpoint;
use crate::engine::loader::EngineLoader;
use crate::engine::Engine;
use crate::rollout::in_flight::Live;
use crate::rollout::service::RolloutService;
use crate::telemetry::metrics;

/// The largest weights version: 2^53 - 1, the largest integer every JSON reader (JavaScript's,
/// Python's float parsers) keeps exact, so no client misreads a version, and one far enough
/// from `u64::MAX` that the served version + 1 never wraps.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// How long reading a checkpoint's metadata may take before the update is refused.
const INSPECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A blocking task of an update that panicked: the panic's text goes to the log only.
fn task_failed(what: &str, join: &tokio::task::JoinError) -> ApiError {
    tracing::error!(error = ?join.to_string(), "{what} failed");
    ApiError::Internal(format!(
        "{what} failed (a bug); the server's log has the details"
    ))
}

/// The first line of `error`'s chain: what went wrong, without the backtrace some errors
/// (candle's, with `RUST_BACKTRACE` set) carry in their text. The whole error goes to the log.
fn first_line(error: &impl std::fmt::Display) -> String {
    let text = format!("{error:#}");
    text.lines().next().unwrap_or_default().to_string()
}

/// Loads and swaps in new weights for a [`RolloutService`].
pub struct WeightUpdater {
    loader: Arc<dyn EngineLoader>,
    /// The policy of updates that do not name one.
    in_flight: InFlight,
    /// Engines in memory at once, the one being loaded included.
    max_engines: usize,
    /// Engines this updater replaced; alive while requests still run on them.
    retired: Mutex<Vec<Weak<dyn Engine>>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl WeightUpdater {
    /// An updater that loads engines with `loader`, keeping at most `max_engines` in memory;
    /// updates that name no `in_flight` policy apply `in_flight`.
    pub fn new(loader: Arc<dyn EngineLoader>, in_flight: InFlight, max_engines: usize) -> Self {
        Self {
            loader,
            in_flight,
            max_engines,
            retired: Mutex::new(Vec::new()),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Engines in memory now: the served one and the replaced ones requests still run on.
    pub fn engines_alive(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|engine| engine.strong_count() > 0);
        1 + retired.len()
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
            match e {
                ApiError::EnginesBusy { .. } => metrics::weights_busy(source),
                _ => metrics::weights_rejected(source),
            }
            // Debug, not Display: a client's path is escaped, so it cannot forge log lines.
            tracing::warn!(source, error = ?e.to_string(), "weight update refused; the served weights are unchanged");
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
        let version = request.version.unwrap_or(current.version.saturating_add(1));
        if version > MAX_VERSION {
            return Err(ApiError::Invalid(format!(
                "version {version} exceeds the largest weights version, {MAX_VERSION} (2^53 - 1)"
            )));
        }
        if version <= current.version {
            return Err(ApiError::Invalid(format!(
                "version {version} must exceed the served version {}",
                current.version
            )));
        }
        let alive = self.engines_alive();
        if alive >= self.max_engines {
            return Err(ApiError::EnginesBusy {
                alive,
                max: self.max_engines,
            });
        }
        let path = Path::new(&request.path);
        let served = current.engine.info();
        // Off the async workers, as the load below: a header on a slow or hostile file must
        // not stall other requests or shutdown.
        let inspected = {
            let path = path.to_path_buf();
            tokio::time::timeout(
                INSPECT_LIMIT,
                tokio::task::spawn_blocking(move || checkpoint::inspect(&path)),
            )
            .await
        };
        let shape = match inspected {
            Ok(Ok(Ok(shape))) => shape,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = ?format!("{e:#}"), "cannot read the checkpoint's metadata");
                return Err(ApiError::Invalid(first_line(&e)));
            }
            Ok(Err(join)) => return Err(task_failed("inspecting the checkpoint", &join)),
            Err(_) => {
                return Err(ApiError::Invalid(format!(
                    "reading {}'s metadata took longer than {} s",
                    request.path,
                    INSPECT_LIMIT.as_secs()
                )))
            }
        };
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
        let loaded = {
            let (loader, path, runtime) = (
                self.loader.clone(),
                path.to_path_buf(),
                tokio::runtime::Handle::current(),
            );
            tokio::task::spawn_blocking(move || runtime.block_on(loader.load(&path)))
                .await
                .map_err(|join| task_failed("loading the weights", &join))?
        };
        let engine = loaded.map_err(|e| {
            tracing::warn!(error = ?format!("{e:#}"), "cannot load the weights");
            ApiError::Invalid(format!(
                "cannot load weights from {}: {}",
                request.path,
                first_line(&e)
            ))
        })?;
        let loaded = engine.info();
        if loaded.vocab_size != served.vocab_size {
            return Err(ApiError::Invalid(format!(
                "{} has a vocabulary of {} rows, the served model {}",
                request.path, loaded.vocab_size, served.vocab_size
            )));
        }
        let load = started.elapsed();
        let in_flight = request.in_flight.unwrap_or(self.in_flight);
        let response = WeightsResponse {
            weights_version: version,
            previous_version: current.version,
            model: loaded.id.clone(),
            path: request.path,
            load_ms: load.as_millis() as u64,
            in_flight,
        };
        service.swap(Live { engine, version }, in_flight);
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&current.engine));
        metrics::weights_swapped(version, load, source);
        tracing::info!(
            version,
            path = ?response.path,
            load_ms = response.load_ms,
            in_flight = in_flight.as_str(),
            "new weights serving"
        );
        Ok(response)
    }
}
