//! Servers in this process: the library's own `AppState` and `serve` (what the binary runs), on
//! the tiny random Llama of `scripts/learner-env`, each on its own thread and runtime so it
//! outlives nothing and depends on no test's runtime.
//!
//! Metrics are process-wide, so the servers of this binary run one at a time (each holds a
//! global lock while it lives), and [`InProcess::metric`] reads counters relative to the
//! server's start: every test sees only its own server's events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use entroll::api::error::ApiError;
use entroll::engine::loader::{ConfiguredLoader, EngineLoader};
use entroll::engine::Engine;
use entroll::http::config::Config;
use entroll::http::server::{serve, AppState};
use entroll::http::shutdown::{Phase, Shutdown};
use entroll::telemetry::metrics::{self, Exporter};
use tokio::sync::oneshot;

use crate::common;

/// The tiny random Llama (2 layers, width 128, SmolLM2's tokenizer and vocabulary).
pub fn tiny_model() -> PathBuf {
    common::tiny_random_model("llama")
}

/// The process's metrics exporter (a recorder can be installed once per process).
fn exporter() -> Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            metrics::install(&ApiError::ERROR_TYPES).expect("install the metrics recorder")
        })
        .clone()
}

/// Held by each live server: one at a time per process (see the module comment).
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server running in this process.
pub struct InProcess {
    /// `http://127.0.0.1:port`.
    pub base: String,
    shutdown: Arc<Shutdown>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    baseline: HashMap<String, f64>,
    _exclusive: MutexGuard<'static, ()>,
}

/// The tiny model's settings, changed by `edit`.
pub fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config {
        model: tiny_model(),
        ..Config::default()
    };
    edit(&mut config);
    config
}

/// Starts a server on the tiny model with the settings `edit` makes.
pub fn start(edit: impl FnOnce(&mut Config)) -> InProcess {
    start_engine(config(edit), |engine| engine)
}

/// Starts a server with `config`, on the engine its model loads into, wrapped by `wrap`
/// (a fault injector, say).
pub fn start_engine(
    config: Config,
    wrap: impl FnOnce(Arc<dyn Engine>) -> Arc<dyn Engine> + Send + 'static,
) -> InProcess {
    let guard = exclusive();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let thread_config = config;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let loader = Arc::new(ConfiguredLoader(thread_config.engine()));
            let engine = loader
                .load(&thread_config.model)
                .await
                .expect("load the tiny model");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            let state = AppState::new(wrap(engine), loader, thread_config, exporter());
            ready_tx
                .send((base, state.shutdown.clone()))
                .expect("the test waits");
            serve(listener, state, async {
                let _ = stop_rx.await;
            })
            .await
        })
    });
    let (base, shutdown) = ready_rx
        .recv()
        .expect("the in-process server failed to start");
    let baseline = counters(&exporter().render());
    InProcess {
        base,
        shutdown,
        stop: Some(stop_tx),
        thread: Some(thread),
        baseline,
        _exclusive: guard,
    }
}

/// The cumulative samples (counters, histogram counts, sums and buckets) of an exposition.
fn counters(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            let name = sample.split('{').next()?;
            let cumulative = ["_total", "_count", "_sum", "_bucket"]
                .iter()
                .any(|s| name.ends_with(s));
            cumulative.then(|| Some((sample.to_string(), value.parse().ok()?)))?
        })
        .collect()
}

impl InProcess {
    /// The `/metrics` sample named exactly `name` (labels included): a gauge's value, or a
    /// counter's increase since this server started.
    pub async fn metric(&self, name: &str) -> f64 {
        common::metric(&self.base, name).await - self.baseline.get(name).copied().unwrap_or(0.0)
    }

    /// Delivers the shutdown signal (what SIGTERM is to the binary).
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits up to `within` for the server to stop, returning what `serve` returned.
    pub fn wait_stopped(&mut self, within: Duration) -> std::io::Result<()> {
        let thread = self.thread.take().expect("waited once");
        let started = std::time::Instant::now();
        while !thread.is_finished() {
            assert!(
                started.elapsed() < within,
                "the server did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().expect("the server thread panicked")
    }
}

impl Drop for InProcess {
    /// Stops the server at once: whatever still runs is cancelled, not waited for.
    fn drop(&mut self) {
        self.shutdown.advance(Phase::Cancelling);
        self.signal();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl common::Base for InProcess {
    fn base(&self) -> &str {
        &self.base
    }
}
