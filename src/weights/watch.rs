//! `watch_weights`: weights that reach every replica through a shared directory.
//!
//! A learner publishes version `v` by writing the directory `DIR/<v>/` (a safetensors
//! checkpoint, as `POST /weights` takes) and then an empty file `DIR/<v>/READY`. Every replica
//! watching `DIR` loads the highest complete version above the one it serves, with the same
//! checks and atomic swap as `POST /weights` ([`WeightUpdater`]): every request after the swap
//! runs on the new version, the samples running do what `weights_in_flight` says.
//! Directories without `READY` are still being written and are left alone; a version that is
//! refused (another architecture, unreadable weights) is logged with the reason, counted in
//! `entroll_weight_updates_total{outcome="rejected",source="watch"}`, and not tried again; one
//! refused because `max_engines` engines are in memory is tried again on the next look. A
//! replica that starts (or restarts) catches up before it listens, so it never serves an older
//! version than the directory offers. The directory is polled, which works on shared volumes
//! where change notifications do not cross hosts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::swap::WeightUpdater;
use crate::api::error::ApiError;
use crate::api::weights::WeightsRequest;
use crate::rollout::service::RolloutService;
use crate::telemetry::metrics;

/// The file a version's directory holds once it is complete.
pub const READY: &str = "READY";

/// The complete versions under `dir`: subdirectories named by a version number that hold
/// [`READY`], in increasing order. Other entries are ignored.
pub fn complete_versions(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            entry.path().join(READY).is_file().then_some(version)
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// The version to load next: the highest complete one above `served` that was not refused.
pub fn next_version(complete: &[u64], served: u64, refused: &BTreeSet<u64>) -> Option<u64> {
    highest(complete, refused).filter(|&v| v > served)
}

/// The highest complete version not refused, when it cannot load: it is below `served`, or
/// equal to it while the served weights are not the ones the watcher `loaded` (a `POST
/// /weights` went ahead of the learner, and the learner's version of that number is skipped).
pub fn stale_version(
    complete: &[u64],
    served: u64,
    loaded: Option<u64>,
    refused: &BTreeSet<u64>,
) -> Option<u64> {
    highest(complete, refused).filter(|&v| v < served || (v == served && loaded != Some(v)))
}

fn highest(complete: &[u64], refused: &BTreeSet<u64>) -> Option<u64> {
    complete
        .iter()
        .rev()
        .copied()
        .find(|v| !refused.contains(v))
}

/// The watcher of one server: the service it updates, its updater, and what it refused so far.
pub struct Watcher {
    dir: PathBuf,
    service: Arc<RolloutService>,
    updater: Arc<WeightUpdater>,
    refused: BTreeSet<u64>,
    /// The version this watcher last swapped in.
    loaded: Option<u64>,
    /// The stale version last reported, so each is logged and counted once.
    reported_stale: Option<u64>,
}

impl Watcher {
    /// A watcher of `dir` that swaps the versions it finds into `service` with `updater`.
    pub fn new(dir: PathBuf, service: Arc<RolloutService>, updater: Arc<WeightUpdater>) -> Self {
        Self {
            dir,
            service,
            updater,
            refused: BTreeSet::new(),
            loaded: None,
            reported_stale: None,
        }
    }

    /// Loads the highest complete version above the served one, if there is one; returns the
    /// version now served.
    pub async fn catch_up(&mut self) -> u64 {
        let served = self.service.live().version;
        let complete = match complete_versions(&self.dir) {
            Ok(complete) => complete,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot read the weights directory: {e}");
                return served;
            }
        };
        if let Some(stale) = stale_version(&complete, served, self.loaded, &self.refused) {
            if self.reported_stale != Some(stale) {
                self.reported_stale = Some(stale);
                metrics::weights_stale();
                tracing::warn!(
                    dir = ?self.dir.display().to_string(),
                    published = stale,
                    served,
                    "the highest published weights version is not above the served one, \
                     which another update loaded: it is skipped; published versions load \
                     again once one exceeds the served version"
                );
            }
        }
        let Some(version) = next_version(&complete, served, &self.refused) else {
            return served;
        };
        let path = self.dir.join(version.to_string());
        let request = WeightsRequest {
            path: path.display().to_string(),
            version: Some(version),
            in_flight: None,
        };
        match self.updater.update(&self.service, request, "watch").await {
            Ok(_) => {
                self.loaded = Some(version);
                version
            }
            Err(ApiError::EnginesBusy { alive, .. }) => {
                tracing::debug!(
                    version,
                    alive,
                    "weights version waits: requests still run on older weights"
                );
                self.service.live().version
            }
            Err(e) => {
                tracing::warn!(
                    version,
                    "weights version refused; it will not be tried again: {e}"
                );
                self.refused.insert(version);
                self.service.live().version
            }
        }
    }

    /// Catches up every `every` until `serving` says the server stopped accepting work.
    pub async fn run(mut self, every: Duration, serving: impl Fn() -> bool) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !serving() {
                return;
            }
            self.catch_up().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_complete_version_above_the_served_one_that_was_not_refused() {
        let none = BTreeSet::new();
        assert_eq!(next_version(&[1, 2, 5], 0, &none), Some(5));
        assert_eq!(next_version(&[1, 2, 5], 5, &none), None);
        assert_eq!(next_version(&[1, 2, 5], 7, &none), None);
        assert_eq!(next_version(&[], 0, &none), None);
        let refused: BTreeSet<u64> = [5].into();
        assert_eq!(next_version(&[1, 2, 5], 0, &refused), Some(2));
        assert_eq!(next_version(&[1, 2, 5], 2, &refused), None);
        assert_eq!(stale_version(&[1, 2, 5], 7, None, &none), Some(5));
        assert_eq!(stale_version(&[1, 2, 5], 7, Some(5), &none), Some(5));
        // The version the watcher loaded itself is not stale; one a client loaded is.
        assert_eq!(stale_version(&[1, 2, 5], 5, Some(5), &none), None);
        assert_eq!(stale_version(&[1, 2, 5], 5, None, &none), Some(5));
        assert_eq!(stale_version(&[1, 2, 5], 3, None, &none), None);
        assert_eq!(stale_version(&[1, 2, 5], 7, None, &refused), Some(2));
        assert_eq!(stale_version(&[], 7, None, &none), None);
    }

    #[test]
    fn only_numbered_directories_with_ready_are_complete() {
        let dir = std::env::temp_dir().join(format!("entroll-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, ready) in [("3", true), ("12", true), ("7", false), ("x", true)] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            if ready {
                std::fs::write(dir.join(name).join(READY), "").unwrap();
            }
        }
        // A file named like a version is not a version directory.
        std::fs::write(dir.join("20"), "").unwrap();
        assert_eq!(complete_versions(&dir).unwrap(), [3, 12]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(complete_versions(&dir).is_err());
    }
}
