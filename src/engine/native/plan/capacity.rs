//! How many sequences the paged cache holds at the memory the slot cache needed, on a rollout
//! workload with a long-tailed response length: the measurement behind docs/native-engine.md's
//! "Memory that follows the tokens" (run with `--nocapture` to print the table).
//!
//! The workload: 64 prompts of 128–511 tokens, 8 samples each (512 sequences), response lengths
//! log-normal with median 500 and σ 1 (drawn: mean 784, 7 cut at `max_tokens` 4,096): most
//! samples stop early, a few run long, as in RL reasoning runs. Both caches are simulated on the
//! same bookkeeping the engine runs: the slot cache as it was (every slot sized for the longest
//! live sequence, capacity doubling from 64 positions; each sample holding its own copy of the
//! prompt), the paged cache through [`Batcher`] itself (admission by blocks, shared prompt
//! blocks, copy on write, preemption).

use std::collections::{HashMap, HashSet};

use super::*;
use crate::stats::test_rng::TestRng;

const PROMPTS: usize = 64;
const GROUP: usize = 8;
const MAX_TOKENS: usize = 4_096;
const MAX_CONTEXT: usize = 8_192;
const BLOCK: usize = 16;
/// The slot cache's batch.
const SLOTS: usize = 16;

/// One sequence of the workload.
#[derive(Clone)]
struct Sample {
    prompt: Arc<[u32]>,
    /// Tokens it draws before it stops.
    length: usize,
}

fn workload() -> Vec<Sample> {
    let mut rng = TestRng(2026);
    let mut samples = Vec::new();
    for p in 0..PROMPTS {
        let len = 128 + (rng.next_u64() % 384) as usize;
        let prompt: Arc<[u32]> = (0..len).map(|i| (p * 1_000 + i) as u32).collect();
        for _ in 0..GROUP {
            let length = (500.0 * rng.normal().exp())
                .round()
                .clamp(1.0, MAX_TOKENS as f64);
            samples.push(Sample {
                prompt: prompt.clone(),
                length: length as usize,
            });
        }
    }
    samples
}

/// What a run held, step by step.
#[derive(Debug, Default)]
struct Usage {
    steps: usize,
    /// Sequences in each decode step, summed, and the most.
    sequences: usize,
    most_sequences: usize,
    /// Positions held (distinct) and reserved, summed over the steps measured.
    resident: u64,
    reserved: u64,
    most_reserved: usize,
    preemptions: u64,
    /// Prompt positions computed (prompts, and preempted sequences' recomputations).
    prefilled: usize,
}

impl Usage {
    fn mean_sequences(&self) -> f64 {
        self.sequences as f64 / self.steps as f64
    }

    fn step(&mut self, sequences: usize, resident: usize, reserved: usize) {
        self.steps += 1;
        self.sequences += sequences;
        self.most_sequences = self.most_sequences.max(sequences);
        self.resident += resident as u64;
        self.reserved += reserved as u64;
        self.most_reserved = self.most_reserved.max(reserved);
    }
}

/// The slot cache: `SLOTS` sequences at once, first come first served.
fn slots(samples: &[Sample]) -> Usage {
    let mut usage = Usage::default();
    let mut waiting: std::collections::VecDeque<usize> = (0..samples.len()).collect();
    // (sample, tokens drawn)
    let mut running: Vec<(usize, usize)> = Vec::new();
    let mut capacity = 0usize;
    // A group admitted together prefills its prompt once (the fewest it could compute).
    usage.prefilled = samples.iter().step_by(GROUP).map(|s| s.prompt.len()).sum();
    while !(waiting.is_empty() && running.is_empty()) {
        while running.len() < SLOTS {
            let Some(s) = waiting.pop_front() else { break };
            // The prefill draws the first token.
            running.push((s, 1));
        }
        running.retain(|&(s, drawn)| drawn < samples[s].length);
        if running.is_empty() {
            continue;
        }
        // The decode step feeds each sequence's last token at position prompt + drawn - 1.
        let lengths: Vec<usize> = running
            .iter()
            .map(|&(s, drawn)| samples[s].prompt.len() + drawn)
            .collect();
        let longest = *lengths.iter().max().expect("a running sequence");
        if longest > capacity {
            capacity = longest.max(capacity * 2).clamp(64, MAX_CONTEXT);
        }
        usage.step(running.len(), lengths.iter().sum(), SLOTS * capacity);
        for r in &mut running {
            r.1 += 1;
        }
    }
    usage
}

/// The paged cache through the batcher, with at most `blocks` blocks and `seats` sequences.
fn paged(samples: &[Sample], blocks: usize, seats: usize) -> Usage {
    let mut usage = Usage::default();
    let mut b = Batcher::new(seats, 1 << 20, Blocks::new(BLOCK, blocks, false));
    for (id, s) in samples.iter().enumerate() {
        b.push(id as SeqId, s.prompt.clone());
    }
    let mut drawn: HashMap<SeqId, usize> = HashMap::new();
    // Draws a token for `id`, or ends it.
    let draw = |b: &mut Batcher, drawn: &mut HashMap<SeqId, usize>, id: SeqId| {
        let n = drawn.entry(id).or_default();
        *n += 1;
        if *n >= samples[id as usize].length {
            b.remove(id);
        } else {
            b.drawn(id, 100_000 + *n as u32);
        }
    };
    while !b.is_idle() {
        b.admit();
        while let Some(w) = b.next_prompt(usize::MAX) {
            usage.prefilled += w.batch.rows();
            for id in b.prompt_done(w.seq, w.batch.rows()) {
                draw(&mut b, &mut drawn, id);
            }
        }
        b.prepare_decode();
        let (ids, _) = b.next_decode();
        if ids.is_empty() {
            continue;
        }
        // Distinct positions held: each block's filled positions, once however many share it.
        let mut seen = HashSet::new();
        let mut resident = 0;
        for e in &b.running {
            for (i, &block) in e.blocks.iter().enumerate() {
                if seen.insert(block) {
                    resident += (e.cached + 1).saturating_sub(i * BLOCK).min(BLOCK);
                }
            }
        }
        usage.step(ids.len(), resident, b.counts().used * BLOCK);
        b.decoded(&ids);
        for id in ids {
            draw(&mut b, &mut drawn, id);
        }
    }
    usage.preemptions = b.events().preemptions;
    usage
}

#[test]
fn at_the_memory_the_slot_cache_needs_the_paged_cache_runs_three_times_the_sequences() {
    let samples = workload();
    let cut = samples.iter().filter(|s| s.length == MAX_TOKENS).count();
    let mean = samples.iter().map(|s| s.length).sum::<usize>() as f64 / samples.len() as f64;
    let old = slots(&samples);
    // The same memory: the slot cache's peak, in blocks.
    let new = paged(&samples, old.most_reserved / BLOCK, samples.len());
    let capped = paged(&samples, old.most_reserved / BLOCK, 128);
    let row = |name: &str, u: &Usage| {
        format!(
            "| {name} | {} | {:.1} | {} | {:.0} % | {} | {} | {} |",
            u.most_reserved,
            u.mean_sequences(),
            u.most_sequences,
            100.0 * u.resident as f64 / u.reserved as f64,
            u.steps,
            u.preemptions,
            u.prefilled
        )
    };
    println!(
        "{} samples, mean response {mean:.0} tokens, {cut} cut at {MAX_TOKENS}\n\
         | cache | positions of memory (peak) | sequences per decode step (mean) | most | \
         resident / reserved | decode steps | preemptions | prompt positions computed |\n|---|---:|---:|---:|---:|---:|---:|---:|\n{}\n{}\n{}",
        samples.len(),
        row(&format!("slots ({SLOTS})"), &old),
        row("paged, blocks of 16, every sequence admitted", &new),
        row("paged, blocks of 16, 128 at once", &capped),
    );
    assert!(new.most_reserved <= old.most_reserved);
    assert!(capped.mean_sequences() >= 3.0 * old.mean_sequences());
    assert!(
        new.mean_sequences() >= 3.0 * old.mean_sequences(),
        "{:.1} vs {:.1} sequences per step",
        new.mean_sequences(),
        old.mean_sequences()
    );
}
