//! An OpenAI request made into the `/rollouts` request it stands for, so that both dialects run
//! through one validation ([`crate::http::validation::validate`]), one admission and one engine,
//! and the same seed draws the same tokens: prompt `i` is group `i`, choice `j` of it is sample
//! `j`. What the answer should hold besides (log-prob listings, token ids, usage) is kept in
//! [`Asked`].

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::OpenAiError;
use crate::api::error::ApiError;
use crate::api::openai::{
    Content, GenerateRequest, LogprobsField, Message, OneOrMany, Prompt, StreamOptions,
};
use crate::api::rollouts::{
    ChatMessage, PromptSpec, RolloutRequest, SamplingSpec, MAX_TOP_LOGPROBS,
};
use crate::engine::PromptInput;

/// Which generation route a request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    Chat,
}

/// What the answer holds besides the rollout's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// The route.
    pub route: Route,
    /// Choices per prompt.
    pub n: usize,
    /// List each choice's log-probs (with the alternatives the rollout's `top_logprobs` asks
    /// for: completions' `logprobs`, chat's `top_logprobs`).
    pub logprobs: bool,
    /// Name listed tokens `token_id:N`.
    pub as_ids: bool,
    /// Return `prompt_token_ids` and each choice's `token_ids`.
    pub token_ids: bool,
    /// Answer as server-sent events.
    pub stream: bool,
    /// A stream's last chunk carries `usage`.
    pub include_usage: bool,
    /// Temperature 0: the listing gives the full distribution's log-probs (vLLM's greedy path
    /// lists the untruncated ones; the truncated top-k 1 would list 0 everywhere).
    pub greedy: bool,
}

/// Parses a body as `T`, naming the field at fault: malformed JSON is a 400 without one, a
/// wrong shape a 400 with the path to the field (an unknown field by its own name).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, OpenAiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                let message = inner.to_string();
                let param = unknown_field(&message).or(Some(path).filter(|p| p != "."));
                OpenAiError::new(
                    ApiError::Invalid(format!("invalid request: {message}")),
                    param,
                )
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::Malformed(inner.to_string()).into()
            }
        }
    })?;
    de.end()
        .map_err(|e| OpenAiError::from(ApiError::Malformed(e.to_string())))?;
    Ok(parsed)
}

/// The field serde's "unknown field `x`" names.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// An invalid-request error blamed on `param`.
pub fn refuse(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError::new(ApiError::Invalid(message.into()), Some(param.to_string()))
}

/// Refuses a field the route does not take.
fn not_on(route: Route, param: &str, given: bool) -> Result<(), OpenAiError> {
    if !given {
        return Ok(());
    }
    let path = match route {
        Route::Completions => "/v1/completions",
        Route::Chat => "/v1/chat/completions",
    };
    Err(refuse(param, format!("{param} is not a field of {path}")))
}

/// Refuses a field that would change the sampling distribution unless it is at its neutral
/// value: entroll's statistics describe the distribution it draws from, so nothing that would
/// change it is ignored.
pub fn neutral(param: &str, value: Option<f64>, neutral: f64) -> Result<(), OpenAiError> {
    match value {
        Some(v) if v != neutral => Err(refuse(
            param,
            format!(
                "{param} {v} is not served: it would change the distribution entroll samples \
                 from and reports on (only {neutral}, its neutral value, is accepted)"
            ),
        )),
        _ => Ok(()),
    }
}

fn chat_message(i: usize, m: Message) -> Result<ChatMessage, OpenAiError> {
    let content = match m.content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(text)) => texts.push(text),
                    _ => {
                        return Err(refuse(
                            &format!("messages[{i}].content[{j}]"),
                            "only text parts ({\"type\": \"text\", \"text\": ...}) are served",
                        ))
                    }
                }
            }
            texts.join("\n")
        }
    };
    Ok(ChatMessage {
        role: m.role,
        content,
    })
}

/// A conversation as the engine's prompt; `add_generation_prompt` may only be `true` (the
/// engine always ends with the assistant's turn).
pub fn conversation(
    messages: Vec<Message>,
    add_generation_prompt: Option<bool>,
) -> Result<PromptInput, OpenAiError> {
    if add_generation_prompt == Some(false) {
        return Err(refuse(
            "add_generation_prompt",
            "add_generation_prompt false is not served: the rendered prompt always ends with \
             the assistant's turn",
        ));
    }
    if messages.is_empty() {
        return Err(refuse("messages", "messages is empty"));
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| chat_message(i, m))
        .collect::<Result<_, _>>()?;
    Ok(PromptInput::Messages(messages))
}

/// Refuses a switch that would change what is drawn or returned unless it is at the value
/// entroll serves.
pub fn only(param: &str, value: Option<bool>, served: bool, why: &str) -> Result<(), OpenAiError> {
    match value {
        Some(v) if v != served => Err(refuse(
            param,
            format!("{param} {v} is not served: {why} (only {served} is accepted)"),
        )),
        _ => Ok(()),
    }
}

/// The fields of a dialect that would change the distribution entroll samples from and
/// reports on, each refused unless at its neutral value; `prefix` is where the dialect puts them
/// (`sampling_params.` or nothing), `min_tokens` names its least-length field.
#[derive(Debug, Default)]
pub struct Distortions<'a> {
    /// Where the dialect puts these fields.
    pub prefix: &'a str,
    /// Min-p truncation (neutral: 0).
    pub min_p: Option<f64>,
    /// Repetition penalty (neutral: 1).
    pub repetition_penalty: Option<f64>,
    /// Presence penalty (neutral: 0).
    pub presence_penalty: Option<f64>,
    /// Frequency penalty (neutral: 0).
    pub frequency_penalty: Option<f64>,
    /// Go on past the end of sequence (served: false).
    pub ignore_eos: Option<bool>,
    /// Logit biases (served: none).
    pub logit_bias: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The least-length field's name and value (served: 0).
    pub min_tokens: (&'a str, Option<usize>),
    /// Top-k (at least 1, or 0 or -1 for none).
    pub top_k: Option<i64>,
}

impl Distortions<'_> {
    /// Refuses the first field that is not at its neutral value, naming it.
    pub fn check(&self) -> Result<(), OpenAiError> {
        let name = |field: &str| format!("{}{field}", self.prefix);
        neutral(&name("min_p"), self.min_p, 0.0)?;
        neutral(&name("repetition_penalty"), self.repetition_penalty, 1.0)?;
        neutral(&name("presence_penalty"), self.presence_penalty, 0.0)?;
        neutral(&name("frequency_penalty"), self.frequency_penalty, 0.0)?;
        only(
            &name("ignore_eos"),
            self.ignore_eos,
            false,
            "every sample ends at the model's end of sequence",
        )?;
        let (field, min_tokens) = self.min_tokens;
        if min_tokens.is_some_and(|m| m > 0) {
            return Err(refuse(
                &name(field),
                format!(
                    "{field} above 0 is not served: masking the end of sequence would change \
                     the distribution entroll samples from and reports on"
                ),
            ));
        }
        if self.logit_bias.is_some_and(|b| !b.is_empty()) {
            return Err(refuse(
                &name("logit_bias"),
                "logit_bias is not served: it would change the distribution entroll samples \
                 from and reports on",
            ));
        }
        if self.top_k.is_some_and(|k| k < -1) {
            return Err(refuse(
                &name("top_k"),
                "top_k must be at least 1, or 0 or -1 for none",
            ));
        }
        Ok(())
    }
}

/// The sampling fields every dialect has, in `/rollouts`' terms.
#[derive(Debug, Default)]
pub struct Sampling {
    /// Temperature (0: greedy).
    pub temperature: Option<f64>,
    /// Nucleus truncation.
    pub top_p: Option<f64>,
    /// Top-k truncation (0 or -1: none).
    pub top_k: Option<i64>,
    /// Tokens at most.
    pub max_tokens: Option<usize>,
    /// Stop strings.
    pub stop: Option<OneOrMany<String>>,
    /// The draw's seed.
    pub seed: Option<u64>,
}

impl Sampling {
    /// `/rollouts`' sampling, and whether it is greedy: temperature 0 is the most likely token,
    /// drawn as top-k 1 of the temperature-1 distribution, whose statistics the answer reports.
    pub fn spec(self) -> (SamplingSpec, bool) {
        let greedy = self.temperature == Some(0.0);
        let spec = SamplingSpec {
            temperature: if greedy { Some(1.0) } else { self.temperature },
            top_p: self.top_p,
            top_k: if greedy {
                Some(1)
            } else {
                self.top_k.filter(|&k| k > 0).map(|k| k as usize)
            },
            max_tokens: self.max_tokens,
            stop: self.stop.map(OneOrMany::into_vec),
            seed: self.seed,
        };
        (spec, greedy)
    }
}

/// Checks vLLM's `stop_token_ids`: served when each is one of the model's end-of-sequence ids
/// `eos_ids`, on which every choice ends anyway.
pub fn check_stop_token_ids(ids: Option<&[u32]>, eos_ids: &[u32]) -> Result<(), OpenAiError> {
    match ids
        .unwrap_or_default()
        .iter()
        .find(|id| !eos_ids.contains(id))
    {
        Some(id) => Err(refuse(
            "stop_token_ids",
            format!(
                "stop_token_ids holds {id}, which is not an end-of-sequence id of the model \
                 ({eos_ids:?}): entroll stops on those and on stop strings only"
            ),
        )),
        None => Ok(()),
    }
}

/// The names the OpenAI routes answer to (vLLM's `--served-model-name`): those of the
/// `served_model_name` setting (comma-separated; the first names the model in every answer),
/// or the model's id when it is empty; the model's id is always one of them.
pub fn served_names(setting: &str, id: &str) -> Vec<String> {
    let mut names: Vec<String> = setting
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    names.push(id.to_string());
    // The first of each name, in order.
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Checks that a request names a served model (one of `served`), if it names one.
pub fn check_model(asked: Option<&str>, served: &[String]) -> Result<(), OpenAiError> {
    match asked {
        Some(m) if !served.iter().any(|s| s == m) => Err(OpenAiError::new(
            ApiError::NotFound(format!(
                "the model `{m}` does not exist: this server serves `{}`",
                served.join("`, `")
            )),
            Some("model".into()),
        )),
        _ => Ok(()),
    }
}

fn prompt_specs(prompt: Prompt) -> Vec<PromptSpec> {
    let spec = |text: Option<String>, token_ids: Option<Vec<u32>>| PromptSpec {
        id: None,
        messages: None,
        text,
        token_ids,
        answer: None,
        group_size: None,
    };
    match prompt {
        Prompt::Text(t) => vec![spec(Some(t), None)],
        Prompt::TokenIds(ids) => vec![spec(None, Some(ids))],
        Prompt::Texts(ts) => ts.into_iter().map(|t| spec(Some(t), None)).collect(),
        Prompt::TokenIdBatch(b) => b.into_iter().map(|ids| spec(None, Some(ids))).collect(),
    }
}

/// The `/rollouts` request `req` stands for on `route`, and what its answer should hold
/// besides. `served` is the served model's id, `eos_ids` the ids that end its sequences.
pub fn rollout_request(
    route: Route,
    req: GenerateRequest,
    served: &[String],
    eos_ids: &[u32],
) -> Result<(RolloutRequest, Asked), OpenAiError> {
    check_model(req.model.as_deref(), served)?;
    let chat = route == Route::Chat;
    not_on(route, "messages", !chat && req.messages.is_some())?;
    not_on(route, "prompt", chat && req.prompt.is_some())?;
    not_on(route, "echo", chat && req.echo.is_some())?;
    not_on(
        route,
        "max_completion_tokens",
        !chat && req.max_completion_tokens.is_some(),
    )?;
    not_on(route, "top_logprobs", !chat && req.top_logprobs.is_some())?;
    not_on(
        route,
        "add_generation_prompt",
        !chat && req.add_generation_prompt.is_some(),
    )?;
    if req.echo == Some(true) {
        return Err(refuse(
            "echo",
            "echo is not served: entroll returns the generated tokens, and the prompt's ids \
             with return_token_ids",
        ));
    }
    Distortions {
        prefix: "",
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ignore_eos: req.ignore_eos,
        logit_bias: req.logit_bias.as_ref(),
        min_tokens: ("min_tokens", req.min_tokens),
        top_k: req.top_k,
    }
    .check()?;
    only(
        "skip_special_tokens",
        req.skip_special_tokens,
        true,
        "the text always leaves special tokens out (return_token_ids gives every id)",
    )?;
    only(
        "use_beam_search",
        req.use_beam_search,
        false,
        "entroll samples; it does not search",
    )?;
    only(
        "include_stop_str_in_output",
        req.include_stop_str_in_output,
        false,
        "the text is cut before a stop string",
    )?;
    check_stop_token_ids(req.stop_token_ids.as_deref(), eos_ids)?;
    if req
        .chat_template_kwargs
        .as_ref()
        .is_some_and(|k| !k.is_empty())
    {
        return Err(refuse(
            "chat_template_kwargs",
            "chat_template_kwargs is not served: the chat template renders roles and content only",
        ));
    }
    let n = req.n.unwrap_or(1);
    if req.best_of.is_some_and(|b| b != n) {
        return Err(refuse(
            "best_of",
            "best_of other than n is not served: entroll returns every candidate it draws",
        ));
    }
    let (logprobs, mut top) = match (route, req.logprobs) {
        (_, None) => (false, 0),
        (Route::Completions, Some(LogprobsField::Count(n))) => (true, n as usize),
        (Route::Chat, Some(LogprobsField::Flag(on))) => (on, 0),
        (Route::Completions, Some(LogprobsField::Flag(_))) => {
            return Err(refuse("logprobs", "logprobs is a count on /v1/completions"))
        }
        (Route::Chat, Some(LogprobsField::Count(_))) => {
            return Err(refuse(
                "logprobs",
                "logprobs is true or false on /v1/chat/completions",
            ))
        }
    };
    match req.top_logprobs {
        Some(k) if k > 0 && !logprobs => {
            return Err(refuse("top_logprobs", "top_logprobs needs logprobs: true"))
        }
        Some(k) => top = k as usize,
        None => {}
    }
    if top > MAX_TOP_LOGPROBS {
        let field = match route {
            Route::Completions => "logprobs",
            Route::Chat => "top_logprobs",
        };
        return Err(refuse(
            field,
            format!("{field} must be at most {MAX_TOP_LOGPROBS}, got {top}"),
        ));
    }
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(refuse(
            "stream_options",
            "stream_options is only for stream: true",
        ));
    }
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o: &StreamOptions| o.include_usage)
        .unwrap_or(false);

    let mut prompts = if chat {
        let messages = req
            .messages
            .ok_or_else(|| refuse("messages", "messages is required"))?;
        let PromptInput::Messages(messages) = conversation(messages, req.add_generation_prompt)?
        else {
            unreachable!("a conversation is messages")
        };
        vec![PromptSpec {
            id: None,
            messages: Some(messages),
            text: None,
            token_ids: None,
            answer: None,
            group_size: None,
        }]
    } else {
        let prompt = req
            .prompt
            .ok_or_else(|| refuse("prompt", "prompt is required"))?;
        prompt_specs(prompt)
    };
    if prompts.is_empty() {
        return Err(refuse("prompt", "prompt is empty"));
    }
    if let Some(answer) = req.answer {
        let answers = answer.into_vec();
        if answers.len() != prompts.len() {
            return Err(refuse(
                "answer",
                format!(
                    "answer holds {} gold answers for {} prompts: give one per prompt",
                    answers.len(),
                    prompts.len()
                ),
            ));
        }
        for (p, a) in prompts.iter_mut().zip(answers) {
            p.answer = Some(a);
        }
    }
    for (i, p) in prompts.iter_mut().enumerate() {
        // Groups come back in completion order when streamed: the id says which prompt.
        p.id = Some(i.to_string());
    }
    let (sampling, greedy) = Sampling {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop: req.stop,
        seed: req.seed,
    }
    .spec();
    let rollout = RolloutRequest {
        prompts,
        group_size: Some(n),
        sampling,
        stats: req.stats.unwrap_or_default(),
        advantage: req.advantage,
        timeout_ms: req.timeout_ms,
        stream,
        return_sampling_mask: req.return_sampling_mask.unwrap_or(false),
        top_logprobs: top,
    };
    let asked = Asked {
        route,
        n,
        logprobs,
        as_ids: req.return_tokens_as_token_ids.unwrap_or(false),
        token_ids: req.return_token_ids.unwrap_or(false),
        stream,
        include_usage,
        greedy,
    };
    Ok((rollout, asked))
}

/// What a `/rollouts` error message names, the OpenAI field it stands for, and whether the
/// message's words change to that field's name.
const FIELDS: [(&str, &str, bool); 11] = [
    ("sampling.temperature", "temperature", true),
    ("sampling.top_p", "top_p", true),
    ("sampling.top_k", "top_k", true),
    ("sampling.max_tokens", "max_tokens", true),
    ("sampling.stop", "stop", true),
    ("group_size", "n", true),
    ("timeout_ms", "timeout_ms", false),
    ("stats.", "stats", false),
    ("advantage", "advantage", false),
    ("max_request_tokens", "max_tokens", false),
    ("max_mask_ids", "return_sampling_mask", false),
];

/// A `/rollouts` error in this dialect's words: the field it names by its OpenAI name, and as
/// `param`. An unnamed refusal once the request runs (the engine refusing a prompt it cannot
/// tokenize) blames the prompt.
pub fn in_openai_words(error: ApiError, route: Route) -> OpenAiError {
    let ApiError::Invalid(message) = error else {
        return error.into();
    };
    let (prompt, one_prompt) = match route {
        Route::Completions => ("prompt", "prompts"),
        // A chat has one prompt, its conversation: `prompts[0]` is the whole of `messages`.
        Route::Chat => ("messages", "prompts[0]"),
    };
    let (message, param) = match FIELDS.iter().find(|(ours, _, _)| message.contains(ours)) {
        Some(&(ours, theirs, true)) => (message.replacen(ours, theirs, 1), theirs),
        Some(&(_, theirs, false)) => (message, theirs),
        None if message.contains("prompts[") => (message.replacen(one_prompt, prompt, 1), prompt),
        None => (message, prompt),
    };
    OpenAiError::new(ApiError::Invalid(message), Some(param.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(route: Route, json: &str) -> Result<(RolloutRequest, Asked), OpenAiError> {
        rollout_request(route, parse(json.as_bytes())?, &["m".to_string()], &[2])
    }

    #[test]
    fn sampling_fields_map_onto_the_rollout_s() {
        let (r, asked) = made(
            Route::Completions,
            r#"{"prompt":[[3],[1,2]],"temperature":0,"top_p":0.5,"top_k":7,"stop":"x","seed":3}"#,
        )
        .unwrap();
        assert_eq!(r.prompts.len(), 2);
        assert_eq!(r.prompts[1].token_ids.as_deref(), Some(&[1, 2][..]));
        assert_eq!(r.prompts[1].id.as_deref(), Some("1"));
        // A batch is all texts or all token ids, as OpenAI's.
        assert!(made(Route::Completions, r#"{"prompt":["a",[1,2]]}"#).is_err());
        assert_eq!(r.group_size, Some(1), "n defaults to 1, not the server's G");
        // Greedy: top-k 1 at temperature 1, whatever top_k said.
        assert_eq!(r.sampling.temperature, Some(1.0));
        assert_eq!(r.sampling.top_k, Some(1));
        assert_eq!(r.sampling.top_p, Some(0.5));
        assert_eq!(r.sampling.stop, Some(vec!["x".to_string()]));
        assert!(!asked.logprobs && !asked.stream);
        for none in ["0", "-1"] {
            let (r, _) = made(
                Route::Completions,
                &format!(r#"{{"prompt":"a","top_k":{none}}}"#),
            )
            .unwrap();
            assert_eq!(r.sampling.top_k, None, "top_k {none}");
        }
        let (r, asked) = made(
            Route::Chat,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "max_tokens":5,"max_completion_tokens":9,"n":3,"logprobs":true}"#,
        )
        .unwrap();
        let messages = r.prompts[0].messages.as_ref().unwrap();
        assert_eq!(messages[0].content, "a\nb");
        assert_eq!(r.sampling.max_tokens, Some(9));
        assert_eq!((asked.n, asked.logprobs), (3, true));
    }

    /// Completions count alternatives with `logprobs`, chat with `top_logprobs` beside
    /// `logprobs: true`; both become the rollout's `top_logprobs`, within its bound.
    #[test]
    fn alternatives_are_asked_for_in_each_route_s_words() {
        let top = |route, json: &str| made(route, json).map(|(r, a)| (r.top_logprobs, a.logprobs));
        assert_eq!(
            top(Route::Completions, r#"{"prompt":"a","logprobs":5}"#).unwrap(),
            (5, true)
        );
        assert_eq!(
            top(Route::Completions, r#"{"prompt":"a","logprobs":0}"#).unwrap(),
            (0, true)
        );
        assert_eq!(
            top(
                Route::Chat,
                r#"{"messages":[{"role":"user","content":"a"}],"logprobs":true,"top_logprobs":3}"#
            )
            .unwrap(),
            (3, true)
        );
        let refused = |route, json: &str| made(route, json).unwrap_err().param;
        assert_eq!(
            refused(Route::Completions, r#"{"prompt":"a","logprobs":21}"#).as_deref(),
            Some("logprobs")
        );
        for json in [
            r#"{"messages":[{"role":"user","content":"a"}],"logprobs":true,"top_logprobs":21}"#,
            r#"{"messages":[{"role":"user","content":"a"}],"top_logprobs":2}"#,
        ] {
            assert_eq!(refused(Route::Chat, json).as_deref(), Some("top_logprobs"));
        }
    }

    #[test]
    fn the_model_answers_to_its_id_and_the_served_names() {
        let names = served_names(" default, policy ,default", "SmolLM2");
        assert_eq!(names, ["default", "policy", "SmolLM2"]);
        assert_eq!(served_names("SmolLM2,a", "SmolLM2"), ["SmolLM2", "a"]);
        assert_eq!(served_names("", "SmolLM2"), ["SmolLM2"]);
        for ok in [None, Some("default"), Some("SmolLM2")] {
            assert!(check_model(ok, &names).is_ok(), "{ok:?}");
        }
        let e = check_model(Some("gpt-4"), &names).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.param.as_deref()),
            (404, Some("model"))
        );
    }

    #[test]
    fn rollout_names_become_openai_names() {
        let e = in_openai_words(
            ApiError::Invalid("sampling.max_tokens must be between 1 and 8, got 0".into()),
            Route::Chat,
        );
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.error.to_string().starts_with("max_tokens must"));
        let e = in_openai_words(
            ApiError::Invalid("prompts[1] has 9 tokens; ...".into()),
            Route::Completions,
        );
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(e.error.to_string().starts_with("prompt[1] has"));
        let e = in_openai_words(ApiError::Overloaded(3), Route::Chat);
        assert_eq!((e.status().as_u16(), e.param), (429, None));
    }
}
