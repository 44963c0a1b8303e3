//! [`Engine`] on mistral.rs 0.8.
//!
//! mistral.rs schedules and batches the forwards. Under [`Drawing::Entroll`] each sequence
//! carries its own [`CustomLogitsProcessor`] (a [`DrawTap`]) that sees the full logits row of
//! every step, measures it, draws the token with entroll's counter-based RNG and returns a row
//! that forces that token; mistral.rs's sampler then runs with `top_k = 1` and can only pick it.
//! Prompts are tokenized here and sent as token ids, so the tap never relies on the context
//! mistral.rs passes it (which omits prefix-cached tokens). Dropping a `generate` future
//! cancels its sequence at the next step: the tap then fails, and mistral.rs drops the
//! sequence (mistral.rs does not watch for closed response channels). An [`Interrupt`] fails
//! the tap the same way, and the sequence is answered with the tokens the tap recorded. Tokens
//! drawn before an interruption are sent after the prompt. mistral.rs checks stop strings on the
//! tokens it drew only, and one token late (on the text before the token just drawn), so with
//! stop strings the sample is ended here, at the token that completes one, as the native
//! engine ends it.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use either::Either;
use mistralrs::core::RequestMessage;
use mistralrs::{
    Constraint, CustomLogitsProcessor, DType, GgufModelBuilder, Model, ModelDType, NormalRequest,
    Request, Response, SamplingParams, StopTokens, Tensor, TextMessageRole, TextMessages,
    TextModelBuilder,
};

use super::settings::{DeviceKind, EngineSettings, WeightsDType};
use super::{
    Drawing, Engine, EngineError, Interrupt, MaskBudget, ModelInfo, PromptInput, SequenceOutput,
    SequenceRequest,
};
use crate::engine::FinishReason;
use crate::stats::distribution::{Alternative, Workspace};
use crate::stats::sampling::{SamplingMask, TokenRecord, TokenSampler};
use crate::telemetry::metrics;
use crate::telemetry::panic::panic_message;

/// mistral.rs serving one model.
pub struct MistralRsEngine {
    model: Arc<Model>,
    info: ModelInfo,
}

/// The per-sequence logits processor that measures each step and forces entroll's draw.
struct DrawTap {
    sampler: TokenSampler,
    /// The draw index of the first token it draws (the tokens drawn before an interruption).
    first_index: u32,
    state: Mutex<TapState>,
    /// Set when the caller stopped waiting; the next step then fails, which makes mistral.rs
    /// drop the sequence (it never notices a closed response channel by itself).
    cancelled: Arc<AtomicBool>,
    /// Set to end the sequence with what it drew: the next step fails the same way.
    interrupt: Interrupt,
    /// What the request's masks may still hold.
    mask_budget: MaskBudget,
}

/// Sets the flag when dropped: a `generate` future that is dropped cancels its sequence.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct TapState {
    workspace: Workspace,
    records: Vec<TokenRecord>,
    masks: Vec<Option<SamplingMask>>,
    alternatives: Vec<Box<[Alternative]>>,
    first_token_at: Option<std::time::Instant>,
    error: Option<EngineError>,
    /// The tap refused a step because the sequence was interrupted.
    interrupted: bool,
}

impl DrawTap {
    fn new(
        sampler: TokenSampler,
        first_index: usize,
        cancelled: Arc<AtomicBool>,
        interrupt: Interrupt,
        mask_budget: MaskBudget,
    ) -> Self {
        Self {
            sampler,
            first_index: first_index as u32,
            state: Mutex::new(TapState::default()),
            cancelled,
            interrupt,
            mask_budget,
        }
    }
}

/// A row that gives all probability to `token`.
fn forcing_row(token: u32, len: usize, like: &Tensor) -> candle_core::Result<Tensor> {
    let mut row = vec![f32::NEG_INFINITY; len];
    row[token as usize] = 0.0;
    Tensor::from_vec(row, len, like.device())
}

impl CustomLogitsProcessor for DrawTap {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> candle_core::Result<Tensor> {
        if self.cancelled.load(Ordering::Relaxed) {
            metrics::sequence_cancelled();
            return Err(candle_core::Error::Msg("cancelled by the client".into()));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.interrupt.is_set() {
            state.interrupted = true;
            return Err(candle_core::Error::Msg("interrupted".into()));
        }
        let row: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let index = self.first_index + state.records.len() as u32;
        let state = &mut *state;
        // This runs on mistral.rs's engine thread: a panic here must fail this sequence only.
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.sampler
                .step_with_extras(&row, index, &mut state.workspace)
        }));
        let step = match step {
            Ok(measured) => measured.map_err(|e| e.to_string()),
            Err(panic) => {
                state.workspace = Workspace::default();
                Err(format!(
                    "the statistics code panicked: {}",
                    panic_message(panic.as_ref())
                ))
            }
        }
        .map_err(|e| EngineError::Generation(format!("token {index}: {e}")))
        .and_then(|step| match &step.mask {
            Some(m) => self.mask_budget.spend(m.ids.len()).map(|()| step),
            None => Ok(step),
        });
        match step {
            Ok(step) => {
                state
                    .first_token_at
                    .get_or_insert_with(std::time::Instant::now);
                state.records.push(step.record);
                state.masks.push(step.mask);
                state.alternatives.push(step.alternatives);
                forcing_row(step.record.token, row.len(), logits)
            }
            Err(e) => {
                let message = e.to_string();
                state.error = Some(e);
                Err(candle_core::Error::Msg(message))
            }
        }
    }
}

/// Records the width of the first logits row it sees (the vocabulary size V).
struct WidthProbe(Mutex<Option<usize>>);

impl CustomLogitsProcessor for WidthProbe {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> candle_core::Result<Tensor> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(logits.dims1()?);
        Ok(logits.clone())
    }
}

fn role(name: &str) -> TextMessageRole {
    match name {
        "user" => TextMessageRole::User,
        "assistant" => TextMessageRole::Assistant,
        "system" => TextMessageRole::System,
        "tool" => TextMessageRole::Tool,
        other => TextMessageRole::Custom(other.to_string()),
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "canceled" | "abort" => FinishReason::Abort,
        _ => FinishReason::Stop,
    }
}

impl MistralRsEngine {
    /// Loads the model `settings.model` (a `.gguf` file or a safetensors directory) and probes it.
    pub async fn load(settings: &EngineSettings) -> anyhow::Result<Self> {
        let path = settings.model.as_path();
        let shape = super::inspect_model(path)?;
        let force_cpu = match settings.device {
            DeviceKind::Cpu => true,
            DeviceKind::Cuda if cfg!(feature = "cuda") => false,
            DeviceKind::Cuda => anyhow::bail!("device = cuda needs a build with --features cuda"),
        };
        // mistral.rs 0.8.1's CPU decode attention (`flash_attn_cpu_single_q` in
        // mistralrs-core/src/attention/backends/cpu.rs) keeps its scratch buffers per tile and
        // head but not per batch element, so with more than one sequence in a decode step every
        // row but one attends with another row's values. On CPU it must run one sequence at a
        // time; entroll's own queue holds the rest.
        let max_batch = if force_cpu {
            if settings.max_running_sequences > 1 {
                tracing::warn!(
                    "mistral.rs batches incorrectly on CPU (batch > 1 corrupts decode attention); \
                     running one sequence at a time"
                );
            }
            1
        } else {
            settings.max_running_sequences
        };
        let prefix_cache = settings.prefix_cache.then_some(16);
        let model = if path.is_dir() {
            // mistral.rs's own `auto` picks bf16 on CPU, which would round a learner's float32
            // checkpoint before measuring it.
            let dtype = match (settings.dtype, force_cpu) {
                (WeightsDType::Auto, true) | (WeightsDType::F32, _) => ModelDType::F32,
                (WeightsDType::Auto, false) => ModelDType::Auto,
                (WeightsDType::Bf16, _) => ModelDType::BF16,
                (WeightsDType::F16, _) => ModelDType::F16,
            };
            let mut b = TextModelBuilder::new(path.display())
                .with_dtype(dtype)
                .with_max_num_seqs(max_batch)
                .with_prefix_cache_n(prefix_cache);
            if force_cpu {
                b = b.with_force_cpu();
            }
            b.build().await?
        } else {
            let dir = path.parent().unwrap_or(Path::new("."));
            let file = path
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("bad model path {}", path.display()))?;
            let mut b = GgufModelBuilder::new(
                dir.display().to_string(),
                vec![file.to_string_lossy().into_owned()],
            )
            .with_max_num_seqs(max_batch)
            .with_prefix_cache_n(prefix_cache);
            if force_cpu {
                b = b.with_force_cpu();
            }
            b.build().await?
        };
        let id = super::model_id(path);
        let max_context = model.max_sequence_length().ok().flatten();
        let mut engine = Self {
            model: Arc::new(model),
            info: ModelInfo {
                engine: "mistralrs",
                device_kernels: false,
                id,
                vocab_size: 0,
                max_context,
                max_token_bytes: None,
                max_batch,
                eos_ids: Vec::new(),
                source: path.to_path_buf(),
                shape,
            },
        };
        engine.info.vocab_size = engine.probe_vocab_size().await?;
        Ok(engine)
    }

    /// Generates one token to learn the width of the logits rows.
    async fn probe_vocab_size(&self) -> anyhow::Result<usize> {
        let prompt = self.tokenize(&PromptInput::Text("Hello".into())).await?;
        let probe = Arc::new(WidthProbe(Mutex::new(None)));
        let mut params = SamplingParams::deterministic();
        params.max_len = Some(1);
        self.run(prompt, params, Some(probe.clone())).await?;
        let width = *probe.0.lock().unwrap_or_else(|p| p.into_inner());
        width.ok_or_else(|| anyhow::anyhow!("the probe request saw no logits"))
    }

    /// Sends one completion request for `prompt` and waits for its single choice.
    async fn run(
        &self,
        prompt: Vec<u32>,
        sampling_params: SamplingParams,
        processor: Option<Arc<dyn CustomLogitsProcessor>>,
    ) -> Result<(mistralrs::core::CompletionChoice, usize), EngineError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let runner = self.model.inner();
        let request = Request::Normal(Box::new(NormalRequest {
            messages: RequestMessage::CompletionTokens(prompt),
            sampling_params,
            response: tx,
            return_logprobs: false,
            is_streaming: false,
            id: runner.next_request_id(),
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: processor.map(|p| vec![p]),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        runner
            .get_sender(None)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?
            .send(request)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let response = rx
            .recv()
            .await
            .ok_or_else(|| EngineError::Unavailable("the engine dropped the request".into()))?;
        let done = match response {
            Response::CompletionDone(done) => done,
            Response::CompletionModelError(msg, _) => return Err(EngineError::Generation(msg)),
            Response::InternalError(e) => return Err(EngineError::Generation(e.to_string())),
            Response::ValidationError(e) => return Err(EngineError::InvalidPrompt(e.to_string())),
            _ => return Err(EngineError::Generation("unexpected response kind".into())),
        };
        let generated = done.usage.completion_tokens;
        let choice = done.choices.into_iter().next();
        choice
            .map(|c| (c, generated))
            .ok_or_else(|| EngineError::Generation("the engine returned no choice".into()))
    }
}

impl MistralRsEngine {
    /// The text of `tokens`, special tokens left out, as mistral.rs words a completion
    /// (leading whitespace trimmed). Like tokenization, it runs in a task of its own that
    /// always waits for the answer.
    async fn completion_text(&self, tokens: Vec<u32>) -> Result<String, EngineError> {
        let model = self.model.clone();
        let text = tokio::spawn(async move { model.detokenize(tokens, true).await })
            .await
            .map_err(|e| EngineError::Unavailable(format!("detokenization task failed: {e}")))?
            .map_err(|e| EngineError::Generation(format!("cannot detokenize: {e}")))?;
        Ok(text.trim_start().to_string())
    }

    /// Sets `output.text` to the whole sample's text (`drawn`, then its tokens) and, where it
    /// holds a stop string, ends the sample at the token that completes the first one.
    async fn whole_text(
        &self,
        drawn: &[u32],
        stop: &[String],
        output: &mut SequenceOutput,
    ) -> Result<(), EngineError> {
        let ids = |n: usize| -> Vec<u32> {
            let new = output.tokens[..n].iter().map(|r| r.token);
            drawn.iter().copied().chain(new).collect()
        };
        let first_stop = |text: &str| stop.iter().filter_map(|s| text.find(s.as_str())).min();
        let mut text = self.completion_text(ids(output.tokens.len())).await?;
        if let Some(at) = first_stop(&text) {
            // The fewest tokens whose text holds a stop string (it only grows with them).
            let (mut lo, mut hi) = (0, output.tokens.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if first_stop(&self.completion_text(ids(mid)).await?).is_some() {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            output.truncate_tokens(hi);
            output.length = hi;
            output.finish_reason = FinishReason::Stop;
            text.truncate(at);
        }
        output.text = text;
        Ok(())
    }
}

#[async_trait]
impl Engine for MistralRsEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn detokenize(&self, ids: &[u32], skip_special: bool) -> Result<String, EngineError> {
        let (model, ids) = (self.model.clone(), ids.to_vec());
        tokio::spawn(async move { model.detokenize(ids, skip_special).await })
            .await
            .map_err(|e| EngineError::Unavailable(format!("detokenization task failed: {e}")))?
            .map_err(|e| EngineError::InvalidPrompt(format!("cannot detokenize: {e}")))
    }

    async fn tokenize(&self, prompt: &PromptInput) -> Result<Vec<u32>, EngineError> {
        let (text, special, generation_prompt) = match prompt {
            PromptInput::TokenIds(ids) => return Ok(ids.clone()),
            PromptInput::Text(text) => (Either::Right(text.clone()), true, false),
            PromptInput::Messages(messages) => {
                let chat = messages.iter().fold(TextMessages::new(), |chat, m| {
                    chat.add_message(role(&m.role), m.content.clone())
                });
                (Either::Left(chat), false, true)
            }
        };
        // mistral.rs 0.8.1 panics its engine thread ("Sender disconnected unexpectedly!",
        // engine/add_request.rs:774) when the caller of a tokenization stops waiting before the
        // answer, and the restart fails every sequence in flight. So the call runs in a task of
        // its own that always waits for the answer, even when this request is cancelled.
        let model = self.model.clone();
        tokio::spawn(async move {
            model
                .tokenize(text, None, special, generation_prompt, None)
                .await
        })
        .await
        .map_err(|e| EngineError::Unavailable(format!("tokenization task failed: {e}")))?
        .map_err(|e| EngineError::InvalidPrompt(format!("cannot tokenize the prompt: {e}")))
    }

    async fn generate(&self, request: SequenceRequest) -> Result<SequenceOutput, EngineError> {
        let mut params = SamplingParams::neutral();
        let drawn = request.drawn.len();
        params.max_len = Some(request.max_tokens.saturating_sub(drawn));
        if !request.stop.is_empty() {
            params.stop_toks = Some(StopTokens::Seqs(request.stop.clone()));
        }
        let prompt = request.context().to_vec();
        match request.drawing {
            Drawing::Entroll(sampler) => {
                // The tap's row forces one token; top_k = 1 keeps mistral.rs from sorting V.
                params.temperature = Some(1.0);
                params.top_k = Some(1);
                let cancelled = Arc::new(AtomicBool::new(false));
                let _cancel_on_drop = CancelOnDrop(cancelled.clone());
                let masking = sampler.mask;
                let alternatives = sampler.alternatives > 0;
                let interrupt = request.interrupt.clone();
                let tap = Arc::new(DrawTap::new(
                    sampler,
                    drawn,
                    cancelled,
                    interrupt,
                    request.mask_budget.clone(),
                ));
                let result = self.run(prompt, params, Some(tap.clone())).await;
                let state =
                    std::mem::take(&mut *tap.state.lock().unwrap_or_else(|p| p.into_inner()));
                if let Some(error) = state.error {
                    return Err(error);
                }
                let choice = if state.interrupted {
                    None
                } else {
                    Some(result?.0)
                };
                let mut output = SequenceOutput {
                    length: state.records.len(),
                    tokens: state.records,
                    masks: masking.then_some(state.masks),
                    alternatives: alternatives.then_some(state.alternatives),
                    text: String::new(),
                    finish_reason: choice
                        .as_ref()
                        .map_or(FinishReason::Abort, |c| finish_reason(&c.finish_reason)),
                    first_token_at: state.first_token_at,
                };
                match choice {
                    Some(choice) if drawn == 0 && request.stop.is_empty() => {
                        output.text = choice.text;
                    }
                    // Interrupted, resumed, or with stop strings: mistral.rs checks them on
                    // its own tokens only, and a token late (on the text before the token it
                    // draws), so the ending is found here.
                    _ => {
                        self.whole_text(&request.drawn, &request.stop, &mut output)
                            .await?
                    }
                }
                Ok(output)
            }
            Drawing::Engine {
                temperature,
                top_p,
                top_k,
            } => {
                params.temperature = Some(temperature);
                params.top_p = Some(top_p);
                params.top_k = top_k;
                let (choice, length) = self.run(prompt, params, None).await?;
                Ok(SequenceOutput {
                    tokens: Vec::new(),
                    masks: None,
                    alternatives: None,
                    length,
                    text: choice.text,
                    finish_reason: finish_reason(&choice.finish_reason),
                    first_token_at: None,
                })
            }
        }
    }
}
