//! Who may call which route: an API key for generation, a separate admin key for the control
//! routes that steer the server (weights, and every control route added later), both sent as
//! `Authorization: Bearer <key>` (OpenAI's form).
//!
//! The rules ([`Keys::check`]):
//! - no key configured at all: every route is open (a server on 127.0.0.1 for one user);
//! - generation routes ([`Access::Generate`]) take the API key or the admin key;
//! - control routes ([`Access::Control`]) take the admin key only: with an API key but no admin
//!   key configured they are closed, so setting a key never leaves the weights open;
//! - `/health`, `/health_generate` and `/metrics` ([`Access::Probe`]) are open, or keyed like generation when
//!   `open_probes` is off.
//!
//! A missing or unknown key is 401 `unauthorized`; a valid API key on a control route is 403
//! `forbidden`. Keys are compared as SHA-256 digests in constant time, so neither the time an
//! answer takes nor a key's length tells a client how much of a guess was right, and they are
//! never logged ([`Secret`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::telemetry::metrics::request_failed;

/// A key as the settings hold it: never printed, logged or serialised.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The key itself, for the one place that digests it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(key: String) -> Self {
        Secret(key)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { "[redacted]" })
    }
}

/// What a route needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Samples and reads what the server serves (`/rollouts`, `/info`).
    Generate,
    /// Changes what the server serves (`/weights`).
    Control,
    /// Liveness and metrics, for balancers and Prometheus.
    Probe,
}

/// The configured keys, as digests.
#[derive(Clone, Default)]
pub struct Keys {
    api: Option<[u8; 32]>,
    admin: Option<[u8; 32]>,
    open_probes: bool,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

impl Keys {
    /// Keys from the settings; an empty [`Secret`] is no key.
    pub fn new(api: &Secret, admin: &Secret, open_probes: bool) -> Self {
        let key = |s: &Secret| (!s.is_empty()).then(|| digest(s.expose().as_bytes()));
        Self {
            api: key(api),
            admin: key(admin),
            open_probes,
        }
    }

    /// Whether any key is configured (without one, every route is open).
    pub fn any(&self) -> bool {
        self.api.is_some() || self.admin.is_some()
    }

    /// Whether a caller presenting `authorization` may use a route needing `access`.
    pub fn check(
        &self,
        access: Access,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), ApiError> {
        if !self.any() || (access == Access::Probe && self.open_probes) {
            return Ok(());
        }
        let presented = bearer(authorization)?;
        let presented = digest(presented);
        let is_admin = self.admin.is_some_and(|k| same(&k, &presented));
        let is_api = self.api.is_some_and(|k| same(&k, &presented));
        match access {
            Access::Generate | Access::Probe if is_admin || is_api => Ok(()),
            Access::Control if is_admin => Ok(()),
            Access::Control if is_api => Err(ApiError::Forbidden(
                if self.admin.is_some() {
                    "this route changes what the server serves: it needs the admin key, not \
                     the API key"
                } else {
                    "this route changes what the server serves: it needs the admin key, and \
                     none is configured (admin_key)"
                }
                .into(),
            )),
            _ => Err(ApiError::Unauthorized("the key is not valid".into())),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(authorization: Option<&HeaderValue>) -> Result<&[u8], ApiError> {
    let value = authorization.ok_or_else(|| {
        ApiError::Unauthorized("this server needs a key: send `Authorization: Bearer <key>`".into())
    })?;
    let bytes = value.as_bytes();
    match bytes.split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty() => {
            Ok(token.trim_ascii())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header is not `Bearer <key>`".into(),
        )),
    }
}

/// How a route's dialect answers an error (entroll's `{error, error_type}`, OpenAI's
/// `{"error": {...}}`).
pub type Answer = fn(ApiError) -> Response;

/// The middleware in front of every route: lets the request on or answers 401/403, in the
/// route's dialect, before its body is read, so an unauthenticated client cannot make the
/// server read or parse anything.
pub async fn authorize(
    State((keys, access, answer)): State<(Arc<Keys>, Access, Answer)>,
    request: Request,
    next: Next,
) -> Response {
    match keys.check(access, request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            request_failed(e.error_type());
            answer(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(api: &str, admin: &str, open_probes: bool) -> Keys {
        Keys::new(
            &api.to_string().into(),
            &admin.to_string().into(),
            open_probes,
        )
    }

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    fn kind(r: Result<(), ApiError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.error_type(),
        }
    }

    #[test]
    fn without_keys_every_route_is_open() {
        let k = keys("", "", false);
        for access in [Access::Generate, Access::Control, Access::Probe] {
            assert_eq!(kind(k.check(access, None)), "ok");
        }
    }

    #[test]
    fn generation_takes_either_key_and_control_only_the_admin_key() {
        let k = keys("api-key", "admin-key", true);
        let api = header("Bearer api-key");
        let admin = header("bearer admin-key");
        let wrong = header("Bearer api-ke");
        assert_eq!(kind(k.check(Access::Generate, Some(&api))), "ok");
        assert_eq!(kind(k.check(Access::Generate, Some(&admin))), "ok");
        assert_eq!(
            kind(k.check(Access::Generate, Some(&wrong))),
            "unauthorized"
        );
        assert_eq!(kind(k.check(Access::Generate, None)), "unauthorized");
        assert_eq!(kind(k.check(Access::Control, Some(&admin))), "ok");
        assert_eq!(kind(k.check(Access::Control, Some(&api))), "forbidden");
        assert_eq!(kind(k.check(Access::Control, Some(&wrong))), "unauthorized");
        assert_eq!(kind(k.check(Access::Control, None)), "unauthorized");
        assert_eq!(kind(k.check(Access::Probe, None)), "ok");
    }

    #[test]
    fn an_api_key_alone_closes_the_control_routes() {
        let k = keys("api-key", "", true);
        let api = header("Bearer api-key");
        assert_eq!(kind(k.check(Access::Generate, Some(&api))), "ok");
        assert_eq!(kind(k.check(Access::Control, Some(&api))), "forbidden");
        assert_eq!(kind(k.check(Access::Control, None)), "unauthorized");
    }

    #[test]
    fn keyed_probes_take_a_key() {
        let k = keys("api-key", "admin-key", false);
        assert_eq!(kind(k.check(Access::Probe, None)), "unauthorized");
        assert_eq!(
            kind(k.check(Access::Probe, Some(&header("Bearer api-key")))),
            "ok"
        );
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_refused() {
        let k = keys("api-key", "", true);
        for h in [
            "Basic api-key",
            "api-key",
            "Bearer ",
            "Bearer",
            "Bearerapi-key",
        ] {
            assert_eq!(
                kind(k.check(Access::Generate, Some(&header(h)))),
                "unauthorized",
                "{h}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let s: Secret = "hunter2-key".to_string().into();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }
}
