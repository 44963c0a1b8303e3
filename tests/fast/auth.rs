//! Who may steer the server: with keys set, generation routes take the API key (or the admin
//! key), control routes only the admin key, probes are open unless keyed; every refusal is a
//! 401 or 403 with the usual body, answered before the request's body is read, and a refused
//! weight update changes nothing.

use serde_json::{json, Value};

use crate::harness;

const API: &str = "api-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

/// Sends `method path` with `key` as a bearer token (none: no header) and `body`; the status,
/// the `WWW-Authenticate` header and the body (JSON, or `null` when it is not JSON).
async fn call(
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, Option<String>, Value) {
    let client = crate::common::client();
    let url = format!("{base}{path}");
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let resp = request.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn small_rollout() -> String {
    json!({
        "prompts": [{"text": "1 + 1 ="}],
        "group_size": 1,
        "sampling": {"max_tokens": 2, "seed": 1}
    })
    .to_string()
}

fn weights_update(version: u64) -> String {
    json!({"path": harness::tiny_model(), "version": version}).to_string()
}

async fn version(base: &str) -> u64 {
    let (status, _, info) = call(base, "GET", "/info", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{info}");
    info["weights_version"].as_u64().unwrap()
}

/// Checks a refusal: its status, its error type in the route's dialect (entroll's
/// `{error, error_type}`, or OpenAI's `{"error": {message, type, code}}` on its routes) and
/// the challenge.
fn assert_refused(answer: &(u16, Option<String>, Value), status: u16, error_type: &str) {
    let (got, challenge, body) = answer;
    assert_eq!(*got, status, "{body}");
    match body["error"].as_object() {
        Some(openai) => {
            assert_eq!(openai["code"], error_type, "{body}");
            let kind = if status == 401 {
                "authentication_error"
            } else {
                "permission_error"
            };
            assert_eq!(openai["type"], kind, "{body}");
            assert!(!openai["message"].as_str().unwrap().is_empty());
        }
        None => {
            assert_eq!(body["error_type"], error_type, "{body}");
            assert!(!body["error"].as_str().unwrap().is_empty());
        }
    }
    // Only a 401 asks for credentials.
    assert_eq!(challenge.as_deref(), (status == 401).then_some("Bearer"));
}

#[tokio::test]
async fn keyed_routes_admit_only_the_right_key() {
    let server = harness::start(|c| {
        c.api_key = API.to_string().into();
        c.admin_key = ADMIN.to_string().into();
    });
    let base = server.base.as_str();
    // Generation: no key or a wrong one is 401; either key opens it.
    for (method, path, body) in [
        ("POST", "/rollouts", Some(small_rollout())),
        ("GET", "/info", None),
        (
            "POST",
            "/v1/completions",
            Some(json!({"prompt": "hi", "max_tokens": 2}).to_string()),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
                    .to_string(),
            ),
        ),
        ("GET", "/v1/models", None),
        (
            "POST",
            "/tokenize",
            Some(json!({"prompt": "hi"}).to_string()),
        ),
        (
            "POST",
            "/detokenize",
            Some(json!({"tokens": [1, 2]}).to_string()),
        ),
    ] {
        for key in [None, Some("api-0123456789abcdeX"), Some("Bearer")] {
            let answer = call(base, method, path, key, body.clone()).await;
            assert_refused(&answer, 401, "unauthorized");
            // Each route answers in its own dialect.
            let openai = path.starts_with("/v1/") || path.ends_with("tokenize");
            assert_eq!(
                answer.2["error"].is_object(),
                openai,
                "{path}: {}",
                answer.2
            );
        }
        for key in [API, ADMIN] {
            let (status, _, answer) = call(base, method, path, Some(key), body.clone()).await;
            assert_eq!(status, 200, "{path} with a valid key: {answer}");
        }
    }
    // Control: the API key is 403, no key 401, and neither changes the served weights.
    assert_refused(
        &call(base, "POST", "/weights", None, Some(weights_update(1))).await,
        401,
        "unauthorized",
    );
    assert_refused(
        &call(base, "POST", "/weights", Some(API), Some(weights_update(1))).await,
        403,
        "forbidden",
    );
    assert_eq!(version(base).await, 0);
    let (status, _, answer) = call(
        base,
        "POST",
        "/weights",
        Some(ADMIN),
        Some(weights_update(1)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(version(base).await, 1);
    // Probes stay open for balancers and Prometheus.
    for path in ["/health", "/metrics"] {
        assert_eq!(call(base, "GET", path, None, None).await.0, 200, "{path}");
    }
    // Every refusal above was counted by its type: 3 keys x 7 routes + 1 control = 22.
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"unauthorized\"}")
            .await,
        22.0
    );
    assert_eq!(
        server
            .metric("entroll_requests_failed_total{error_type=\"forbidden\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_refused_caller_cannot_make_the_server_parse_its_body() {
    let server = harness::start(|c| c.api_key = API.to_string().into());
    // A megabyte that is not JSON: without the key the answer is 401, not the 400 that
    // parsing it would give.
    let junk = "{".repeat(1 << 20);
    let answer = call(&server.base, "POST", "/rollouts", None, Some(junk.clone())).await;
    assert_refused(&answer, 401, "unauthorized");
    let (status, _, body) = call(&server.base, "POST", "/rollouts", Some(API), Some(junk)).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn an_api_key_alone_closes_control_routes_and_keyed_probes_take_a_key() {
    let server = harness::start(|c| {
        c.api_key = API.to_string().into();
        c.open_probes = false;
    });
    let base = server.base.as_str();
    let answer = call(base, "POST", "/weights", Some(API), Some(weights_update(1))).await;
    assert_refused(&answer, 403, "forbidden");
    assert!(
        answer.2["error"].as_str().unwrap().contains("admin_key"),
        "{}",
        answer.2
    );
    for path in ["/health", "/metrics"] {
        assert_refused(
            &call(base, "GET", path, None, None).await,
            401,
            "unauthorized",
        );
        assert_eq!(
            call(base, "GET", path, Some(API), None).await.0,
            200,
            "{path}"
        );
    }
    let (_, _, info) = call(base, "GET", "/info", Some(API), None).await;
    assert_eq!(info["weights_version"], 0);
}
