//! Turns a [`RolloutRequest`] into a [`ValidRollout`]: every limit checked, every default
//! applied, before any engine work. The rollout service then tokenizes it on the engine that
//! will run it ([`crate::rollout::request::tokenize`]), so what reaches the engine carries its
//! tokens, as in TGI.

use std::hash::{BuildHasher, Hasher};

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::config::Config;
use crate::api::error::ApiError;
use crate::api::rollouts::{
    AdvantageSpec, PeakOn, PeakScope, PromptSpec, RolloutRequest, SamplingParams, StatsParams,
    MAX_TOP_LOGPROBS,
};
use crate::engine::PromptInput;
use crate::rollout::request::{ValidPrompt, ValidRollout};
use crate::stats::distribution::NucleusRule;

/// Statistics defaults of `docs/statistics.md`.
pub const DEFAULT_STATS: StatsParams = StatsParams {
    top_p: 0.8,
    top_k_candidates: 10_000,
    nucleus: NucleusRule::Strict,
    peak_quantile: 0.8,
    peak_scope: PeakScope::Response,
    peak_on: PeakOn::TopPEntropy,
};

/// Sampling temperature when a request gives none.
pub const DEFAULT_TEMPERATURE: f64 = 1.0;
/// Sampling top-p when a request gives none.
pub const DEFAULT_TOP_P: f64 = 1.0;
/// Advantage estimator when a request gives none.
pub const DEFAULT_ADVANTAGE: AdvantageSpec = AdvantageSpec::Grpo;
/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;

/// Parses a request body, telling malformed JSON (400) from a wrong request shape (422).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Data => ApiError::Invalid(format!("invalid request: {e}")),
        Category::Syntax | Category::Eof | Category::Io => ApiError::Malformed(e.to_string()),
    })
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Invalid(msg.into())
}

fn check_unit_interval(name: &str, v: f64, open_low: bool) -> Result<f64, ApiError> {
    let ok = if open_low {
        v > 0.0 && v <= 1.0
    } else {
        (0.0..=1.0).contains(&v)
    };
    if ok {
        Ok(v)
    } else if open_low {
        Err(invalid(format!("{name} must be in (0, 1], got {v}")))
    } else {
        Err(invalid(format!("{name} must be in [0, 1], got {v}")))
    }
}

fn check_group_size(name: &str, g: usize, config: &Config) -> Result<usize, ApiError> {
    if g == 0 || g > config.max_group_size {
        return Err(invalid(format!(
            "{name} must be between 1 and {}, got {g}",
            config.max_group_size
        )));
    }
    Ok(g)
}

/// A fresh random 64-bit value (std's per-instance hash keys over the clock): a request's seed
/// when it gives none, an answer's id.
pub fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn prompt_input(i: usize, p: &PromptSpec) -> Result<PromptInput, ApiError> {
    let given = [
        p.messages.is_some(),
        p.text.is_some(),
        p.token_ids.is_some(),
    ];
    let count = given.iter().filter(|&&g| g).count();
    if count != 1 {
        return Err(invalid(format!(
            "prompts[{i}] must have exactly one of messages, text or token_ids (it has {count})"
        )));
    }
    let input = if let Some(messages) = &p.messages {
        if messages.is_empty() {
            return Err(invalid(format!("prompts[{i}].messages is empty")));
        }
        PromptInput::Messages(messages.clone())
    } else if let Some(text) = &p.text {
        if text.is_empty() {
            return Err(invalid(format!("prompts[{i}].text is empty")));
        }
        PromptInput::Text(text.clone())
    } else {
        let ids = p.token_ids.clone().unwrap_or_default();
        if ids.is_empty() {
            return Err(invalid(format!("prompts[{i}].token_ids is empty")));
        }
        PromptInput::TokenIds(ids)
    };
    Ok(input)
}

/// Validates `req` against the server's limits and fills in defaults.
pub fn validate(req: RolloutRequest, config: &Config) -> Result<ValidRollout, ApiError> {
    if req.prompts.is_empty() {
        return Err(invalid("prompts is empty"));
    }
    if req.prompts.len() > config.max_prompts {
        return Err(invalid(format!(
            "{} prompts exceed the limit of {}",
            req.prompts.len(),
            config.max_prompts
        )));
    }
    let group_size = check_group_size(
        "group_size",
        req.group_size.unwrap_or(config.default_group_size),
        config,
    )?;

    let s = &req.sampling;
    let temperature = s.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(invalid(format!(
            "sampling.temperature must be positive, got {temperature}"
        )));
    }
    let top_p = check_unit_interval("sampling.top_p", s.top_p.unwrap_or(DEFAULT_TOP_P), true)?;
    if s.top_k == Some(0) {
        return Err(invalid(
            "sampling.top_k must be at least 1 (or null for none)",
        ));
    }
    let max_tokens = s.max_tokens.unwrap_or(config.default_max_tokens);
    if max_tokens == 0 || max_tokens > config.max_new_tokens {
        return Err(invalid(format!(
            "sampling.max_tokens must be between 1 and {}, got {max_tokens}",
            config.max_new_tokens
        )));
    }
    let stop = s.stop.clone().unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS || stop.iter().any(String::is_empty) {
        return Err(invalid(format!(
            "sampling.stop takes at most {MAX_STOP_STRINGS} non-empty strings"
        )));
    }
    let sampling = SamplingParams {
        temperature,
        top_p,
        top_k: s.top_k,
        max_tokens,
        stop,
        seed: s.seed.unwrap_or_else(random_seed),
    };

    let st = &req.stats;
    let top_k_candidates = st
        .top_k_candidates
        .unwrap_or(DEFAULT_STATS.top_k_candidates);
    if top_k_candidates == 0 {
        return Err(invalid("stats.top_k_candidates must be at least 1"));
    }
    let stats = StatsParams {
        top_p: check_unit_interval("stats.top_p", st.top_p.unwrap_or(DEFAULT_STATS.top_p), true)?,
        top_k_candidates,
        nucleus: st.nucleus.unwrap_or(DEFAULT_STATS.nucleus),
        peak_quantile: check_unit_interval(
            "stats.peak_quantile",
            st.peak_quantile.unwrap_or(DEFAULT_STATS.peak_quantile),
            false,
        )?,
        peak_scope: st.peak_scope.unwrap_or(DEFAULT_STATS.peak_scope),
        peak_on: st.peak_on.unwrap_or(DEFAULT_STATS.peak_on),
    };

    let advantage = req.advantage.unwrap_or(DEFAULT_ADVANTAGE);
    if let AdvantageSpec::Qae(k) = advantage {
        check_unit_interval("advantage.qae", k, false)?;
    }

    if let Some(t) = req
        .timeout_ms
        .filter(|&t| t == 0 || t > config.max_timeout_ms)
    {
        return Err(invalid(format!(
            "timeout_ms must be between 1 and {}, got {t}",
            config.max_timeout_ms
        )));
    }
    let timeout = req.timeout_ms.map(std::time::Duration::from_millis);
    if req.stream && stats.peak_scope == PeakScope::Batch {
        // The batch threshold exists only once every group is done: no group could be sent
        // before the last one.
        return Err(invalid(
            "stream: true needs stats.peak_scope \"response\" (a batch peak threshold is known \
             only when every group is done)",
        ));
    }

    let mut prompts = Vec::with_capacity(req.prompts.len());
    for (i, p) in req.prompts.iter().enumerate() {
        // A label echoed back, not a key: training batches repeat problems.
        let id = p.id.clone().unwrap_or_else(|| i.to_string());
        let group_size = match p.group_size {
            Some(g) => check_group_size(&format!("prompts[{i}].group_size"), g, config)?,
            None => group_size,
        };
        prompts.push(ValidPrompt {
            id,
            input: prompt_input(i, p)?,
            answer: p.answer.clone(),
            group_size,
        });
    }
    let requested: usize = prompts
        .iter()
        .map(|p| p.group_size.saturating_mul(max_tokens))
        .fold(0, usize::saturating_add);
    if requested > config.max_request_tokens {
        return Err(invalid(format!(
            "the request asks for up to {requested} sampled tokens (group sizes x \
             sampling.max_tokens), more than this server's max_request_tokens, {}; split it",
            config.max_request_tokens
        )));
    }
    if req.top_logprobs > MAX_TOP_LOGPROBS {
        return Err(invalid(format!(
            "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {}",
            req.top_logprobs
        )));
    }
    Ok(ValidRollout {
        prompts,
        sampling,
        stats,
        advantage,
        timeout,
        stream: req.stream,
        return_sampling_mask: req.return_sampling_mask,
        top_logprobs: req.top_logprobs,
        answer_aborted: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ValidRollout, ApiError> {
        let req: RolloutRequest = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        validate(req, &Config::default())
    }

    #[test]
    fn defaults_are_applied() {
        let v = parse(r#"{"prompts":[{"text":"hi"}]}"#).unwrap();
        assert_eq!(v.prompts[0].id, "0");
        assert_eq!(
            v.prompts[0].group_size,
            Config::default().default_group_size
        );
        assert_eq!(v.stats, DEFAULT_STATS);
        assert_eq!(v.sampling.temperature, 1.0);
        assert_eq!(v.sampling.max_tokens, Config::default().default_max_tokens);
        assert_eq!(v.advantage, AdvantageSpec::Grpo);
    }

    #[test]
    fn bad_requests_are_rejected() {
        for body in [
            r#"{"prompts":[]}"#,
            r#"{"prompts":[{}]}"#,
            r#"{"prompts":[{"text":"a","token_ids":[1]}]}"#,
            r#"{"prompts":[{"text":""}]}"#,
            r#"{"prompts":[{"messages":[]}]}"#,
            r#"{"prompts":[{"token_ids":[]}]}"#,
            r#"{"prompts":[{"text":"a"}],"group_size":0}"#,
            r#"{"prompts":[{"text":"a"}],"group_size":100000}"#,
            r#"{"prompts":[{"text":"a","group_size":0}]}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"temperature":0}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"temperature":-1}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"top_p":0}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"top_p":1.5}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"top_k":0}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"max_tokens":0}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"max_tokens":100000000}}"#,
            r#"{"prompts":[{"text":"a"}],"sampling":{"stop":[""]}}"#,
            r#"{"prompts":[{"text":"a"}],"stats":{"top_p":0}}"#,
            r#"{"prompts":[{"text":"a"}],"stats":{"peak_quantile":2}}"#,
            r#"{"prompts":[{"text":"a"}],"stats":{"top_k_candidates":0}}"#,
            r#"{"prompts":[{"text":"a"}],"advantage":{"qae":3}}"#,
            r#"{"prompts":[{"text":"a"}],"temperature":1}"#,
            r#"{"prompts":[{"text":"a"}],"advantage":"ppo"}"#,
            r#"{"prompts":[{"text":"a"}],"timeout_ms":0}"#,
            r#"{"prompts":[{"text":"a"}],"stream":true,"stats":{"peak_scope":"batch"}}"#,
            r#"{"prompts":[{"text":"a"}],"stream":1}"#,
        ] {
            assert!(parse(body).is_err(), "accepted {body}");
        }
    }

    #[test]
    fn a_request_s_sampled_tokens_and_deadline_are_bounded() {
        let c = Config::default();
        // Within every per-field limit, together past max_request_tokens.
        let prompts = vec![r#"{"text":"a"}"#; c.max_prompts].join(",");
        let body = |g: usize, t: usize| {
            format!(r#"{{"prompts":[{prompts}],"group_size":{g},"sampling":{{"max_tokens":{t}}}}}"#)
        };
        let at_cap = c.max_request_tokens / c.max_prompts;
        assert!(parse(&body(1, at_cap.min(c.max_new_tokens))).is_ok());
        let err = parse(&body(c.max_group_size, c.max_new_tokens)).unwrap_err();
        assert!(err.to_string().contains("max_request_tokens"), "{err}");
        let within = format!(
            r#"{{"prompts":[{{"text":"a"}}],"timeout_ms":{}}}"#,
            c.max_timeout_ms
        );
        assert!(parse(&within).is_ok());
        for t in [c.max_timeout_ms + 1, u64::MAX] {
            let past = format!(r#"{{"prompts":[{{"text":"a"}}],"timeout_ms":{t}}}"#);
            assert!(parse(&past).unwrap_err().to_string().contains("timeout_ms"));
        }
    }
}
