//! The native engine's batching loop, on a thread of its own.
//!
//! Each iteration: take the sequences that arrived, drop the ones whose caller left, admit
//! waiting sequences into free cache slots (samples of one prompt that arrive together are
//! prefilled once and the prompt's keys and values copied to each of them), then run one decode
//! forward for every running sequence, measure and draw each row, and answer the sequences
//! that finished. Prompt tokens per iteration are bounded, so a long prompt delays the running
//! sequences by one chunk at most.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::oneshot;

use super::kv::KvCache;
use super::model::{Batch, Transformer};
use super::text::TextCodec;
use crate::api::FinishReason;
use crate::engine::{Drawing, EngineError, SequenceOutput, SequenceRequest};
use crate::error::panic_message;
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
    /// Prompt tokens prefilled per iteration, at least one chunk.
    pub prefill_chunk: usize,
}

/// A sequence with a cache slot.
struct Running {
    job: Job,
    slot: usize,
    /// Tokens in the cache (prompt, then generated ones fed back).
    cached: usize,
    /// Prompt tokens not yet in the cache.
    prompt_left: usize,
    generated: Vec<u32>,
    records: Vec<TokenRecord>,
    first_token_at: Option<Instant>,
    /// Samples of the same prompt whose prefill this sequence runs, with their slots.
    followers: Vec<(Job, usize)>,
}

/// The loop's state: the model, its cache, and the sequences it holds.
pub struct Scheduler {
    model: Transformer,
    text: Arc<TextCodec>,
    cache: KvCache,
    limits: Limits,
    free_slots: Vec<usize>,
    waiting: VecDeque<Job>,
    running: Vec<Running>,
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
            free_slots: (0..limits.slots).rev().collect(),
            model,
            text,
            cache,
            limits,
            waiting: VecDeque::new(),
            running: Vec::new(),
            workspace: Workspace::default(),
            unseeded: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }

    /// Runs until every sender of `jobs` is gone and no sequence is left.
    pub fn run(mut self, jobs: Receiver<Job>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                // Idle: give the cache's memory back until the next sequence arrives.
                self.cache.clear();
                match jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if !self.busy() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            // A panic in a step fails the sequences it touched, not the loop.
            let step = std::panic::catch_unwind(AssertUnwindSafe(|| self.step()));
            let failure = match step {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("the engine panicked: {}", panic_message(panic.as_ref())),
            };
            tracing::error!("native engine step failed: {failure}");
            self.fail_running(&failure);
        }
    }

    fn busy(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// Fails every running sequence and frees the cache.
    fn fail_running(&mut self, why: &str) {
        for seq in std::mem::take(&mut self.running) {
            self.free_slots.push(seq.slot);
            for (job, slot) in seq.followers {
                self.free_slots.push(slot);
                let _ = job.reply.send(Err(EngineError::Generation(why.into())));
            }
            let _ = seq.job.reply.send(Err(EngineError::Generation(why.into())));
        }
    }

    /// One iteration: cancellations, admissions and prefill, one decode forward.
    fn step(&mut self) -> candle_core::Result<()> {
        self.drop_cancelled();
        self.admit()?;
        self.prefill()?;
        self.decode()
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|j| !j.reply.is_closed());
        for _ in self.waiting.len()..before {
            crate::metrics::sequence_cancelled();
        }
        let mut kept = Vec::with_capacity(self.running.len());
        for mut seq in std::mem::take(&mut self.running) {
            let (gone, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut seq.followers)
                .into_iter()
                .partition(|(j, _)| j.reply.is_closed());
            for (_, slot) in gone {
                crate::metrics::sequence_cancelled();
                self.free_slots.push(slot);
            }
            seq.followers = stay;
            if seq.job.reply.is_closed() {
                crate::metrics::sequence_cancelled();
                self.free_slots.push(seq.slot);
                // A follower takes over the prefill: its slot holds every chunk so far.
                if !seq.followers.is_empty() {
                    let (job, slot) = seq.followers.remove(0);
                    let followers = std::mem::take(&mut seq.followers);
                    let mut heir = self.fresh(job, slot, followers);
                    heir.cached = seq.cached;
                    heir.prompt_left = seq.prompt_left;
                    kept.push(heir);
                }
                continue;
            }
            kept.push(seq);
        }
        self.running = kept;
    }

    fn fresh(&self, job: Job, slot: usize, followers: Vec<(Job, usize)>) -> Running {
        Running {
            prompt_left: job.request.prompt.len(),
            job,
            slot,
            cached: 0,
            generated: Vec::new(),
            records: Vec::new(),
            first_token_at: None,
            followers,
        }
    }

    /// Moves waiting sequences into free slots. Samples of one prompt waiting together form
    /// one group whose first member prefills for all; a sample whose prompt a running sequence
    /// already holds copies that sequence's cache and computes only the last prompt token
    /// (which gives its first logits row).
    fn admit(&mut self) -> candle_core::Result<()> {
        while !self.free_slots.is_empty() {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            let slot = self.free_slots.pop().expect("a free slot");
            let len = job.request.prompt.len();
            let sibling = self
                .running
                .iter()
                .find(|s| s.prompt_left == 0 && s.job.request.prompt == job.request.prompt)
                .map(|s| s.slot);
            if let Some(from) = sibling {
                if let Err(e) = self.cache.copy_prefix(from, slot, len - 1) {
                    self.free_slots.push(slot);
                    self.waiting.push_front(job);
                    return Err(e);
                }
                let mut seq = self.fresh(job, slot, Vec::new());
                seq.cached = len - 1;
                seq.prompt_left = 1;
                self.running.push(seq);
                continue;
            }
            let mut followers = Vec::new();
            let mut i = 0;
            while i < self.waiting.len() && !self.free_slots.is_empty() {
                if self.waiting[i].request.prompt == job.request.prompt {
                    let f = self.waiting.remove(i).expect("index in range");
                    followers.push((f, self.free_slots.pop().expect("a free slot")));
                } else {
                    i += 1;
                }
            }
            let seq = self.fresh(job, slot, followers);
            self.running.push(seq);
        }
        Ok(())
    }

    /// Prefills prompt chunks, up to the per-iteration budget, and draws the first token of
    /// every sequence whose prompt is complete.
    fn prefill(&mut self) -> candle_core::Result<()> {
        let mut budget = self.limits.prefill_chunk;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            if self.running[i].prompt_left == 0 {
                i += 1;
                continue;
            }
            let seq = &self.running[i];
            let prompt = seq.job.request.prompt.clone();
            let take = seq.prompt_left.min(budget);
            let start = seq.cached;
            let batch = Batch {
                tokens: prompt[start..start + take].to_vec(),
                slots: vec![seq.slot; take],
                positions: (start..start + take).collect(),
                copies: seq.followers.iter().map(|(_, s)| *s).collect(),
            };
            let last = take - 1;
            let started = Instant::now();
            let logits = self.model.forward(&batch, &mut self.cache, &[last])?;
            // Copy the row to the host before timing: the forward may run asynchronously.
            let row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            crate::metrics::prefilled(take, started.elapsed());
            budget -= take;
            let seq = &mut self.running[i];
            seq.cached += take;
            seq.prompt_left -= take;
            if seq.prompt_left > 0 {
                i += 1;
                continue;
            }
            // The prompt is in the cache of the leader and every follower: they all draw their
            // first token from this row.
            let cached = seq.cached;
            let followers = std::mem::take(&mut seq.followers);
            let mut group = vec![i];
            for (job, slot) in followers {
                let mut f = self.fresh(job, slot, Vec::new());
                f.cached = cached;
                f.prompt_left = 0;
                group.push(self.running.len());
                self.running.push(f);
            }
            let mut ended = Vec::new();
            for j in group {
                match self.draw(j, &row) {
                    Ok(true) => ended.push((j, None)),
                    Ok(false) => {}
                    Err(e) => ended.push((j, Some(e.to_string()))),
                }
            }
            // `retire` swaps the ended out; whatever lands at `i` is looked at again.
            let leader_done = ended.iter().any(|(j, _)| *j == i);
            self.retire(ended);
            if !leader_done {
                i += 1;
            }
        }
        Ok(())
    }

    /// One forward for the last drawn token of every sequence that has one.
    fn decode(&mut self) -> candle_core::Result<()> {
        let ready: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].prompt_left == 0 && !self.running[i].generated.is_empty())
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for &i in &ready {
            let s = &self.running[i];
            batch
                .tokens
                .push(*s.generated.last().expect("a drawn token"));
            batch.slots.push(s.slot);
            batch.positions.push(s.cached);
        }
        let rows: Vec<usize> = (0..ready.len()).collect();
        let started = Instant::now();
        let logits = self.model.forward(&batch, &mut self.cache, &rows)?;
        self.model.device().synchronize()?;
        let forwarded = Instant::now();
        let logits = logits.to_vec2::<f32>()?;
        let copied = Instant::now();
        // Rows are measured and drawn in parallel, each thread with its own workspace.
        let base_key = self.unseeded;
        self.unseeded = self.unseeded.wrapping_add(ready.len() as u64);
        let drawn: Vec<candle_core::Result<(u32, Option<TokenRecord>)>> = ready
            .par_iter()
            .zip(logits.par_iter())
            .enumerate()
            .map_init(Workspace::default, |ws, (r, (&i, row))| {
                let seq = &self.running[i];
                let key = base_key.wrapping_add(r as u64);
                measure(
                    &seq.job.request.drawing,
                    row,
                    seq.generated.len() as u32,
                    key,
                    ws,
                )
            })
            .collect();
        let mut ended = Vec::new();
        for (&i, drawn) in ready.iter().zip(drawn) {
            self.running[i].cached += 1;
            match drawn {
                Ok(drawn) if self.accept(i, drawn) => ended.push((i, None)),
                Ok(_) => {}
                // A row that cannot be measured (non-finite logits) fails its sequence only.
                Err(e) => ended.push((i, Some(e.to_string()))),
            }
        }
        crate::metrics::decode_step(
            ready.len(),
            forwarded - started,
            copied - forwarded,
            copied.elapsed(),
        );
        self.retire(ended);
        Ok(())
    }

    /// Draws the next token of `running[i]` from `row`; true when the sequence is done.
    fn draw(&mut self, i: usize, row: &[f32]) -> candle_core::Result<bool> {
        self.unseeded = self.unseeded.wrapping_add(1);
        let seq = &self.running[i];
        let drawn = measure(
            &seq.job.request.drawing,
            row,
            seq.generated.len() as u32,
            self.unseeded,
            &mut self.workspace,
        )?;
        Ok(self.accept(i, drawn))
    }

    /// Records a drawn token of `running[i]`; true when the sequence is done.
    fn accept(&mut self, i: usize, (token, record): (u32, Option<TokenRecord>)) -> bool {
        let seq = &mut self.running[i];
        seq.records.extend(record);
        seq.first_token_at.get_or_insert_with(Instant::now);
        seq.generated.push(token);
        let request = &seq.job.request;
        self.text.eos_ids.contains(&token)
            || seq.generated.len() >= request.max_tokens
            || seq.cached + 1 >= self.model.arch().max_context
            || (!request.stop.is_empty() && {
                // A stop string can only have completed within the last few tokens: each
                // non-special token decodes to at least one byte.
                let longest = request.stop.iter().map(String::len).max().unwrap_or(0);
                let tail = seq.generated.len().saturating_sub(longest + 4);
                let text = self.text.decode(&seq.generated[tail..]);
                request.stop.iter().any(|s| text.contains(s.as_str()))
            })
    }

    /// Answers the sequences at the given indices, with their output or, where a failure is
    /// given, with that failure, and frees their slots.
    fn retire(&mut self, mut ended: Vec<(usize, Option<String>)>) {
        ended.sort_unstable_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, failure) in ended {
            let seq = self.running.swap_remove(i);
            self.free_slots.push(seq.slot);
            let answer = match failure {
                None => Ok(self.output(&seq)),
                Some(why) => Err(EngineError::Generation(why)),
            };
            let _ = seq.job.reply.send(answer);
        }
    }

    fn output(&self, seq: &Running) -> SequenceOutput {
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
