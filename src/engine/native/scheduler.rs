//! The native engine's batching loop, on a thread of its own.
//!
//! Each iteration: take the sequences that arrived, drop the ones whose caller left, admit
//! waiting sequences into free cache slots (samples of one prompt that arrive together are
//! prefilled once and the prompt's keys and values copied to each of them), then run one decode
//! forward for every running sequence, measure and draw each row, and answer the sequences
//! that finished. Prompt tokens per iteration are bounded, so a long prompt delays the running
//! sequences by one chunk at most.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::oneshot;

use super::kv::KvCache;
use super::model::{Batch, DecodeRow, Transformer};
use super::plan::{Batcher, SeqId};
use super::text::TextCodec;
use crate::engine::FinishReason;
use crate::engine::{Drawing, EngineError, SequenceOutput, SequenceRequest};
use crate::panic::panic_message;
use crate::sampling::{DrawKey, TokenRecord, TokenSampler};
use crate::stats::{NucleusParams, NucleusRule, Truncation, Workspace};

/// A sequence handed to the loop, with the channel its answer goes to.
pub struct Job {
    /// What to generate.
    pub request: SequenceRequest,
    /// Where the finished sequence (or the failure) goes; closed when the caller left.
    pub reply: oneshot::Sender<Result<SequenceOutput, EngineError>>,
}

/// Limits of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cache slots: sequences running at once.
    pub slots: usize,
    /// Prompt tokens prefilled per iteration (and per forward).
    pub prefill_chunk: usize,
}

/// What the loop keeps of a sequence besides the bookkeeping in [`Batcher`].
struct Sequence {
    job: Job,
    generated: Vec<u32>,
    records: Vec<TokenRecord>,
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
    workspace: Workspace,
    /// Source of keys for sequences drawn without a seed (the engine-sampler baseline).
    unseeded: u64,
}

impl Scheduler {
    /// A loop over `model` with an empty cache.
    pub fn new(model: Transformer, text: Arc<TextCodec>, limits: Limits) -> Self {
        let a = model.arch();
        let cache = KvCache::new(
            a.layers,
            limits.slots,
            a.kv_width(),
            a.max_context,
            model.dtype(),
            model.device(),
        );
        Self {
            batcher: Batcher::new(limits.slots, limits.prefill_chunk),
            model,
            text,
            cache,
            limits,
            sequences: HashMap::new(),
            next_id: 0,
            workspace: Workspace::default(),
            unseeded: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }

    /// Runs a one-token prompt and one decode step on slot 0, then empties the cache: a setting
    /// the model cannot run on its device (a dtype with an operation missing, say) fails here,
    /// when the server starts, instead of failing every request.
    pub fn probe(&mut self) -> Result<(), String> {
        let prompt = Batch::Prompt {
            slot: 0,
            start: 0,
            tokens: vec![0],
            copies: Vec::new(),
        };
        let decode = Batch::Decode {
            rows: vec![DecodeRow {
                slot: 0,
                position: 1,
                token: 0,
            }],
        };
        let run = |s: &mut Self| -> candle_core::Result<()> {
            for batch in [&prompt, &decode] {
                s.model
                    .forward(batch, &mut s.cache, &[0])?
                    .to_vec2::<f32>()?;
            }
            Ok(())
        };
        let result = run(self).map_err(|e| error_message(&e));
        self.cache.clear();
        result
    }

    /// Runs until every sender of `jobs` is gone and no sequence is left.
    pub fn run(mut self, jobs: Receiver<Job>) {
        loop {
            if self.batcher.is_idle() {
                // Idle: give the cache's memory back until the next sequence arrives.
                self.cache.clear();
                match jobs.recv() {
                    Ok(job) => self.accept_job(job),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.accept_job(job),
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
                    let failure = format!("the engine panicked: {}", panic_message(panic.as_ref()));
                    tracing::error!("native engine step failed: {failure}");
                    failure
                }
            };
            for id in self.batcher.clear_running() {
                self.answer(id, Err(EngineError::Generation(failure.clone())));
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
        self.batcher.push(id, job.request.prompt.clone());
        self.sequences.insert(
            id,
            Sequence {
                job,
                generated: Vec::new(),
                records: Vec::new(),
                first_token_at: None,
            },
        );
    }

    /// One iteration: cancellations, admissions and prompt chunks, one decode forward.
    fn step(&mut self) -> candle_core::Result<()> {
        self.drop_cancelled();
        for copy in self.batcher.admit() {
            self.cache.copy_prefix(copy.from, copy.to, copy.rows)?;
        }
        self.prefill()?;
        self.decode()
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
            crate::metrics::sequence_cancelled();
            self.batcher.remove(id);
            self.sequences.remove(&id);
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
            // Copy the row to the host before timing: the forward may run asynchronously.
            let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            crate::metrics::prefilled(take, started.elapsed());
            budget -= take;
            // When the prompt is complete, the leader and its followers all draw their first
            // token from this row.
            let mut ended = Vec::new();
            for id in self.batcher.prompt_done(work.seq, take) {
                self.unseeded = self.unseeded.wrapping_add(1);
                let seq = &self.sequences[&id];
                let drawn = measure(
                    &seq.job.request.drawing,
                    &row,
                    0,
                    self.unseeded,
                    &mut self.workspace,
                );
                if let Some(end) = self.take_drawn(id, drawn) {
                    ended.push((id, end));
                }
            }
            self.retire(ended);
        }
        Ok(())
    }

    /// One forward for the last drawn token of every sequence that has one.
    fn decode(&mut self) -> candle_core::Result<()> {
        let (ids, batch) = self.batcher.next_decode();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<usize> = (0..ids.len()).collect();
        let started = Instant::now();
        let logits = self.model.forward(&batch, &mut self.cache, &rows)?;
        self.model.device().synchronize()?;
        let forwarded = Instant::now();
        let logits = logits.to_vec2::<f32>()?;
        let copied = Instant::now();
        self.batcher.decoded(&ids);
        // Rows are measured and drawn in parallel, each thread with its own workspace.
        let base_key = self.unseeded;
        self.unseeded = self.unseeded.wrapping_add(ids.len() as u64);
        let sequences = &self.sequences;
        let drawn: Vec<candle_core::Result<(u32, Option<TokenRecord>)>> = ids
            .par_iter()
            .zip(logits.par_iter())
            .enumerate()
            .map_init(Workspace::default, |ws, (r, (id, row))| {
                let seq = &sequences[id];
                let key = base_key.wrapping_add(r as u64);
                let index = seq.generated.len() as u32;
                measure(&seq.job.request.drawing, row, index, key, ws)
            })
            .collect();
        let mut ended = Vec::new();
        for (&id, drawn) in ids.iter().zip(drawn) {
            if let Some(end) = self.take_drawn(id, drawn) {
                ended.push((id, end));
            }
        }
        crate::metrics::decode_step(
            ids.len(),
            forwarded - started,
            copied - forwarded,
            copied.elapsed(),
        );
        self.retire(ended);
        Ok(())
    }

    /// Records what was drawn for `id`: `None` while the sequence goes on (its token is fed
    /// next), or how it ended: `Ok` when done, `Err` when its row could not be measured (a
    /// non-finite row fails its own sequence only).
    fn take_drawn(
        &mut self,
        id: SeqId,
        drawn: candle_core::Result<(u32, Option<TokenRecord>)>,
    ) -> Option<Result<(), String>> {
        let (token, record) = match drawn {
            Ok(drawn) => drawn,
            Err(e) => return Some(Err(error_message(&e))),
        };
        let seq = self.sequences.get_mut(&id).expect("a known sequence");
        seq.records.extend(record);
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

    /// Answers the ended sequences, with their output or their failure, and frees their slots.
    fn retire(&mut self, ended: Vec<(SeqId, Result<(), String>)>) {
        for (id, end) in ended {
            self.batcher.remove(id);
            let answer = match end {
                Ok(()) => Ok(self.output(&self.sequences[&id])),
                Err(why) => Err(EngineError::Generation(why)),
            };
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
            length: seq.generated.len(),
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

/// Measures `row` and draws token `index` as `drawing` says: the token, and its statistics
/// unless the engine-sampler baseline draws it (with `unseeded` as its key).
fn measure(
    drawing: &Drawing,
    row: &[f32],
    index: u32,
    unseeded: u64,
    ws: &mut Workspace,
) -> candle_core::Result<(u32, Option<TokenRecord>)> {
    let failed =
        |e: crate::stats::StatsError| candle_core::Error::Msg(format!("token {index}: {e}"));
    match drawing {
        Drawing::Entroll(sampler) => {
            let record = sampler.step(row, index, ws).map_err(failed)?;
            Ok((record.token, Some(record)))
        }
        Drawing::Engine {
            temperature,
            top_p,
            top_k,
        } => {
            let sampler = baseline_sampler(*temperature, *top_p, *top_k, unseeded);
            Ok((sampler.draw_only(row, index, ws).map_err(failed)?, None))
        }
    }
}

/// The sampler of the no-statistics baseline: the request's truncation, a key of its own.
fn baseline_sampler(temperature: f64, top_p: f64, top_k: Option<usize>, key: u64) -> TokenSampler {
    TokenSampler {
        temperature,
        truncation: Truncation { top_k, top_p },
        nucleus: NucleusParams {
            top_p: 1.0,
            max_candidates: 1,
            rule: NucleusRule::Strict,
        },
        key: DrawKey {
            seed: key,
            prompt: 0,
            sample: 0,
        },
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
