//! Engine failure isolation: a request whose generation fails, or whose engine call or handler
//! panics, gets a 500 `{error, error_type}` while the requests beside it complete, and the
//! server keeps serving.
//!
//! The engine is the real native engine on the tiny model, wrapped in a fault injector that
//! fails or panics for prompts carrying a marker (real engines fail rarely and not on demand);
//! every other prompt goes through untouched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use entroll::engine::{
    Engine, EngineError, ModelInfo, PromptInput, SequenceOutput, SequenceRequest,
};
use serde_json::{json, Value};

use crate::harness::{self, InProcess};

/// What the injector does to a marked prompt.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `generate` runs the real engine, then reports a generation error.
    Fail,
    /// `generate` panics inside its sequence task.
    PanicInEngine,
}

/// The real engine with faults injected for marked prompts.
struct FaultInjector {
    inner: Arc<dyn Engine>,
    doomed: Mutex<HashMap<Vec<u32>, Fault>>,
}

#[async_trait]
impl Engine for FaultInjector {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        self.inner.detokenize(ids, skip_special).await
    }

    async fn tokenize(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError> {
        let text = match prompt {
            PromptInput::Text(t) => t.clone(),
            _ => String::new(),
        };
        if text.contains("[panic in handler]") {
            panic!("injected panic while handling the request");
        }
        let ids = self.inner.tokenize(prompt).await?;
        let fault = if text.contains("[fail in engine]") {
            Some(Fault::Fail)
        } else if text.contains("[panic in engine]") {
            Some(Fault::PanicInEngine)
        } else {
            None
        };
        if let Some(f) = fault {
            self.doomed.lock().unwrap().insert(ids.clone(), f);
        }
        Ok(ids)
    }

    async fn generate(&self, request: SequenceRequest) -> Result<SequenceOutput, EngineError> {
        let fault = self.doomed.lock().unwrap().get(&*request.prompt).copied();
        match fault {
            None => self.inner.generate(request).await,
            Some(Fault::Fail) => {
                self.inner.generate(request).await?;
                Err(EngineError::Generation(
                    "injected generation failure".into(),
                ))
            }
            Some(Fault::PanicInEngine) => panic!("injected panic inside the engine call"),
        }
    }
}

/// A server in this process on the tiny model, its engine wrapped in the fault injector.
fn start() -> InProcess {
    harness::start_engine(harness::config(|_| {}), |inner| {
        Arc::new(FaultInjector {
            inner,
            doomed: Mutex::new(HashMap::new()),
        })
    })
}

async fn post(base: &str, text: &str) -> (u16, Value) {
    let body = json!({
        "prompts": [{"text": text}],
        "group_size": 2,
        "sampling": {"max_tokens": 8, "seed": 5}
    });
    crate::common::post_to(base, body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_panics_fail_only_their_own_request() {
    let server = start();
    let base = server.base.clone();
    let (normal, failing, engine_panic, handler_panic) = tokio::join!(
        post(&base, "Name three colours."),
        post(&base, "[fail in engine] Name three colours."),
        post(&base, "[panic in engine] Name three colours."),
        post(&base, "[panic in handler] Name three colours."),
    );

    assert_eq!(normal.0, 200, "{}", normal.1);
    let samples = crate::common::samples(&normal.1);
    assert_eq!(samples.len(), 2);
    assert!(samples.iter().all(|s| s["length"].as_u64().unwrap() >= 1));

    for (what, (status, body), error_type) in [
        ("generation failure", failing, "engine"),
        ("panic in the engine call", engine_panic, "engine"),
        ("panic in the handler", handler_panic, "internal"),
    ] {
        assert_eq!(status, 500, "{what}: {body}");
        assert_eq!(body["error_type"], error_type, "{what}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
        // The cause, not the internals: a panic's text stays in the log.
        assert!(
            !body["error"].as_str().unwrap().contains("injected panic"),
            "{what}: {body}"
        );
    }

    // Nothing is left holding engine slots, and the server goes on serving. (A failed
    // request's other sequences are aborted when it answers; their tasks end on the runtime's
    // next turn, so the gauges reach 0 just after the answer, not with it.)
    let answered = std::time::Instant::now();
    while server.metric("entroll_requests_running").await
        + server.metric("entroll_sequences_running").await
        + server.metric("entroll_sequences_waiting").await
        > 0.0
    {
        assert!(
            answered.elapsed() < std::time::Duration::from_secs(1),
            "requests or sequences still held 1 s after the answers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"engine\"}")
            .await,
        2.0
    );
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"internal\"}")
            .await,
        1.0
    );
    let (status, after) = post(&base, "Name three animals.").await;
    assert_eq!(status, 200, "{after}");
}
