//! The native engine's bookkeeping, apart from any tensor: which sequences wait, which run,
//! each running sequence's block table, how much of each prompt is in the cache, which samples
//! of one prompt share a prefill and its blocks, and what the next forward passes are.
//!
//! [`Batcher`] is a pure state machine (no model, no channels, no clock), so every rule of the
//! loop is unit-tested here; [`super::scheduler`] runs the forwards it plans. Each forward it
//! hands out states what it is ([`Batch::Prompt`] or [`Batch::Decode`]); the model never infers
//! it from the batch's shape. The blocks themselves are counted in [`super::blocks`].
//!
//! Memory follows the tokens: a sequence is admitted when the blocks of its prompt (less the
//! leading blocks the prefix cache already holds) are free, and takes one block more each time
//! its decoding crosses into a new one. The samples of a group reference the blocks of the
//! prompt their leader prefilled; the partial last block is copied when a sample first writes
//! into it. When a decode step finds no block, the most recently admitted sequence is preempted:
//! its blocks go back (with the prefix cache on, its full ones stay findable until reused) and
//! it waits at the front of the queue with its prompt and every token it drew, to be prefilled
//! again and to draw on at the same index, so its tokens and statistics are those of a run that
//! was never preempted.

use std::collections::VecDeque;
use std::sync::Arc;

use super::batch::{Batch, DecodeRow};
use super::blocks::{BlockCounts, BlockId, BlockKey, Blocks};

/// Blocks per sequence that must stay available when another group is admitted beside running
/// ones (64 positions of growth each at the engine's blocks of 16): fewer preempt more often,
/// more leave memory unused (the capacity test's workload at 128 sequences: 264 preemptions
/// and 54.6 sequences a step at 2 blocks, 127 and 54.9 at 4, 8 and 52.6 at 8).
pub const HEADROOM: usize = 4;

/// A sequence's handle, given by the scheduler.
pub type SeqId = u64;

/// Positions `0..rows` of block `from` to copy into block `to` before the next forward: a
/// block several sequences share, copied for the one about to write into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    /// The shared block.
    pub from: BlockId,
    /// The writer's own block.
    pub to: BlockId,
    /// Positions copied.
    pub rows: usize,
}

/// What must happen before the next decode step: block copies to make, and the sequences
/// preempted to free blocks for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodePrep {
    /// Copies to run before the forward.
    pub copies: Vec<BlockCopy>,
    /// Sequences sent back to the queue, to be prefilled again.
    pub preempted: Vec<SeqId>,
}

/// One prompt chunk to run: the forward, and whose prompt it advances.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptWork {
    /// The sequence that runs the prefill (its group's leader).
    pub seq: SeqId,
    /// The forward: a [`Batch::Prompt`].
    pub batch: Batch,
    /// Whether this chunk ends the prompt (its last row gives the group's first tokens).
    pub completes: bool,
}

/// A running sequence.
#[derive(Debug, Clone)]
struct Entry {
    id: SeqId,
    /// The tokens prefilled on admission: the prompt (for a preempted sequence, the prompt and
    /// every token it had drawn).
    prompt: Arc<[u32]>,
    /// Tokens fed by decode steps since, in order.
    fed: Vec<u32>,
    /// The block table: block `i` holds positions `i · size..(i + 1) · size`.
    blocks: Vec<BlockId>,
    /// Keys of the leading full blocks, registered in the prefix cache.
    keys: Vec<BlockKey>,
    /// Positions in the cache (prompt first, then fed-back tokens).
    cached: usize,
    /// Samples of the same prompt that wait for this sequence's prefill; they reference its
    /// blocks and become entries of their own when the prompt is complete.
    followers: Vec<SeqId>,
    /// The drawn token this sequence feeds at position `cached` in the next decode step.
    next: Option<u32>,
}

impl Entry {
    fn prefilling(&self) -> bool {
        self.cached < self.prompt.len()
    }

    /// Tokens `range` of the sequence (prompt, then fed tokens).
    fn tokens(&self, range: std::ops::Range<usize>) -> Vec<u32> {
        let n = self.prompt.len();
        range
            .map(|p| {
                if p < n {
                    self.prompt[p]
                } else {
                    self.fed[p - n]
                }
            })
            .collect()
    }

    /// What a preempted sequence prefills again: its prompt, every token fed, and the token
    /// it drew and had not fed yet.
    fn context(&self) -> Arc<[u32]> {
        let mut all = self.tokens(0..self.prompt.len() + self.fed.len());
        all.extend(self.next);
        all.into()
    }

    /// Sequences this entry stands for: itself and its followers.
    fn seats(&self) -> usize {
        1 + self.followers.len()
    }
}

/// How many forwards found their blocks in the prefix cache, and how many sequences had to
/// give theirs back: counts since the batcher started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheEvents {
    /// Blocks found in the prefix cache at admission (not computed again).
    pub prefix_hits: u64,
    /// Sequences preempted for lack of blocks.
    pub preemptions: u64,
}

/// The loop's sequences and the cache's blocks.
#[derive(Debug)]
pub struct Batcher {
    /// Prompt tokens per forward (and per loop iteration).
    chunk: usize,
    /// Most sequences running at once (followers included).
    seats: usize,
    blocks: Blocks,
    waiting: VecDeque<(SeqId, Arc<[u32]>)>,
    /// In admission order.
    running: Vec<Entry>,
    events: CacheEvents,
}

impl Batcher {
    /// At most `seats` sequences running over `blocks`; prompts run in chunks of at most
    /// `chunk` tokens.
    pub fn new(seats: usize, chunk: usize, blocks: Blocks) -> Self {
        assert!(
            seats > 0 && chunk > 0,
            "a batcher needs a seat and a chunk size"
        );
        Self {
            chunk,
            seats,
            blocks,
            waiting: VecDeque::new(),
            running: Vec::new(),
            events: CacheEvents::default(),
        }
    }

    /// Queues a sequence with a non-empty prompt.
    pub fn push(&mut self, id: SeqId, prompt: Arc<[u32]>) {
        assert!(!prompt.is_empty(), "sequence {id} has an empty prompt");
        self.waiting.push_back((id, prompt));
    }

    /// True when no sequence waits or runs.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// The cache's blocks.
    pub fn blocks(&self) -> &Blocks {
        &self.blocks
    }

    /// Block counts, for `/info` and the metrics.
    pub fn counts(&self) -> BlockCounts {
        self.blocks.counts()
    }

    /// Prefix-cache hits and preemptions so far.
    pub fn events(&self) -> CacheEvents {
        self.events
    }

    /// Empties the prefix cache (blocks in use stay with their sequences); returns the blocks
    /// it held.
    pub fn flush(&mut self) -> usize {
        self.blocks.flush()
    }

    /// When idle with nothing cached, forgets every block so the tensors can be freed; true if
    /// it did.
    pub fn release_memory(&mut self) -> bool {
        if self.is_idle() && self.blocks.is_empty() {
            self.blocks.reset();
            return true;
        }
        false
    }

    /// Every sequence held, waiting or running (followers included).
    #[cfg(test)]
    fn ids(&self) -> Vec<SeqId> {
        let mut ids: Vec<SeqId> = self.waiting.iter().map(|(id, _)| *id).collect();
        for e in &self.running {
            ids.push(e.id);
            ids.extend(e.followers.iter().copied());
        }
        ids
    }

    /// Positions in the cache of a running sequence (a follower's count as its leader's).
    #[cfg(test)]
    fn cached(&self, id: SeqId) -> Option<usize> {
        self.entry_of(id).map(|e| e.cached)
    }

    /// The block table of a running sequence (a follower's is its leader's).
    #[cfg(test)]
    fn table(&self, id: SeqId) -> Option<Vec<BlockId>> {
        self.entry_of(id).map(|e| e.blocks.clone())
    }

    #[cfg(test)]
    fn entry_of(&self, id: SeqId) -> Option<&Entry> {
        self.running
            .iter()
            .find(|e| e.id == id || e.followers.contains(&id))
    }

    /// Forgets `id` wherever it is and releases its blocks. A leader that leaves while its
    /// prompt is prefilled hands the prefill and its blocks to its first follower. False if
    /// `id` is unknown.
    pub fn remove(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|(w, _)| *w == id) {
            self.waiting.remove(i);
            return true;
        }
        for i in 0..self.running.len() {
            let e = &mut self.running[i];
            if let Some(f) = e.followers.iter().position(|f| *f == id) {
                e.followers.remove(f);
                return true;
            }
            if e.id != id {
                continue;
            }
            if e.followers.is_empty() {
                let e = self.running.remove(i);
                self.release(&e);
            } else {
                e.id = e.followers.remove(0);
            }
            return true;
        }
        false
    }

    /// Releases `e`'s blocks, last first: of a sequence's cached blocks the tail is then
    /// evicted first, and what stays is a prefix a later request can still use.
    fn release(&mut self, e: &Entry) {
        for &b in e.blocks.iter().rev() {
            self.blocks.release(b);
        }
    }

    /// Forgets every running sequence and releases its blocks (after a failed forward);
    /// returns them, followers included. Waiting sequences stay. (The prefix cache stays too:
    /// a block is registered only after the forward that filled it succeeded, and no forward
    /// writes into a registered block.)
    pub fn clear_running(&mut self) -> Vec<SeqId> {
        let mut ids = Vec::new();
        for e in std::mem::take(&mut self.running) {
            ids.push(e.id);
            ids.extend(e.followers.iter().copied());
            self.release(&e);
        }
        ids
    }

    /// Moves waiting sequences into the running set, in arrival order, while seats and blocks
    /// last. Samples of one prompt that wait together form a group whose first member
    /// prefills for all. The leading full blocks of a prompt that the prefix cache holds are
    /// referenced, not computed (the last prompt position is always computed: its forward
    /// gives the first logits row); the rest of the prompt gets blocks of its own. Unless
    /// nothing runs, a group is admitted only if [`HEADROOM`] blocks per sequence, its own and
    /// those running, stay available besides, so that what was just admitted is not preempted
    /// a few tokens later.
    pub fn admit(&mut self) {
        let size = self.blocks.size();
        loop {
            let used: usize = self.running.iter().map(Entry::seats).sum();
            if used >= self.seats {
                break;
            }
            let Some((_, prompt)) = self.waiting.front() else {
                break;
            };
            let prompt = prompt.clone();
            let group = self
                .waiting
                .iter()
                .filter(|(_, p)| *p == prompt)
                .count()
                .min(self.seats - used);
            let (mut found, mut keys) = (Vec::new(), Vec::new());
            for i in 0..(prompt.len() - 1) / size {
                let Some((b, key)) = self
                    .blocks
                    .find(keys.last().copied(), &prompt[i * size..(i + 1) * size])
                else {
                    break;
                };
                self.blocks.share(b);
                found.push(b);
                keys.push(key);
            }
            let need = self.blocks.blocks_for(prompt.len()) - found.len();
            let headroom = match used {
                0 => 0,
                _ => HEADROOM * (used + group),
            };
            if self.blocks.available() < need + headroom {
                // Tail first, as a sequence's blocks go back.
                for b in found.into_iter().rev() {
                    self.blocks.release(b);
                }
                break;
            }
            let (id, _) = self.waiting.pop_front().expect("a waiting sequence");
            self.events.prefix_hits += found.len() as u64;
            let mut blocks = found;
            for _ in 0..need {
                blocks.push(self.blocks.take().expect("counted as available"));
            }
            let mut entry = Entry {
                id,
                cached: keys.len() * size,
                prompt,
                fed: Vec::new(),
                blocks,
                keys,
                followers: Vec::new(),
                next: None,
            };
            let mut i = 0;
            while i < self.waiting.len() && entry.seats() < group {
                if self.waiting[i].1 == entry.prompt {
                    let (f, _) = self.waiting.remove(i).expect("index in range");
                    entry.followers.push(f);
                } else {
                    i += 1;
                }
            }
            self.running.push(entry);
        }
    }

    /// The next prompt chunk, of at most `budget` tokens (and the chunk size): the first
    /// running sequence, in admission order, whose prompt is not all in the cache.
    pub fn next_prompt(&self, budget: usize) -> Option<PromptWork> {
        let take = budget.min(self.chunk);
        if take == 0 {
            return None;
        }
        let e = self.running.iter().find(|e| e.prefilling())?;
        let end = (e.cached + take).min(e.prompt.len());
        Some(PromptWork {
            seq: e.id,
            batch: Batch::Prompt {
                blocks: e.blocks.clone(),
                start: e.cached,
                tokens: e.prompt[e.cached..end].to_vec(),
            },
            completes: end == e.prompt.len(),
        })
    }

    /// Registers in the prefix cache every block of `running[i]` that the last forward filled
    /// (none after a block whose key other content holds: its chain would name that content).
    fn register_full(&mut self, i: usize) {
        let size = self.blocks.size();
        let e = &mut self.running[i];
        while e.keys.len() < e.cached / size {
            let n = e.keys.len();
            let tokens = e.tokens(n * size..(n + 1) * size);
            let parent = e.keys.last().copied();
            match self.blocks.register(e.blocks[n], parent, &tokens) {
                Some(key) => e.keys.push(key),
                None => break,
            }
        }
    }

    /// Records that `tokens` more prompt positions of `seq` are in the cache. When that
    /// completes the prompt, the followers become running sequences referencing the same
    /// blocks, and the whole group is returned, leader first: each draws its first token from
    /// the chunk's last row. Otherwise returns nothing.
    pub fn prompt_done(&mut self, seq: SeqId, tokens: usize) -> Vec<SeqId> {
        let Some(i) = self.running.iter().position(|e| e.id == seq) else {
            return Vec::new();
        };
        let e = &mut self.running[i];
        assert!(
            e.cached + tokens <= e.prompt.len(),
            "sequence {seq}: more prompt than prompt"
        );
        e.cached += tokens;
        self.register_full(i);
        let e = &mut self.running[i];
        if e.prefilling() {
            return Vec::new();
        }
        let followers = std::mem::take(&mut e.followers);
        let leader = e.clone();
        let mut group = vec![seq];
        for id in followers {
            for &b in &leader.blocks {
                self.blocks.share(b);
            }
            group.push(id);
            self.running.push(Entry {
                id,
                ..leader.clone()
            });
        }
        group
    }

    /// Records the token `seq` drew: it feeds it in the next decode step.
    pub fn drawn(&mut self, seq: SeqId, token: u32) {
        let e = self
            .running
            .iter_mut()
            .find(|e| e.id == seq && !e.prefilling())
            .unwrap_or_else(|| panic!("sequence {seq} is not decoding"));
        assert!(e.next.is_none(), "sequence {seq} drew twice");
        e.next = Some(token);
    }

    /// Gives every sequence about to decode the block its next position goes to: a new one
    /// when the position starts a block, its own copy when the block is shared. When none is
    /// left, the most recently admitted sequence is preempted (possibly the one asking).
    pub fn prepare_decode(&mut self) -> DecodePrep {
        let size = self.blocks.size();
        let mut prep = DecodePrep::default();
        let mut i = 0;
        while i < self.running.len() {
            let e = &self.running[i];
            let at = e.cached / size;
            let shared = match e.blocks.get(at) {
                _ if e.next.is_none() => {
                    i += 1;
                    continue;
                }
                None => None,
                Some(&b) if self.blocks.refs(b) > 1 => Some(b),
                Some(_) => {
                    i += 1;
                    continue;
                }
            };
            let Some(new) = self.blocks.take() else {
                let victim = self.running.len() - 1;
                self.preempt(victim, &mut prep.preempted);
                continue;
            };
            let e = &mut self.running[i];
            match shared {
                Some(old) => {
                    prep.copies.push(BlockCopy {
                        from: old,
                        to: new,
                        rows: e.cached % size,
                    });
                    e.blocks[at] = new;
                    self.blocks.release(old);
                }
                None => e.blocks.push(new),
            }
            i += 1;
        }
        prep
    }

    /// Sends `running[i]` (and its followers) back to the front of the queue with what it
    /// must prefill again, and releases its blocks.
    fn preempt(&mut self, i: usize, preempted: &mut Vec<SeqId>) {
        let e = self.running.remove(i);
        self.release(&e);
        self.events.preemptions += e.seats() as u64;
        if e.prefilling() {
            // Nothing drawn yet: the group queues again as it arrived.
            for &f in e.followers.iter().rev() {
                self.waiting.push_front((f, e.prompt.clone()));
            }
            self.waiting.push_front((e.id, e.prompt.clone()));
        } else {
            self.waiting.push_front((e.id, e.context()));
        }
        preempted.push(e.id);
        preempted.extend(e.followers.iter().copied());
    }

    /// The decode step: one row for every running sequence with a drawn token, in admission
    /// order, at its next position. Empty when there is none. Run [`Batcher::prepare_decode`]
    /// first: every row's position must have its block.
    pub fn next_decode(&self) -> (Vec<SeqId>, Batch) {
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        for e in &self.running {
            if let Some(token) = e.next {
                ids.push(e.id);
                rows.push(DecodeRow {
                    blocks: e.blocks.clone(),
                    position: e.cached,
                    token,
                });
            }
        }
        (ids, Batch::Decode { rows })
    }

    /// Records that the decode step ran for `ids`: each fed token is now in the cache.
    pub fn decoded(&mut self, ids: &[SeqId]) {
        let ids: std::collections::HashSet<SeqId> = ids.iter().copied().collect();
        for i in 0..self.running.len() {
            let e = &mut self.running[i];
            if !ids.contains(&e.id) {
                continue;
            }
            let token = e.next.take();
            let token = token.unwrap_or_else(|| panic!("sequence {} fed nothing", e.id));
            e.fed.push(token);
            e.cached += 1;
            self.register_full(i);
        }
    }
}

#[cfg(test)]
mod capacity;

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(tokens: &[u32]) -> Arc<[u32]> {
        tokens.into()
    }

    /// A batcher of `seats` seats, chunks of `chunk`, `limit` blocks of 4 positions.
    fn batcher(seats: usize, chunk: usize, limit: usize) -> Batcher {
        Batcher::new(seats, chunk, Blocks::new(4, limit, true))
    }

    fn prompt_of(work: &PromptWork) -> (Vec<BlockId>, usize, Vec<u32>) {
        match &work.batch {
            Batch::Prompt {
                blocks,
                start,
                tokens,
            } => (blocks.clone(), *start, tokens.clone()),
            other => panic!("not a prompt chunk: {other:?}"),
        }
    }

    /// The decode step's rows after preparing it: (id, block table, position, token).
    fn decode_rows(b: &mut Batcher) -> Vec<(SeqId, Vec<BlockId>, usize, u32)> {
        let prep = b.prepare_decode();
        assert!(prep.preempted.is_empty(), "{prep:?}");
        let (ids, batch) = b.next_decode();
        let Batch::Decode { rows } = batch else {
            panic!("not a decode step")
        };
        ids.iter()
            .zip(rows)
            .map(|(&id, r)| (id, r.blocks, r.position, r.token))
            .collect()
    }

    /// Runs every prompt chunk the batcher plans (budget unbounded) and returns each group
    /// completed, drawing `token` for each member.
    fn prefill_all(b: &mut Batcher, token: u32) -> Vec<Vec<SeqId>> {
        let mut groups = Vec::new();
        while let Some(w) = b.next_prompt(usize::MAX) {
            let (_, _, tokens) = prompt_of(&w);
            let group = b.prompt_done(w.seq, tokens.len());
            assert_eq!(w.completes, !group.is_empty());
            for &id in &group {
                b.drawn(id, token);
            }
            if !group.is_empty() {
                groups.push(group);
            }
        }
        groups
    }

    /// Decodes every sequence that has a drawn token, drawing `token` again for each.
    fn decode_once(b: &mut Batcher, token: u32) -> DecodePrep {
        let prep = b.prepare_decode();
        let (ids, _) = b.next_decode();
        b.decoded(&ids);
        for id in ids {
            b.drawn(id, token);
        }
        prep
    }

    #[test]
    fn a_group_stores_its_prompt_once_and_copies_the_partial_block_on_write() {
        let mut b = batcher(8, 512, 16);
        for id in 0..3 {
            b.push(id, prompt(&[5, 6, 7, 8, 9]));
        }
        b.admit();
        let w = b.next_prompt(512).unwrap();
        assert_eq!(prompt_of(&w), (vec![0, 1], 0, vec![5, 6, 7, 8, 9]));
        assert_eq!(b.prompt_done(0, 5), vec![0, 1, 2]);
        // The prompt's two blocks, stored once, referenced by all three.
        let counts = b.counts();
        assert_eq!((counts.used, counts.shared), (2, 2));
        for id in 0..3 {
            assert_eq!(b.table(id), Some(vec![0, 1]));
            b.drawn(id, 7);
        }
        // Position 5 is in block 1, which all three share: the first two writers copy its
        // one filled position; the last writes in place. Block 0 stays shared.
        let prep = b.prepare_decode();
        assert_eq!(
            prep.copies,
            vec![
                BlockCopy {
                    from: 1,
                    to: 2,
                    rows: 1
                },
                BlockCopy {
                    from: 1,
                    to: 3,
                    rows: 1
                }
            ]
        );
        assert_eq!(
            decode_rows(&mut b),
            vec![
                (0, vec![0, 2], 5, 7),
                (1, vec![0, 3], 5, 7),
                (2, vec![0, 1], 5, 7)
            ]
        );
        b.decoded(&[0, 1, 2]);
        assert_eq!(b.cached(2), Some(6));
        assert_eq!((b.counts().used, b.counts().shared), (4, 1));
        assert!(decode_rows(&mut b).is_empty());
    }

    #[test]
    fn a_prompt_filling_whole_blocks_gives_each_sample_a_new_block_and_copies_nothing() {
        let mut b = batcher(4, 16, 16);
        for id in 0..2 {
            b.push(id, prompt(&[1, 2, 3, 4]));
        }
        b.admit();
        prefill_all(&mut b, 9);
        let prep = b.prepare_decode();
        assert!(prep.copies.is_empty());
        assert_eq!(b.table(0), Some(vec![0, 1]));
        assert_eq!(b.table(1), Some(vec![0, 2]));
    }

    #[test]
    fn prompts_run_in_chunks_within_the_budget() {
        let mut b = batcher(4, 4, 16);
        let p: Vec<u32> = (0..10).collect();
        b.push(0, prompt(&p));
        b.push(1, prompt(&p));
        b.admit();
        let mut starts = Vec::new();
        loop {
            let w = b.next_prompt(usize::MAX).unwrap();
            let (blocks, start, tokens) = prompt_of(&w);
            assert_eq!(blocks, vec![0, 1, 2]);
            assert_eq!(tokens, p[start..start + tokens.len()]);
            starts.push((start, tokens.len()));
            if !b.prompt_done(0, tokens.len()).is_empty() {
                break;
            }
        }
        assert_eq!(starts, vec![(0, 4), (4, 4), (8, 2)]);
        // A budget smaller than the chunk bounds the chunk; none, no chunk.
        let mut b = batcher(1, 4, 16);
        b.push(0, prompt(&p));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(3).unwrap()).2, vec![0, 1, 2]);
        assert!(b.next_prompt(0).is_none());
    }

    #[test]
    fn fewer_seats_than_sequences_queue_and_reuse_freed_blocks() {
        let mut b = batcher(2, 16, 16);
        for id in 0..3 {
            b.push(id, prompt(&[id as u32, 9]));
        }
        b.admit();
        assert_eq!(prefill_all(&mut b, 1), vec![vec![0], vec![1]]);
        assert_eq!(b.ids(), vec![2, 0, 1]);
        // Sequence 0 finishes: its seat and its block go to the waiting one.
        assert!(b.remove(0));
        b.admit();
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (vec![0], 0, vec![2, 9]));
        assert_eq!(w.seq, 2);
    }

    #[test]
    fn a_group_larger_than_the_seats_splits_and_the_rest_reuses_the_prompt_s_full_blocks() {
        let mut b = batcher(2, 16, 16);
        let p: Vec<u32> = (10..19).collect();
        for id in 0..3 {
            b.push(id, prompt(&p));
        }
        b.admit();
        assert_eq!(prefill_all(&mut b, 1), vec![vec![0, 1]]);
        b.remove(1);
        // Sequence 2 finds positions 0..8 (two full blocks) in the prefix cache and computes
        // only position 8, in a block of its own.
        b.admit();
        assert_eq!(b.events().prefix_hits, 2);
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (vec![0, 1, 3], 8, vec![18]));
        assert_eq!(b.prompt_done(2, 1), vec![2]);
        assert_eq!(b.blocks().refs(0), 2);
    }

    #[test]
    fn a_finished_prompt_stays_cached_until_flushed() {
        let mut b = batcher(2, 16, 16);
        let p: Vec<u32> = (0..9).collect();
        b.push(0, prompt(&p));
        b.admit();
        prefill_all(&mut b, 1);
        b.remove(0);
        assert_eq!(b.counts().used, 0);
        assert_eq!(b.counts().cached, 2);
        assert!(!b.release_memory(), "cached blocks are kept");
        // The next epoch's request for the same prompt reuses both full blocks.
        b.push(1, prompt(&p));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(16).unwrap()).1, 8);
        prefill_all(&mut b, 1);
        b.remove(1);
        // A prompt that differs in its second block reuses only the first.
        let mut other = p.clone();
        other[5] = 99;
        b.push(2, prompt(&other));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(16).unwrap()).1, 4);
        prefill_all(&mut b, 1);
        b.remove(2);
        // Its own second block took the memory of the least recently used cached one (the
        // first prompt's second block) before the cache grew.
        assert_eq!(b.counts().allocated, 3);
        assert!(b.blocks().find(None, &p[..4]).is_some());
        assert_eq!(b.flush(), 2);
        b.push(3, prompt(&p));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(16).unwrap()).1, 0, "flushed");
        assert_eq!(b.events().prefix_hits, 3);
    }

    #[test]
    fn a_one_token_prompt_is_always_computed() {
        let mut b = batcher(2, 16, 16);
        b.push(0, prompt(&[8]));
        b.admit();
        prefill_all(&mut b, 1);
        b.push(1, prompt(&[8]));
        b.admit();
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (vec![1], 0, vec![8]));
    }

    #[test]
    fn a_prompt_being_prefilled_lends_the_blocks_its_chunks_completed() {
        let mut b = batcher(3, 4, 16);
        let p: Vec<u32> = (0..10).collect();
        b.push(0, prompt(&p));
        b.admit();
        let w = b.next_prompt(4).unwrap();
        b.prompt_done(w.seq, 4);
        b.push(1, prompt(&p));
        b.admit();
        assert_eq!(b.cached(1), Some(4));
        assert_eq!(b.table(1), Some(vec![0, 3, 4]));
    }

    #[test]
    fn a_leader_leaving_during_prefill_hands_it_and_its_blocks_to_a_follower() {
        let mut b = batcher(4, 2, 16);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2, 3, 4, 5]));
        }
        b.admit();
        let w = b.next_prompt(2).unwrap();
        b.prompt_done(w.seq, 2);
        assert!(b.remove(0));
        // Sequence 1 goes on from position 2 in the same blocks.
        let w = b.next_prompt(2).unwrap();
        assert_eq!(w.seq, 1);
        assert_eq!(prompt_of(&w), (vec![0, 1], 2, vec![3, 4]));
        b.prompt_done(1, 2);
        let w = b.next_prompt(2).unwrap();
        assert_eq!(b.prompt_done(w.seq, 1), vec![1, 2]);
        assert_eq!(b.counts().used, 2);
    }

    #[test]
    fn followers_leaving_free_their_seats() {
        let mut b = batcher(3, 8, 16);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2]));
        }
        b.admit();
        assert!(b.remove(2));
        assert!(b.remove(1));
        assert_eq!(prefill_all(&mut b, 1), vec![vec![0]]);
        assert_eq!(b.counts().shared, 0);
        b.push(5, prompt(&[3]));
        b.push(6, prompt(&[4]));
        b.admit();
        assert_eq!(b.ids(), vec![0, 5, 6]);
    }

    #[test]
    fn a_leader_leaving_during_decode_leaves_its_group_running() {
        let mut b = batcher(3, 8, 16);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2]));
        }
        b.admit();
        prefill_all(&mut b, 4);
        assert!(b.remove(0));
        assert_eq!(
            b.blocks().refs(0),
            2,
            "the followers still reference the prompt"
        );
        let rows = decode_rows(&mut b);
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!b.remove(0), "removed twice");
    }

    #[test]
    fn waiting_sequences_can_leave_and_failures_free_every_block() {
        let mut b = batcher(1, 8, 16);
        b.push(0, prompt(&[1]));
        b.push(1, prompt(&[2]));
        b.push(2, prompt(&[3]));
        b.admit();
        assert!(b.remove(1));
        assert_eq!(b.clear_running(), vec![0]);
        assert_eq!(b.counts().used, 0);
        b.flush();
        b.admit();
        assert_eq!(b.next_prompt(8).unwrap().seq, 2);
        assert!(!b.is_idle());
        b.clear_running();
        assert!(b.is_idle());
        assert!(b.release_memory());
        assert_eq!(b.counts().allocated, 0);
    }

    #[test]
    fn decode_takes_a_new_block_at_each_block_boundary() {
        let mut b = batcher(2, 8, 16);
        b.push(0, prompt(&[1, 2, 3]));
        b.admit();
        prefill_all(&mut b, 5);
        assert_eq!(decode_rows(&mut b), vec![(0, vec![0], 3, 5)]);
        decode_once(&mut b, 5);
        assert_eq!(decode_rows(&mut b), vec![(0, vec![0, 1], 4, 5)]);
        // A later sequence joins between steps with its own blocks and position.
        b.push(1, prompt(&[4]));
        b.admit();
        prefill_all(&mut b, 6);
        assert_eq!(
            decode_rows(&mut b),
            vec![(0, vec![0, 1], 4, 5), (1, vec![2], 1, 6)]
        );
    }

    #[test]
    fn admission_waits_for_blocks_in_arrival_order() {
        // Twelve blocks: a 9-token prompt alone takes three; the next needs one and four of
        // headroom for each of the two running, the third four more.
        let mut b = batcher(8, 16, 12);
        b.push(0, prompt(&(0..9).collect::<Vec<u32>>()));
        b.push(1, prompt(&[1]));
        b.push(2, prompt(&[2]));
        b.push(3, prompt(&[3]));
        b.admit();
        assert_eq!(b.ids(), vec![2, 3, 0, 1], "2 and 3 wait, in order");
        prefill_all(&mut b, 3);
        b.remove(0);
        b.flush();
        b.admit();
        assert_eq!(b.ids(), vec![3, 1, 2]);
        // A sequence alone is admitted whatever the headroom: it has the whole cache.
        let mut b = batcher(8, 16, 3);
        b.push(0, prompt(&(0..12).collect::<Vec<u32>>()));
        b.admit();
        assert_eq!(b.table(0), Some(vec![0, 1, 2]));
    }

    #[test]
    fn without_blocks_the_newest_sequence_is_preempted_and_resumes_with_what_it_drew() {
        // Twelve blocks of 4: two sequences of 3-token prompts take one each, then grow.
        let mut b = batcher(4, 16, 12);
        b.push(0, prompt(&[1, 2, 3]));
        b.admit();
        b.push(1, prompt(&[4, 5, 6]));
        b.admit();
        assert_eq!(b.ids(), vec![0, 1]);
        prefill_all(&mut b, 7);
        // Each takes a block at positions 4, 8, ..., 20: the ten left are gone at 24.
        for step in 0..21 {
            assert!(decode_once(&mut b, 8 + step).preempted.is_empty(), "{step}");
        }
        assert_eq!(b.cached(1), Some(24));
        let prep = decode_once(&mut b, 99);
        assert_eq!(prep.preempted, vec![1]);
        assert_eq!(b.events().preemptions, 1);
        assert_eq!(b.table(0).map(|t| t.len()), Some(7));
        // Sequence 1 waits first in line with its prompt, every token it fed and the one it
        // drew; its six full blocks stayed cached, and sequence 0's new block took the last
        // of them (a sequence's tail is evicted first).
        let mut context = vec![4, 5, 6, 7];
        context.extend(8..29);
        assert_eq!(
            b.waiting.front().map(|(id, p)| (*id, p.to_vec())),
            Some((1, context.clone()))
        );
        assert_eq!(b.counts().used, 7);
        b.remove(0);
        b.admit();
        let w = b.next_prompt(64).unwrap();
        assert_eq!((w.seq, prompt_of(&w).1), (1, 20), "five blocks reused");
        assert_eq!(prompt_of(&w).2, context[20..]);
        assert_eq!(b.events().prefix_hits, 5);
        assert_eq!(b.prompt_done(1, 5), vec![1]);
    }

    #[test]
    fn a_resumed_sequence_reuses_the_full_blocks_the_prefix_cache_kept() {
        let mut b = batcher(4, 16, 16);
        b.push(0, prompt(&[1, 2, 3, 4, 5]));
        b.admit();
        prefill_all(&mut b, 6);
        for t in 7..10 {
            decode_once(&mut b, t);
        }
        // Preempted by hand (as prepare_decode would): positions 0..8 are two full blocks.
        let mut preempted = Vec::new();
        b.preempt(0, &mut preempted);
        assert_eq!(b.counts().cached, 2);
        b.admit();
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w).1, 8);
        assert_eq!(prompt_of(&w).2, vec![9]);
        assert_eq!(b.events().prefix_hits, 2);
    }

    #[test]
    fn a_preempted_group_still_prefilling_queues_again_whole() {
        // Fourteen blocks: sequence 0 takes one, the group one and twelve of headroom.
        let mut b = batcher(8, 2, 14);
        b.push(0, prompt(&[1, 2, 3]));
        b.admit();
        prefill_all(&mut b, 7);
        for id in 1..3 {
            b.push(id, prompt(&[9, 9, 9]));
        }
        b.admit();
        assert_eq!(b.ids(), vec![0, 1, 2]);
        // Sequence 0 takes the twelve at positions 4, 8, ..., 48, then needs one at 52: the
        // group, admitted last, is preempted before its prefill ran.
        for step in 0..49 {
            assert!(decode_once(&mut b, 8).preempted.is_empty(), "{step}");
        }
        let prep = decode_once(&mut b, 8);
        assert_eq!(prep.preempted, vec![1, 2]);
        assert_eq!(b.events().preemptions, 2);
        assert_eq!(b.ids(), vec![1, 2, 0]);
        assert!(b.waiting.iter().all(|(_, p)| **p == [9, 9, 9]));
        assert_eq!(b.table(0).map(|t| t.len()), Some(14));
    }
}
