//! `POST /weights`: its body and answer, and the policy an update applies to the samples in
//! flight ([`InFlight`], also the `weights_in_flight` setting).

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// `POST /weights` body: serve new weights of the same architecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRequest {
    /// A safetensors directory (`config.json`, `tokenizer.json`, `*.safetensors`) or a `.gguf`
    /// file, on the server's filesystem.
    pub path: String,
    /// The new weights version; must exceed the one served. Default: the served one + 1.
    pub version: Option<u64>,
    /// What happens to the samples running on the old weights: `finish`, `abort` or
    /// `continue` ([`InFlight`]). Default: the server's `weights_in_flight`.
    pub in_flight: Option<InFlight>,
}

/// `POST /weights` answer, once the new weights serve every new request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightsResponse {
    /// The version now served.
    pub weights_version: u64,
    /// The version served before.
    pub previous_version: u64,
    /// Model id of the new weights.
    pub model: String,
    /// Where they were loaded from.
    pub path: String,
    /// Time spent loading them, in milliseconds.
    pub load_ms: u64,
    /// What the update did to the samples running on the old weights.
    pub in_flight: InFlight,
}

/// What a weight update does to the samples running on the weights it replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InFlight {
    /// They finish on the weights they started with: every request runs on one version.
    #[default]
    Finish,
    /// They stop at their next token; their request is answered 409 `weights_changed` with
    /// the tokens each sample drew, so a client can retry it or resume the samples.
    Abort,
    /// They go on under the new weights from their next token; each sample reports which
    /// version drew which of its tokens.
    Continue,
}

impl InFlight {
    /// The policy's name in the API (`finish`, `abort`, `continue`).
    pub fn as_str(self) -> &'static str {
        match self {
            InFlight::Finish => "finish",
            InFlight::Abort => "abort",
            InFlight::Continue => "continue",
        }
    }
}

/// How the server pauses generation (vLLM's `/pause?mode=`; SGLang's `/pause_generation`
/// modes map onto these). In every mode, requests that arrive while paused wait, admitted,
/// until the server resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseMode {
    /// The running samples stop where they are and go on after the resume, under the weights
    /// served then; each reports the versions that drew its tokens.
    Keep,
    /// The running samples end at once with what they drew (`finish_reason: abort`).
    Abort,
    /// The running samples finish; the pause takes hold once they have.
    Wait,
}

impl PauseMode {
    /// The mode's name in the API (`keep`, `abort`, `wait`).
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Keep => "keep",
            PauseMode::Abort => "abort",
            PauseMode::Wait => "wait",
        }
    }
}
