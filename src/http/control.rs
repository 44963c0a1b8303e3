//! What every dialect's control routes do, once: load and swap in weights from a path on the
//! server (`POST /weights`, vLLM's `/update_weights`, SGLang's `/update_weights_from_disk`),
//! and pause or resume generation (vLLM's `/pause` and `/resume`, SGLang's `/pause_generation`
//! and `/continue_generation`). The routes only translate their dialect.

use std::sync::Arc;

use super::state::AppState;
use crate::api::error::ApiError;
use crate::api::weights::{PauseMode, WeightsRequest, WeightsResponse};
use crate::telemetry::metrics::weights_rejected;

/// Serves the weights `request` names, once its path is confined to the weights root; the
/// update runs as `POST /weights`' (`crate::weights::swap`).
pub async fn update_weights(
    state: &Arc<AppState>,
    request: Result<WeightsRequest, ApiError>,
) -> Result<WeightsResponse, ApiError> {
    let request = state.accepting().and(request).and_then(|mut request| {
        let path = state.config.weights_root().confine(&request.path)?;
        request.path = path.display().to_string();
        Ok(request)
    });
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            weights_rejected("http");
            tracing::warn!(error = ?e.to_string(), "weight update refused; the served weights are unchanged");
            return Err(e);
        }
    };
    state.weights.update(&state.service, request, "http").await
}

/// Pauses generation under `mode`, and returns once it holds: under `wait` and `abort` once
/// every request started before it was answered (or the pause was lifted or changed
/// meanwhile), under `keep` at once (the running samples
/// stop at their next token, and what they drew until then stays theirs).
pub async fn pause(state: &AppState, mode: PauseMode) {
    state.service.pause(mode);
    if mode != PauseMode::Keep {
        state.service.drained(mode).await;
    }
}

/// Empties the engine's prefix cache (what vLLM's `/reset_prefix_cache` and SGLang's
/// `/flush_cache` ask for); returns the blocks dropped (`None`: the engine keeps no cache it
/// can flush, mistral.rs). Running sequences keep their blocks; a later request for the same
/// prompt computes it again.
pub async fn flush_cache(state: &AppState) -> Result<Option<usize>, ApiError> {
    let engine = state.service.live().engine.clone();
    Ok(engine.flush_cache().await?)
}
