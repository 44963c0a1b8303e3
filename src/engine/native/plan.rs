//! The native engine's bookkeeping, apart from any tensor: which sequences wait, which hold a
//! cache slot, how much of each prompt is in the cache, which samples of one prompt share a
//! prefill, and what the next forward passes are.
//!
//! [`Batcher`] is a pure state machine (no model, no channels, no clock), so every rule of the
//! loop is unit-tested here; [`super::scheduler`] runs the forwards it plans. Each forward it
//! hands out states what it is ([`Batch::Prompt`] or [`Batch::Decode`]); the model never infers
//! it from the batch's shape.

use std::collections::VecDeque;
use std::sync::Arc;

use super::batch::{Batch, DecodeRow};

/// A sequence's handle, given by the scheduler.
pub type SeqId = u64;

/// Rows to copy in the cache before the next forward: positions `0..rows` of slot `from` into
/// slot `to` (a sequence whose prompt a running sequence already holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCopy {
    /// Slot holding the prompt.
    pub from: usize,
    /// Slot of the new sequence.
    pub to: usize,
    /// Positions copied.
    pub rows: usize,
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

/// A sequence holding a cache slot.
#[derive(Debug, Clone)]
struct Entry {
    id: SeqId,
    prompt: Arc<[u32]>,
    slot: usize,
    /// Positions of this slot in the cache (prompt first, then fed-back tokens).
    cached: usize,
    /// Samples of the same prompt that hold slots and receive copies of every prompt chunk
    /// this sequence runs; they become entries of their own when the prompt is complete.
    followers: Vec<(SeqId, usize)>,
    /// The drawn token this sequence feeds at position `cached` in the next decode step.
    next: Option<u32>,
}

impl Entry {
    fn prefilling(&self) -> bool {
        self.cached < self.prompt.len()
    }
}

/// The loop's sequences and cache slots.
#[derive(Debug)]
pub struct Batcher {
    /// Prompt tokens per forward (and per loop iteration).
    chunk: usize,
    /// Free slots; the lowest is taken first.
    free: Vec<usize>,
    waiting: VecDeque<(SeqId, Arc<[u32]>)>,
    /// In admission order.
    running: Vec<Entry>,
}

impl Batcher {
    /// `slots` cache slots, prompts run in chunks of at most `chunk` tokens.
    pub fn new(slots: usize, chunk: usize) -> Self {
        assert!(
            slots > 0 && chunk > 0,
            "a batcher needs a slot and a chunk size"
        );
        Self {
            chunk,
            free: (0..slots).rev().collect(),
            waiting: VecDeque::new(),
            running: Vec::new(),
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

    /// Every sequence held, waiting or running (followers included).
    #[cfg(test)]
    fn ids(&self) -> Vec<SeqId> {
        let mut ids: Vec<SeqId> = self.waiting.iter().map(|(id, _)| *id).collect();
        for e in &self.running {
            ids.push(e.id);
            ids.extend(e.followers.iter().map(|(id, _)| *id));
        }
        ids
    }

    /// Positions in the cache of a running sequence (a follower's count as its leader's).
    #[cfg(test)]
    fn cached(&self, id: SeqId) -> Option<usize> {
        self.running
            .iter()
            .find(|e| e.id == id || e.followers.iter().any(|(f, _)| *f == id))
            .map(|e| e.cached)
    }

    /// Forgets `id` wherever it is and frees its slot. A leader that leaves while its prompt
    /// is prefilled hands the prefill to its first follower, whose slot holds every chunk so
    /// far. False if `id` is unknown.
    pub fn remove(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|(w, _)| *w == id) {
            self.waiting.remove(i);
            return true;
        }
        for i in 0..self.running.len() {
            let e = &mut self.running[i];
            if let Some(f) = e.followers.iter().position(|(f, _)| *f == id) {
                let (_, slot) = e.followers.remove(f);
                self.free.push(slot);
                return true;
            }
            if e.id != id {
                continue;
            }
            self.free.push(e.slot);
            if e.followers.is_empty() {
                self.running.remove(i);
            } else {
                let (heir, slot) = e.followers.remove(0);
                (e.id, e.slot) = (heir, slot);
            }
            return true;
        }
        false
    }

    /// Forgets every running sequence and frees its slot (after a failed forward); returns
    /// them, followers included. Waiting sequences stay.
    pub fn clear_running(&mut self) -> Vec<SeqId> {
        let mut ids = Vec::new();
        for e in std::mem::take(&mut self.running) {
            ids.push(e.id);
            self.free.push(e.slot);
            for (f, slot) in e.followers {
                ids.push(f);
                self.free.push(slot);
            }
        }
        ids
    }

    /// Moves waiting sequences into free slots, in arrival order. Samples of one prompt that
    /// wait together form a group whose first member prefills for all. A sequence whose prompt
    /// a running sequence already holds gets a copy of that cache, all but the last position,
    /// which it computes (the forward of that position gives its first logits row). Returns
    /// the copies to make before the next forward.
    pub fn admit(&mut self) -> Vec<CacheCopy> {
        let mut copies = Vec::new();
        while let Some(&slot) = self.free.last() {
            let Some((id, prompt)) = self.waiting.pop_front() else {
                break;
            };
            self.free.pop();
            let holder = self
                .running
                .iter()
                .find(|e| !e.prefilling() && e.prompt == prompt)
                .map(|e| e.slot);
            let mut entry = Entry {
                id,
                prompt,
                slot,
                cached: 0,
                followers: Vec::new(),
                next: None,
            };
            if let Some(from) = holder {
                let rows = entry.prompt.len() - 1;
                if rows > 0 {
                    copies.push(CacheCopy {
                        from,
                        to: slot,
                        rows,
                    });
                }
                entry.cached = rows;
            } else {
                let mut i = 0;
                while i < self.waiting.len() && !self.free.is_empty() {
                    if self.waiting[i].1 == entry.prompt {
                        let (f, _) = self.waiting.remove(i).expect("index in range");
                        entry
                            .followers
                            .push((f, self.free.pop().expect("a free slot")));
                    } else {
                        i += 1;
                    }
                }
            }
            self.running.push(entry);
        }
        copies
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
                slot: e.slot,
                start: e.cached,
                tokens: e.prompt[e.cached..end].to_vec(),
                copies: e.followers.iter().map(|&(_, slot)| slot).collect(),
            },
            completes: end == e.prompt.len(),
        })
    }

    /// Records that `tokens` more prompt positions of `seq` are in the cache (its own and its
    /// followers'). When that completes the prompt, the followers become running sequences
    /// and the whole group is returned, leader first: each draws its first token from the
    /// chunk's last row. Otherwise returns nothing.
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
        if e.prefilling() {
            return Vec::new();
        }
        let (cached, prompt) = (e.cached, e.prompt.clone());
        let followers = std::mem::take(&mut e.followers);
        let mut group = vec![seq];
        for (id, slot) in followers {
            group.push(id);
            self.running.push(Entry {
                id,
                prompt: prompt.clone(),
                slot,
                cached,
                followers: Vec::new(),
                next: None,
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

    /// The decode step: one row for every running sequence with a drawn token, in admission
    /// order, at its next position. Empty when there is none.
    pub fn next_decode(&self) -> (Vec<SeqId>, Batch) {
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        for e in &self.running {
            if let Some(token) = e.next {
                ids.push(e.id);
                rows.push(DecodeRow {
                    slot: e.slot,
                    position: e.cached,
                    token,
                });
            }
        }
        (ids, Batch::Decode { rows })
    }

    /// Records that the decode step ran for `ids`: each fed token is now in the cache.
    pub fn decoded(&mut self, ids: &[SeqId]) {
        for e in self.running.iter_mut().filter(|e| ids.contains(&e.id)) {
            assert!(e.next.take().is_some(), "sequence {} fed nothing", e.id);
            e.cached += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(tokens: &[u32]) -> Arc<[u32]> {
        tokens.into()
    }

    fn prompt_of(work: &PromptWork) -> (usize, usize, Vec<u32>, Vec<usize>) {
        match &work.batch {
            Batch::Prompt {
                slot,
                start,
                tokens,
                copies,
            } => (*slot, *start, tokens.clone(), copies.clone()),
            other => panic!("not a prompt chunk: {other:?}"),
        }
    }

    fn decode_rows(b: &Batcher) -> Vec<(SeqId, usize, usize, u32)> {
        let (ids, batch) = b.next_decode();
        let Batch::Decode { rows } = batch else {
            panic!("not a decode step")
        };
        ids.iter()
            .zip(rows)
            .map(|(&id, r)| (id, r.slot, r.position, r.token))
            .collect()
    }

    /// Runs every prompt chunk the batcher plans (budget unbounded) and returns each group
    /// completed, drawing `token` for each member.
    fn prefill_all(b: &mut Batcher, token: u32) -> Vec<Vec<SeqId>> {
        let mut groups = Vec::new();
        while let Some(w) = b.next_prompt(usize::MAX) {
            let (_, _, tokens, _) = prompt_of(&w);
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

    #[test]
    fn a_group_waiting_together_shares_one_prefill_with_copies_to_every_member() {
        let mut b = Batcher::new(8, 512);
        for id in 0..3 {
            b.push(id, prompt(&[5]));
        }
        assert!(b.admit().is_empty());
        let w = b.next_prompt(512).unwrap();
        // A one-token prompt is a prompt chunk like any other: its row goes to every member.
        assert_eq!(prompt_of(&w), (0, 0, vec![5], vec![1, 2]));
        assert!(w.completes);
        assert_eq!(b.prompt_done(0, 1), vec![0, 1, 2]);
        for id in 0..3 {
            b.drawn(id, 7);
        }
        assert_eq!(
            decode_rows(&b),
            vec![(0, 0, 1, 7), (1, 1, 1, 7), (2, 2, 1, 7)]
        );
        b.decoded(&[0, 1, 2]);
        assert_eq!(b.cached(2), Some(2));
        assert!(decode_rows(&b).is_empty());
    }

    #[test]
    fn prompts_run_in_chunks_within_the_budget() {
        let mut b = Batcher::new(4, 4);
        let p: Vec<u32> = (0..10).collect();
        b.push(0, prompt(&p));
        b.push(1, prompt(&p));
        b.admit();
        let mut starts = Vec::new();
        loop {
            let w = b.next_prompt(usize::MAX).unwrap();
            let (slot, start, tokens, copies) = prompt_of(&w);
            assert_eq!((slot, copies), (0, vec![1]));
            assert_eq!(tokens, p[start..start + tokens.len()]);
            starts.push((start, tokens.len()));
            if !b.prompt_done(0, tokens.len()).is_empty() {
                break;
            }
        }
        assert_eq!(starts, vec![(0, 4), (4, 4), (8, 2)]);
        // A budget smaller than the chunk bounds the chunk; none, no chunk.
        let mut b = Batcher::new(1, 4);
        b.push(0, prompt(&p));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(3).unwrap()).2, vec![0, 1, 2]);
        assert!(b.next_prompt(0).is_none());
    }

    #[test]
    fn fewer_slots_than_sequences_queue_and_reuse_freed_slots() {
        let mut b = Batcher::new(2, 16);
        for id in 0..3 {
            b.push(id, prompt(&[id as u32, 9]));
        }
        b.admit();
        assert_eq!(prefill_all(&mut b, 1), vec![vec![0], vec![1]]);
        assert_eq!(b.ids(), vec![2, 0, 1]);
        // Sequence 0 finishes: its slot goes to the waiting one.
        assert!(b.remove(0));
        b.admit();
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (0, 0, vec![2, 9], vec![]));
        assert_eq!(w.seq, 2);
    }

    #[test]
    fn a_group_larger_than_the_free_slots_splits_and_the_rest_copies_the_prompt() {
        let mut b = Batcher::new(2, 16);
        for id in 0..3 {
            b.push(id, prompt(&[3, 4, 5]));
        }
        b.admit();
        assert_eq!(prefill_all(&mut b, 1), vec![vec![0, 1]]);
        b.remove(1);
        // Sequence 2 finds sequence 0 holding its prompt: two rows copied, one computed.
        assert_eq!(
            b.admit(),
            vec![CacheCopy {
                from: 0,
                to: 1,
                rows: 2
            }]
        );
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (1, 2, vec![5], vec![]));
        assert_eq!(b.prompt_done(2, 1), vec![2]);
    }

    #[test]
    fn a_one_token_prompt_held_by_a_running_sequence_copies_nothing() {
        let mut b = Batcher::new(2, 16);
        b.push(0, prompt(&[8]));
        b.admit();
        prefill_all(&mut b, 1);
        b.push(1, prompt(&[8]));
        assert!(b.admit().is_empty());
        let w = b.next_prompt(16).unwrap();
        assert_eq!(prompt_of(&w), (1, 0, vec![8], vec![]));
    }

    #[test]
    fn a_prompt_still_being_prefilled_is_not_copied() {
        let mut b = Batcher::new(3, 2);
        b.push(0, prompt(&[1, 2, 3, 4]));
        b.admit();
        let w = b.next_prompt(2).unwrap();
        b.prompt_done(w.seq, 2);
        b.push(1, prompt(&[1, 2, 3, 4]));
        assert!(b.admit().is_empty());
        assert_eq!(b.cached(1), Some(0));
    }

    #[test]
    fn a_leader_leaving_during_prefill_hands_it_to_a_follower() {
        let mut b = Batcher::new(4, 2);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2, 3, 4, 5]));
        }
        b.admit();
        let w = b.next_prompt(2).unwrap();
        b.prompt_done(w.seq, 2);
        assert!(b.remove(0));
        // Sequence 1 (slot 1, which received every chunk) goes on from position 2.
        let w = b.next_prompt(2).unwrap();
        assert_eq!(w.seq, 1);
        assert_eq!(prompt_of(&w), (1, 2, vec![3, 4], vec![2]));
        b.prompt_done(1, 2);
        let w = b.next_prompt(2).unwrap();
        assert_eq!(b.prompt_done(w.seq, 1), vec![1, 2]);
        // Slot 0 is free again, for the next sequence.
        b.push(9, prompt(&[7]));
        b.admit();
        assert_eq!(prompt_of(&b.next_prompt(2).unwrap()).0, 0);
    }

    #[test]
    fn followers_leaving_free_their_slots_and_receive_no_copies() {
        let mut b = Batcher::new(3, 8);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2]));
        }
        b.admit();
        assert!(b.remove(2));
        assert_eq!(prompt_of(&b.next_prompt(8).unwrap()).3, vec![1]);
        assert!(b.remove(1));
        assert_eq!(prompt_of(&b.next_prompt(8).unwrap()).3, Vec::<usize>::new());
        assert_eq!(b.free.len(), 2);
    }

    #[test]
    fn a_leader_leaving_during_decode_leaves_its_group_running() {
        let mut b = Batcher::new(3, 8);
        for id in 0..3 {
            b.push(id, prompt(&[1, 2]));
        }
        b.admit();
        prefill_all(&mut b, 4);
        assert!(b.remove(0));
        assert_eq!(decode_rows(&b), vec![(1, 1, 2, 4), (2, 2, 2, 4)]);
        assert!(!b.remove(0), "removed twice");
    }

    #[test]
    fn waiting_sequences_can_leave_and_failures_free_every_slot() {
        let mut b = Batcher::new(1, 8);
        b.push(0, prompt(&[1]));
        b.push(1, prompt(&[2]));
        b.push(2, prompt(&[3]));
        b.admit();
        assert!(b.remove(1));
        assert_eq!(b.clear_running(), vec![0]);
        b.admit();
        assert_eq!(b.next_prompt(8).unwrap().seq, 2);
        assert!(!b.is_idle());
        b.clear_running();
        assert!(b.is_idle());
    }

    #[test]
    fn decode_positions_follow_the_cache() {
        let mut b = Batcher::new(2, 8);
        b.push(0, prompt(&[1, 2, 3]));
        b.admit();
        prefill_all(&mut b, 5);
        for step in 0..3 {
            assert_eq!(decode_rows(&b), vec![(0, 0, 3 + step, 5)]);
            b.decoded(&[0]);
            b.drawn(0, 5);
        }
        // A later sequence joins between steps with its own position.
        b.push(1, prompt(&[4]));
        b.admit();
        prefill_all(&mut b, 6);
        assert_eq!(decode_rows(&b), vec![(0, 0, 6, 5), (1, 1, 1, 6)]);
    }
}
