//! What the load generator sends: request kinds mixed by weight, and how each answer is judged.
//!
//! `normal` requests expect a complete 200 (or 429 when the server is full). The soak kinds
//! probe the failure paths while normal load runs: `oversized` sends a body over the server's
//! limit (expects 413, or the connection cut at the limit), `disconnect` gives up client-side
//! after a random 0.3–8 s (the server must cancel its sequences), `deadline` sets a random
//! `timeout_ms` of 0.3–8 s (expects 504 unless it finished in time).

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

/// A kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Normal,
    Oversized,
    Disconnect,
    Deadline,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Normal,
        Kind::Oversized,
        Kind::Disconnect,
        Kind::Deadline,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Oversized => "oversized",
            Kind::Disconnect => "disconnect",
            Kind::Deadline => "deadline",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weights of the request kinds, parsed from `normal=6,oversized=1,...`.
#[derive(Debug, Clone)]
pub struct Mix(Vec<(Kind, u32)>);

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not kind=weight"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| format!("unknown request kind `{name}`"))?;
            let w: u32 = w.trim().parse().map_err(|e| format!("`{part}`: {e}"))?;
            weights.push((kind, w));
        }
        if weights.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the mix has no positive weight".into());
        }
        Ok(Mix(weights))
    }
}

/// SplitMix64: a fixed pseudo-random value per request number, so runs are repeatable.
fn mix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in [lo, hi) for request `n` and stream `salt`.
fn uniform(n: usize, salt: u64, lo: f64, hi: f64) -> f64 {
    let u = (mix64((n as u64) << 8 | salt) >> 11) as f64 / (1u64 << 53) as f64;
    lo + (hi - lo) * u
}

impl Mix {
    /// The kind of request number `n`.
    pub fn kind(&self, n: usize) -> Kind {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut pick = (mix64(n as u64) % total as u64) as u32;
        for &(kind, w) in &self.0 {
            if pick < w {
                return kind;
            }
            pick -= w;
        }
        unreachable!("pick < total")
    }
}

/// One request to send.
#[derive(Clone)]
pub struct Planned {
    pub body: Vec<u8>,
    /// Give up client-side after this long.
    pub client_timeout: Option<Duration>,
}

/// Builds request number `n` of kind `kind` from `base` (a normal request body).
pub fn plan(kind: Kind, n: usize, mut base: Value, max_body_bytes: usize) -> Planned {
    let mut client_timeout = None;
    match kind {
        Kind::Normal => {}
        Kind::Oversized => {
            let messages = match base.get_mut("prompts") {
                Some(prompts) => &mut prompts[0]["messages"],
                None => &mut base["messages"],
            };
            messages[0]["content"] = json!("x".repeat(max_body_bytes + 1024));
        }
        Kind::Disconnect => {
            client_timeout = Some(Duration::from_secs_f64(uniform(n, 1, 0.3, 8.0)));
        }
        Kind::Deadline => {
            base["timeout_ms"] = json!(uniform(n, 2, 300.0, 8000.0) as u64);
        }
    }
    Planned {
        body: serde_json::to_vec(&base).expect("JSON"),
        client_timeout,
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    /// 200 with this many generated tokens and samples, on this weights version; `mixed` if
    /// a sample reported another version than the response (a request must never mix them).
    Complete {
        tokens: u64,
        samples: u64,
        version: Option<u64>,
        mixed: bool,
    },
    /// Any other HTTP status, with the body's `error_type` and `error`.
    Status(u16, String, String),
    /// The client gave up (its own timeout).
    GaveUp,
    /// The connection failed or was cut.
    Cut(String),
}

impl Outcome {
    /// A short label for counting.
    pub fn label(&self) -> String {
        match self {
            Outcome::Complete { .. } => "200".into(),
            Outcome::Status(code, kind, _) => format!("{code} {kind}"),
            Outcome::GaveUp => "client gave up".into(),
            Outcome::Cut(_) => "connection cut".into(),
        }
    }

    /// Whether the server answered 429 `overloaded`.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Outcome::Status(429, kind, _) if kind == "overloaded")
    }

    /// Whether a client may send the same request again: the server (or a balancer in front)
    /// was full, going away or unreachable, or the connection was cut before an answer.
    pub fn is_retryable(&self) -> bool {
        self.is_overloaded() || matches!(self, Outcome::Status(502..=504, _, _) | Outcome::Cut(_))
    }

    /// Whether this is an answer a correct server may give to a request of `kind`.
    pub fn expected_for(&self, kind: Kind) -> bool {
        let status =
            |code: u16, t: &str| matches!(self, Outcome::Status(c, k, _) if *c == code && k == t);
        let complete = matches!(self, Outcome::Complete { mixed: false, .. });
        let overloaded = self.is_overloaded();
        match kind {
            Kind::Normal => complete || overloaded,
            Kind::Oversized => status(413, "validation") || matches!(self, Outcome::Cut(_)),
            Kind::Disconnect => complete || overloaded || matches!(self, Outcome::GaveUp),
            Kind::Deadline => complete || overloaded || status(504, "timeout"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Cut(why) => write!(f, "connection cut: {why}"),
            Outcome::Status(code, kind, error) => write!(f, "{code} {kind}: {error}"),
            other => f.write_str(&other.label()),
        }
    }
}

/// The route a load is sent to, and how its answer is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /rollouts`.
    Rollouts,
    /// `POST /v1/chat/completions`, one conversation a request (the same draws as a
    /// one-prompt `/rollouts` request with the same seed).
    Chat,
}

impl Api {
    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Api::Rollouts => "/rollouts",
            Api::Chat => "/v1/chat/completions",
        }
    }

    /// A complete answer's samples, each with its weights version, and its generated tokens.
    fn read(self, body: &Value) -> (Vec<Option<u64>>, Option<u64>, u64) {
        let versions = |samples: Vec<&Value>, at: &str| -> Vec<Option<u64>> {
            samples
                .iter()
                .map(|s| s.pointer(at).and_then(Value::as_u64))
                .collect()
        };
        match self {
            Api::Rollouts => {
                let samples = body["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g["samples"].as_array())
                    .flatten()
                    .collect();
                (
                    versions(samples, "/weights_version"),
                    body["weights_version"].as_u64(),
                    body["summary"]["tokens"].as_u64().unwrap_or(0),
                )
            }
            Api::Chat => (
                versions(
                    body["choices"].as_array().into_iter().flatten().collect(),
                    "/entroll/weights_version",
                ),
                body["entroll"]["weights_version"].as_u64(),
                body["usage"]["completion_tokens"].as_u64().unwrap_or(0),
            ),
        }
    }

    /// An error answer's kind and message: `{error, error_type}`, or OpenAI's
    /// `{"error": {message, code}}`.
    fn error(self, body: &Value) -> (String, String) {
        let (kind, error) = match self {
            Api::Rollouts => (&body["error_type"], &body["error"]),
            Api::Chat => (&body["error"]["code"], &body["error"]["message"]),
        };
        (
            kind.as_str().unwrap_or("(no error kind)").to_string(),
            error.as_str().unwrap_or("(no error)").to_string(),
        )
    }
}

/// Sends one planned request to `api` and classifies the answer.
pub async fn send(client: &reqwest::Client, url: &str, api: Api, p: Planned) -> Outcome {
    let mut req = client
        .post(format!("{url}{}", api.path()))
        .header("content-type", "application/json")
        .body(p.body);
    if let Some(t) = p.client_timeout {
        req = req.timeout(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::GaveUp,
        Err(e) => return Outcome::Cut(e.to_string()),
    };
    let status = resp.status().as_u16();
    let body: Value = match resp.json().await {
        Ok(v) => v,
        Err(e) if e.is_timeout() => return Outcome::GaveUp,
        Err(e) => return Outcome::Cut(format!("reading the {status} body: {e}")),
    };
    if status != 200 {
        let (kind, error) = api.error(&body);
        return Outcome::Status(status, kind, error);
    }
    let (versions, version, tokens) = api.read(&body);
    Outcome::Complete {
        tokens,
        samples: versions.len() as u64,
        version,
        mixed: versions.iter().any(|&v| v != version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_for_answers_a_client_may_retry_and_mixed_versions_are_wrong() {
        let status = |code, kind: &str| Outcome::Status(code, kind.into(), String::new());
        for retryable in [
            status(429, "overloaded"),
            status(502, ""),
            status(503, "shutting_down"),
            status(504, "timeout"),
            Outcome::Cut("reset".into()),
        ] {
            assert!(retryable.is_retryable(), "{retryable}");
        }
        let complete = |mixed| Outcome::Complete {
            tokens: 1,
            samples: 1,
            version: Some(1),
            mixed,
        };
        for final_answer in [
            status(422, "validation"),
            status(500, "engine"),
            complete(false),
        ] {
            assert!(!final_answer.is_retryable(), "{final_answer}");
        }
        assert!(complete(false).expected_for(Kind::Normal));
        assert!(!complete(true).expected_for(Kind::Normal));
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let mix: Mix = "normal=3,disconnect=1".parse().unwrap();
        let n = 40_000;
        let disconnects = (0..n).filter(|&i| mix.kind(i) == Kind::Disconnect).count();
        let share = disconnects as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
        assert!((0..n).all(|i| matches!(mix.kind(i), Kind::Normal | Kind::Disconnect)));
        assert!("normal=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
    }

    #[test]
    fn oversized_bodies_exceed_the_limit_and_deadlines_are_in_range() {
        let base = json!({"prompts": [{"messages": [{"role": "user", "content": "hi"}]}]});
        let p = plan(Kind::Oversized, 0, base.clone(), 4096);
        assert!(p.body.len() > 4096);
        for n in 0..100 {
            let p = plan(Kind::Deadline, n, base.clone(), 4096);
            let v: Value = serde_json::from_slice(&p.body).unwrap();
            let t = v["timeout_ms"].as_u64().unwrap();
            assert!((300..8000).contains(&t));
        }
    }

    #[test]
    fn outcomes_are_judged_by_kind() {
        let too_large = Outcome::Status(413, "validation".into(), String::new());
        assert!(too_large.expected_for(Kind::Oversized));
        assert!(!too_large.expected_for(Kind::Normal));
        assert!(Outcome::GaveUp.expected_for(Kind::Disconnect));
        assert!(!Outcome::GaveUp.expected_for(Kind::Normal));
        assert!(!Outcome::Status(500, "engine".into(), String::new()).expected_for(Kind::Deadline));
    }
}
