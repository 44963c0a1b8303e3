//! The native engine's batching loop, on a thread of its own.
//!
//! Each iteration: take the sequences that arrived, drop the ones whose caller left, answer
//! the interrupted ones with what they drew, admit waiting sequences while seats and cache
//! blocks last (samples of one prompt that arrive together are prefilled once and share the
//! prompt's blocks), give every decoding sequence the block its next position needs (copying a
//! shared one, or preempting the newest sequence when none is left), then run one decode
//! forward for every running sequence, measure and draw each row, and answer the sequences
//! that finished. Prompt tokens per iteration are bounded, so a long prompt delays the running
//! sequences by one chunk at most.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rayon::prelude::*;
use tokio::sync::oneshot;

use super::batch::{Batch, DecodeRow};
use super::blocks::Blocks;
use super::kernels::{RowIn, MAX_TOP};
use super::kv::{Access, CacheShape, KvCache};
use super::model::Transformer;
use super::plan::{Batcher, CacheEvents, SeqId};
use super::step_counts::{self, StepCounts};
use super::text::TextCodec;
use super::token_stats;
use crate::engine::FinishReason;
use crate::engine::{Drawing, EngineError, KvCacheState, SequenceOutput, SequenceRequest};
use crate::stats::distribution::{Alternative, Truncation, Workspace};
use crate::stats::sampling::{SamplingMask, TokenRecord, TokenSampler};
use crate::telemetry::metrics;
use crate::telemetry::panic::panic_message;

/// A sequence handed to the loop, with the channel its answer goes to.
pub struct Job {
    /// What to generate.
    pub request: SequenceRequest,
    /// Where the finished sequence (or the failure) goes; closed when the caller left.
    pub reply: oneshot::Sender<Result<SequenceOutput, EngineError>>,
}

/// What the loop is sent.
pub enum Message {
    /// A sequence to generate.
    Generate(Job),
    /// Empty the prefix cache; the count of blocks dropped goes back.
    Flush(oneshot::Sender<usize>),
}

/// Limits of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences running at once.
    pub max_running: usize,
    /// Most KV cache blocks (of [`BLOCK_SIZE`] positions): at least one sequence of the
    /// model's whole context, so that any one sequence fits and preemption always ends.
    pub kv_blocks: usize,
    /// Keep the full blocks of finished sequences for later requests (the prefix cache); off,
    /// blocks are found only while a running sequence holds them.
    pub prefix_cache: bool,
    /// Prompt tokens prefilled per iteration (and per forward).
    pub prefill_chunk: usize,
    /// entroll's device kernels: rows measured and drawn where the logits are, the cache read
    /// in place and written by row copies. Off: rows copied to the host and measured there, a
    /// thread per row; the cache through candle's operations.
    pub device_kernels: bool,
}

/// Positions per KV cache block (vLLM's default; a block of one key/value head is then
/// `16 · head_dim` contiguous elements, 2 KB at 64 in bf16).
pub const BLOCK_SIZE: usize = 16;

/// What the loop keeps of a sequence besides the bookkeeping in [`Batcher`].
struct Sequence {
    job: Job,
    generated: Vec<u32>,
    records: Vec<TokenRecord>,
    /// Each token's sampling mask, when the sampler returns them.
    masks: Option<Vec<Option<SamplingMask>>>,
    /// Each token's alternatives, when the sampler returns them.
    alternatives: Option<Vec<Box<[Alternative]>>>,
    first_token_at: Option<Instant>,
}

/// The loop's state: the model, its cache, and the sequences it holds.
pub struct Scheduler {
    model: Transformer,
    text: Arc<TextCodec>,
    cache: KvCache,
    limits: Limits,
    batcher: Batcher,
    sequences: HashMap<SeqId, Sequence>,
    next_id: SeqId,
    /// Source of keys for sequences drawn without a seed (the engine-sampler baseline).
    unseeded: u64,
    /// The cache events last counted in the metrics.
    published: CacheEvents,
    /// The cache's state as `/info` reads it.
    state: Arc<Mutex<KvCacheState>>,
}

impl Scheduler {
    /// A loop over `model` with an empty cache.
    pub fn new(model: Transformer, text: Arc<TextCodec>, limits: Limits) -> Self {
        let a = model.arch();
        let kv_blocks = limits.kv_blocks;
        assert!(
            kv_blocks * BLOCK_SIZE >= a.max_context,
            "a KV cache of {kv_blocks} blocks cannot hold one sequence of the model's context"
        );
        let cache = KvCache::new(
            CacheShape {
                layers: a.layers,
                kv_heads: a.kv_heads,
                head_dim: a.head_dim,
                block_size: BLOCK_SIZE,
                max_blocks: kv_blocks,
            },
            model.dtype(),
            model.device(),
            if limits.device_kernels {
                Access::Kernels
            } else {
                Access::Candle
            },
        );
        let blocks = Blocks::new(BLOCK_SIZE, kv_blocks, limits.prefix_cache);
        Self {
            batcher: Batcher::new(limits.max_running, limits.prefill_chunk, blocks),
            model,
            text,
            cache,
            limits,
            sequences: HashMap::new(),
            next_id: 0,
            unseeded: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            published: CacheEvents::default(),
            state: Arc::default(),
        }
    }

    /// The cache's state, updated after every iteration.
    pub fn cache_state(&self) -> Arc<Mutex<KvCacheState>> {
        self.state.clone()
    }

    /// Runs a one-token prompt and one decode step in block 0, then empties the cache: a setting
    /// the model cannot run on its device (a dtype with an operation missing, say) fails here,
    /// when the server starts, instead of failing every request.
    pub fn probe(&mut self) -> Result<(), String> {
        let prompt = Batch::Prompt {
            blocks: vec![0],
            start: 0,
            tokens: vec![0],
        };
        let decode = Batch::Decode {
            rows: vec![DecodeRow {
                blocks: vec![0],
                position: 1,
                token: 0,
            }],
        };
        let probe = TokenSampler::plain(1.0, Truncation::NONE, 0);
        let row = RowDraw {
            sampler: &probe,
            keep: true,
            index: 0,
        };
        let run = |s: &mut Self| -> candle_core::Result<()> {
            for batch in [&prompt, &decode] {
                let logits = s.model.forward(batch, &mut s.cache, &[0])?;
                s.measure_rows(&logits, std::slice::from_ref(&row))?
                    .rows
                    .remove(0)?;
            }
            Ok(())
        };
        let result = run(self).map_err(|e| error_message(&e));
        self.cache.clear();
        result
    }

    /// Runs until every sender of `jobs` is gone and no sequence is left.
    pub fn run(mut self, jobs: Receiver<Message>) {
        self.publish_cache();
        loop {
            if self.batcher.is_idle() {
                // Idle: give the cache's memory back until the next sequence arrives, unless
                // the prefix cache holds blocks.
                if self.batcher.release_memory() {
                    self.cache.clear();
                    self.publish_cache();
                }
                match jobs.recv() {
                    Ok(message) => self.accept(message),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(message) => self.accept(message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.batcher.is_idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            // A panic in a step fails the sequences it touched, not the loop.
            let step = std::panic::catch_unwind(AssertUnwindSafe(|| self.step()));
            let failure = match step {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => {
                    // The log keeps candle's backtrace (set `RUST_BACKTRACE`); the answer gets
                    // the sentence.
                    tracing::error!("native engine step failed: {e:?}");
                    error_message(&e)
                }
                Err(panic) => {
                    // The panic's text is for the log: it may name the server's internals.
                    tracing::error!(
                        panic = ?panic_message(panic.as_ref()),
                        "native engine step panicked"
                    );
                    "the engine panicked (a bug); the server's log has the details".to_string()
                }
            };
            let failed = self.batcher.clear_running();
            self.publish_cache();
            for id in failed {
                self.answer(id, Err(EngineError::Generation(failure.clone())));
            }
        }
    }

    fn accept(&mut self, message: Message) {
        match message {
            Message::Generate(job) => self.accept_job(job),
            Message::Flush(reply) => {
                let dropped = self.batcher.flush();
                self.publish_cache();
                let _ = reply.send(dropped);
            }
        }
    }

    fn accept_job(&mut self, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        if job.request.prompt.is_empty() {
            let _ = job.reply.send(Err(EngineError::InvalidPrompt(
                "the prompt has no tokens".into(),
            )));
            return;
        }
        // A context beyond the model's would never be admitted and would hold up the queue
        // (the HTTP layer refuses such prompts first).
        let context = job.request.prompt.len() + job.request.drawn.len();
        if context > self.model.arch().max_context {
            let _ = job.reply.send(Err(EngineError::InvalidPrompt(format!(
                "{context} tokens are beyond the model's context of {}",
                self.model.arch().max_context
            ))));
            return;
        }
        // Tokens drawn before an interruption are prefilled after the prompt and go on counting
        // as generated: toward max_tokens, stop strings and the draw index.
        self.batcher.push(id, job.request.context());
        let masks = matches!(&job.request.drawing, Drawing::Entroll(s) if s.mask).then(Vec::new);
        let alternatives =
            matches!(&job.request.drawing, Drawing::Entroll(s) if s.alternatives > 0)
                .then(Vec::new);
        self.sequences.insert(
            id,
            Sequence {
                generated: job.request.drawn.to_vec(),
                job,
                records: Vec::new(),
                masks,
                alternatives,
                first_token_at: None,
            },
        );
    }

    /// One iteration: cancellations and interruptions, admissions and prompt chunks, one
    /// decode forward.
    fn step(&mut self) -> candle_core::Result<()> {
        self.drop_cancelled();
        self.answer_interrupted();
        self.batcher.admit();
        let result = self.prefill().and_then(|()| self.decode());
        self.publish_cache();
        result
    }

    /// The cache's block counts and events, to the metrics and the state `/info` reads.
    fn publish_cache(&mut self) {
        let c = self.batcher.counts();
        metrics::kv_blocks(c.limit, c.allocated, c.used, c.shared, c.cached);
        let events = self.batcher.events();
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = KvCacheState {
            block_size: BLOCK_SIZE,
            blocks_total: c.limit,
            blocks_allocated: c.allocated,
            blocks_used: c.used,
            blocks_shared: c.shared,
            blocks_cached: c.cached,
            preemptions: events.preemptions,
            prefix_hit_blocks: events.prefix_hits,
        };
        metrics::kv_events(
            events.preemptions - self.published.preemptions,
            events.prefix_hits - self.published.prefix_hits,
        );
        self.published = events;
    }

    /// Forgets the sequences whose caller left (their answer channel is closed).
    fn drop_cancelled(&mut self) {
        let gone: Vec<SeqId> = self
            .sequences
            .iter()
            .filter(|(_, s)| s.job.reply.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            metrics::sequence_cancelled();
            self.batcher.remove(id);
            self.sequences.remove(&id);
        }
    }

    /// Answers the sequences whose [`crate::engine::Interrupt`] was set with what they drew so
    /// far, and releases their blocks.
    fn answer_interrupted(&mut self) {
        let interrupted: Vec<SeqId> = self
            .sequences
            .iter()
            .filter(|(_, s)| s.job.request.interrupt.is_set())
            .map(|(&id, _)| id)
            .collect();
        for id in interrupted {
            self.batcher.remove(id);
            let mut output = self.output(&self.sequences[&id]);
            output.finish_reason = FinishReason::Abort;
            self.answer(id, Ok(output));
        }
    }

    /// Runs prompt chunks, up to one chunk's worth of tokens per iteration, and draws the
    /// first token of every sequence whose prompt they complete.
    fn prefill(&mut self) -> candle_core::Result<()> {
        let mut budget = self.limits.prefill_chunk;
        while let Some(work) = self.batcher.next_prompt(budget) {
            let take = work.batch.rows();
            let started = Instant::now();
            let logits = self
                .model
                .forward(&work.batch, &mut self.cache, &[take - 1])?;
            // On a GPU this is the time to queue the chunk's work: nothing waits for the device
            // before the draw reads its results.
            metrics::prefilled(take, started.elapsed());
            budget -= take;
            // When the prompt is complete, the leader and its followers all draw their first
            // token from this one row.
            let ids = self.batcher.prompt_done(work.seq, take);
            if ids.is_empty() {
                continue;
            }
            let drawn = self.draw(&ids, &logits)?;
            self.take_all(&ids, drawn.rows);
        }
        Ok(())
    }

    /// One forward for the last drawn token of every sequence that has one, after giving each
    /// the block its position needs.
    fn decode(&mut self) -> candle_core::Result<()> {
        let prep = self.batcher.prepare_decode();
        if !prep.copies.is_empty() {
            self.cache.reserve(self.batcher.blocks().allocated())?;
        }
        for copy in prep.copies {
            self.cache.copy_block(copy.from, copy.to, copy.rows)?;
        }
        let (ids, batch) = self.batcher.next_decode();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<usize> = (0..ids.len()).collect();
        let started = Instant::now();
        let calls = StepCounts::now();
        let logits = self.model.forward(&batch, &mut self.cache, &rows)?;
        // No synchronisation: on a GPU the statistics kernel is queued behind the forward, and
        // the wait for both lands in the draw's time (the forward's is the time to queue it).
        let forwarded = Instant::now();
        self.batcher.decoded(&ids);
        let drawn = self.draw(&ids, &logits)?;
        metrics::decode_step(
            ids.len(),
            forwarded - started,
            drawn.copy,
            forwarded.elapsed() - drawn.copy,
        );
        let calls = StepCounts::now().since(calls);
        metrics::decode_host_calls(calls.uploads, calls.launches, calls.syncs);
        self.take_all(&ids, drawn.rows);
        Ok(())
    }

    /// Measures and draws the next token of each of `ids` from its row of `logits` (or, for a
    /// group's first tokens, from the one row they share).
    fn draw(&mut self, ids: &[SeqId], logits: &Tensor) -> candle_core::Result<Measured> {
        let base_key = self.unseeded;
        self.unseeded = self.unseeded.wrapping_add(ids.len() as u64);
        let samplers: Vec<(TokenSampler, bool)> = ids
            .iter()
            .enumerate()
            .map(|(r, id)| {
                let drawing = &self.sequences[id].job.request.drawing;
                row_sampler(drawing, base_key.wrapping_add(r as u64))
            })
            .collect();
        let rows: Vec<RowDraw> = ids
            .iter()
            .zip(&samplers)
            .map(|(id, (sampler, keep))| RowDraw {
                sampler,
                keep: *keep,
                index: self.sequences[id].generated.len() as u32,
            })
            .collect();
        self.measure_rows(logits, &rows)
    }

    /// Measures and draws row `r` of `logits` as `rows[r]` says (every row from the first, if
    /// `logits` has one row). With the device kernels the token-statistics kernel runs where the
    /// logits are and only its results come back; without, the rows are copied to the host
    /// (a shared row once) and measured in parallel there.
    fn measure_rows(&self, logits: &Tensor, rows: &[RowDraw]) -> candle_core::Result<Measured> {
        let failed = |index: u32, e: String| candle_core::Error::Msg(format!("token {index}: {e}"));
        let (count, vocab) = logits.dims2()?;
        if count != 1 && count != rows.len() {
            candle_core::bail!("{count} logits rows for {} draws", rows.len());
        }
        if self.limits.device_kernels {
            // A shared row is repeated on the device, where the kernel reads a row per input.
            let logits = match count {
                1 if rows.len() > 1 => logits.broadcast_as((rows.len(), vocab))?.contiguous()?,
                _ => logits.clone(),
            };
            let inputs = rows
                .iter()
                .map(|row| RowIn::for_token(row.sampler, row.index))
                .collect();
            let (outs, tops) = token_stats::run(&logits, inputs)?;
            let rows = outs
                .into_iter()
                .zip(rows)
                .enumerate()
                .map(|(r, (out, row))| {
                    if (row.sampler.mask || row.sampler.alternatives > MAX_TOP) && row.keep {
                        // The kernel returns no token sets, and at most MAX_TOP alternatives:
                        // a row that asks for more is measured on the host, from its own
                        // logits.
                        let logits = logits.get(r)?.to_dtype(candle_core::DType::F32)?;
                        step_counts::sync();
                        return row.measure(&logits.to_vec1::<f32>()?, &mut Workspace::default());
                    }
                    let record = out.record().map_err(|e| failed(row.index, e))?;
                    let alternatives = match tops.get(r) {
                        Some(top) if row.keep => top.alternatives(),
                        _ => Box::default(),
                    };
                    Ok(Row {
                        token: record.token,
                        record: row.keep.then_some(record),
                        mask: None,
                        alternatives,
                    })
                })
                .collect();
            return Ok(Measured {
                rows,
                copy: Duration::ZERO,
            });
        }
        let started = Instant::now();
        step_counts::sync();
        let logits = logits.to_vec2::<f32>()?;
        let copy = started.elapsed();
        // Each thread with its own workspace.
        let rows = rows
            .par_iter()
            .enumerate()
            .map_init(Workspace::default, |ws, (r, row)| {
                row.measure(&logits[if count == 1 { 0 } else { r }], ws)
            })
            .collect();
        Ok(Measured { rows, copy })
    }

    /// Records each of `ids`' drawn token, then answers the sequences that ended.
    fn take_all(&mut self, ids: &[SeqId], drawn: Vec<Drawn>) {
        let mut ended = Vec::new();
        for (&id, drawn) in ids.iter().zip(drawn) {
            if let Some(end) = self.take_drawn(id, drawn) {
                ended.push((id, end));
            }
        }
        self.retire(ended);
    }

    /// Records what was drawn for `id`: `None` while the sequence goes on (its token is fed
    /// next), or how it ended: `Ok` when done, `Err` when its row could not be measured (a
    /// non-finite row fails its own sequence only) or its mask overdrew the request's budget.
    fn take_drawn(&mut self, id: SeqId, drawn: Drawn) -> Option<Result<(), EngineError>> {
        let Row {
            token,
            record,
            mask,
            alternatives,
        } = match drawn {
            Ok(drawn) => drawn,
            Err(e) => return Some(Err(EngineError::Generation(error_message(&e)))),
        };
        let seq = self.sequences.get_mut(&id).expect("a known sequence");
        seq.records.extend(record);
        if let Some(masks) = &mut seq.masks {
            if let Some(m) = &mask {
                if let Err(e) = seq.job.request.mask_budget.spend(m.ids.len()) {
                    return Some(Err(e));
                }
            }
            masks.push(mask);
        }
        if let Some(all) = &mut seq.alternatives {
            all.push(alternatives);
        }
        seq.first_token_at.get_or_insert_with(Instant::now);
        seq.generated.push(token);
        let request = &seq.job.request;
        let done = self.text.eos_ids.contains(&token)
            || seq.generated.len() >= request.max_tokens
            || request.prompt.len() + seq.generated.len() >= self.model.arch().max_context
            || (!request.stop.is_empty() && {
                // A stop string can only have completed within the last few tokens: each
                // non-special token decodes to at least one byte.
                let longest = request.stop.iter().map(String::len).max().unwrap_or(0);
                let tail = seq.generated.len().saturating_sub(longest + 4);
                let text = self.text.decode(&seq.generated[tail..]);
                request.stop.iter().any(|s| text.contains(s.as_str()))
            });
        if done {
            return Some(Ok(()));
        }
        self.batcher.drawn(id, token);
        None
    }

    /// Answers the ended sequences, with their output or their failure, after releasing their
    /// blocks (what a caller reads of the cache once answered counts them released).
    fn retire(&mut self, ended: Vec<(SeqId, Result<(), EngineError>)>) {
        if ended.is_empty() {
            return;
        }
        for (id, _) in &ended {
            self.batcher.remove(*id);
        }
        self.publish_cache();
        for (id, end) in ended {
            let answer = end.map(|()| self.output(&self.sequences[&id]));
            self.answer(id, answer);
        }
    }

    /// Sends `id` its answer and forgets it.
    fn answer(&mut self, id: SeqId, answer: Result<SequenceOutput, EngineError>) {
        if let Some(seq) = self.sequences.remove(&id) {
            let _ = seq.job.reply.send(answer);
        }
    }

    fn output(&self, seq: &Sequence) -> SequenceOutput {
        let request = &seq.job.request;
        let last = seq.generated.last().copied();
        let mut text = self.text.decode(&seq.generated);
        let mut finish_reason = if last.is_some_and(|t| self.text.eos_ids.contains(&t)) {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        if let Some(at) = request
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(at);
            finish_reason = FinishReason::Stop;
        }
        SequenceOutput {
            tokens: seq.records.clone(),
            masks: seq.masks.clone(),
            alternatives: seq.alternatives.clone(),
            length: seq.generated.len() - request.drawn.len(),
            text,
            finish_reason,
            first_token_at: seq.first_token_at,
        }
    }
}

/// The message of a candle error without the backtrace candle attaches when `RUST_BACKTRACE`
/// is set: an API answer carries one clear sentence, the log the frames.
fn error_message(e: &candle_core::Error) -> String {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => error_message(inner),
        Error::WithPath { inner, path } => format!("{}: {}", path.display(), error_message(inner)),
        Error::Context { inner, context } => format!("{context}: {}", error_message(inner)),
        other => other.to_string(),
    }
}

/// One logits row to measure and draw.
struct RowDraw<'a> {
    sampler: &'a TokenSampler,
    /// Whether the token's statistics are kept (not for the no-statistics baseline).
    keep: bool,
    /// The token's index in its sample.
    index: u32,
}

impl RowDraw<'_> {
    /// Measures and draws this row from its logits on the host.
    fn measure(&self, logits: &[f32], ws: &mut Workspace) -> Drawn {
        let failed = |e: crate::stats::distribution::StatsError| {
            candle_core::Error::Msg(format!("token {}: {e}", self.index))
        };
        if !self.keep {
            let token = self.sampler.draw_only(logits, self.index, ws);
            return Ok(Row {
                token: token.map_err(failed)?,
                record: None,
                mask: None,
                alternatives: Box::default(),
            });
        }
        let step = self
            .sampler
            .step_with_extras(logits, self.index, ws)
            .map_err(failed)?;
        Ok(Row {
            token: step.record.token,
            record: Some(step.record),
            mask: step.mask,
            alternatives: step.alternatives,
        })
    }
}

/// What a row gave: the drawn token, its record (unless the sampler keeps none), its
/// sampling mask (when asked for and the draw was truncated) and its alternatives (when asked
/// for).
struct Row {
    token: u32,
    record: Option<TokenRecord>,
    mask: Option<SamplingMask>,
    alternatives: Box<[Alternative]>,
}

/// A row's result, or why the row could not be measured.
type Drawn = candle_core::Result<Row>;

/// What a step's rows gave, and the time the logits took to reach the host (zero when the
/// kernel measured them where they were).
struct Measured {
    rows: Vec<Drawn>,
    copy: Duration,
}

/// The sampler of a row drawn as `drawing` says, and whether its statistics are kept: the
/// request's own, or for the no-statistics baseline its truncation with `unseeded` as its key.
fn row_sampler(drawing: &Drawing, unseeded: u64) -> (TokenSampler, bool) {
    match drawing {
        Drawing::Entroll(sampler) => (sampler.clone(), true),
        Drawing::Engine {
            temperature,
            top_p,
            top_k,
        } => {
            let truncation = Truncation {
                top_k: *top_k,
                top_p: *top_p,
            };
            (
                TokenSampler::plain(*temperature, truncation, unseeded),
                false,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_leave_backtraces_to_the_log() {
        let with_frames = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("the cache is full".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(with_frames.to_string().lines().count() > 1);
        assert_eq!(error_message(&with_frames), "the cache is full");
        let located = candle_core::Error::Msg("bad tensor".into()).with_path("/m.gguf");
        assert_eq!(error_message(&located), "/m.gguf: bad tensor");
    }
}
