//! What a failed weight update tells the client and writes to the log (docs/security.md,
//! finding 7), on the `entroll` binary with `RUST_BACKTRACE=1` and its log in a file: the
//! answer is one line without a backtrace, and a client's path holding a newline and an escape
//! sequence reaches the log escaped, so it cannot forge a line or drive a terminal.

use std::time::Duration;

use serde_json::json;

use crate::common;
use crate::harness::tiny_model;
use crate::weights::{hollow_safetensors, post_weights, variant};

/// A forged log line, as the binary writes its own.
const FORGED: &str = "2026-12-05T00:00:00.000000Z  INFO entroll: new weights serving";

#[tokio::test]
async fn errors_carry_no_backtrace_and_client_strings_cannot_forge_log_lines() {
    let root = std::env::temp_dir().join(format!("entroll-leaks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // Inside the root, so it passes confinement, and its headers declare the served tensors, so
    // it fails only at loading: candle reads no BOOL tensors.
    let name = format!("v\n{FORGED}\u{1b}[2K");
    let dir = root.join(&name);
    variant(&tiny_model(), &dir, |_| {}, Some(&[]));
    hollow_safetensors(
        &tiny_model(),
        &dir.join("model.safetensors"),
        "BOOL",
        |_, shape| shape.to_vec(),
    );
    let log = root.join("server.log");
    let server = common::spawn_logging(
        &[
            "serve",
            "--port",
            "0",
            "--exit-on-stdin-eof",
            "--model",
            tiny_model().to_str().unwrap(),
            "--weights-root",
            root.to_str().unwrap(),
        ],
        &[("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")],
        &log,
    );
    let (status, body) = post_weights(&server.base, json!({"path": name})).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("cannot load weights"), "{error}");
    // The client sent the path: it may come back, escaped by JSON. Nothing else may: no second
    // line, no frames.
    let without_path = error.replace(&name, "");
    assert!(
        !without_path.contains('\n'),
        "a multi-line error: {error:?}"
    );
    for frame in ["backtrace", ".rs:", "at /"] {
        assert!(!without_path.contains(frame), "{frame:?} in {error:?}");
    }
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("weight update refused"),
        "the refusal was not logged: {text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(FORGED)),
        "a client forged a log line:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "an escape sequence reached the log:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
