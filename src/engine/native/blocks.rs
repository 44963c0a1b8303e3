//! The KV cache's blocks as bookkeeping, apart from any tensor: which blocks hold keys and
//! values, how many sequences reference each, and which full blocks a later sequence with the
//! same tokens may reuse (the prefix cache).
//!
//! A sequence's cache is a block table: block `i` holds its positions `i·size..(i+1)·size`.
//! Samples of one prompt reference the same blocks (a block's reference count); a block
//! referenced more than once is copied before it is written (see [`super::plan`]). A block
//! every position of which was computed is registered under a key derived from its tokens and
//! every token before it; when its last reference goes it stays cached (with `retain`) until a
//! block is needed and none is free (least recently used first out, before the tensors grow) or
//! the cache is flushed. So the prefix cache lives in the memory the sequences needed anyway.
//! [`super::kv`] holds the tensors; block `b` is the same block there.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasher;

/// A block's index in the cache.
pub type BlockId = u32;

/// The key of a full block: a hash of its tokens and of its parent's key (so of every token
/// before it), keyed per cache (a client cannot search for collisions offline). A match is
/// confirmed against the block's stored tokens and parent key, and a block whose key another
/// block's content holds is not registered, so a key names one content.
pub type BlockKey = u64;

/// The key that stands for "no block before this one".
const ROOT: BlockKey = 0x656e_7472_6f6c_6c00;

/// What a cached block was computed from.
#[derive(Debug, Clone)]
struct Cached {
    key: BlockKey,
    parent: BlockKey,
    tokens: Box<[u32]>,
}

/// Counts of the cache's blocks, for `/info` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// Most blocks the cache may hold.
    pub limit: usize,
    /// Blocks ever handed out (the tensors hold at least this many).
    pub allocated: usize,
    /// Blocks referenced by a sequence.
    pub used: usize,
    /// Blocks referenced by more than one sequence.
    pub shared: usize,
    /// Blocks registered in the prefix cache (used or not).
    pub cached: usize,
}

/// The blocks of the cache.
#[derive(Debug)]
pub struct Blocks {
    size: usize,
    limit: usize,
    /// Whether unreferenced registered blocks stay cached (the prefix cache across requests);
    /// otherwise a block is found only while a sequence references it.
    retain: bool,
    /// References of every block handed out so far (its length is the high-water mark).
    refs: Vec<u32>,
    /// Unreferenced blocks holding nothing reusable, the lowest first.
    free: BinaryHeap<Reverse<BlockId>>,
    /// What each block was computed from, while it is registered.
    content: HashMap<BlockId, Cached>,
    /// Registered blocks by key.
    by_key: HashMap<BlockKey, BlockId>,
    /// Unreferenced registered blocks by last use (the first is evicted first).
    idle: BTreeMap<u64, BlockId>,
    /// Each idle block's entry in `idle`.
    idle_at: HashMap<BlockId, u64>,
    clock: u64,
    /// The hash of block keys.
    hasher: RandomState,
}

impl Blocks {
    /// An empty cache of at most `limit` blocks of `size` positions; `retain` keeps the full
    /// blocks no sequence references any more for later ones.
    pub fn new(size: usize, limit: usize, retain: bool) -> Self {
        assert!(
            size > 0 && limit > 0,
            "a cache needs a block and a block size"
        );
        Self {
            size,
            limit,
            retain,
            refs: Vec::new(),
            free: BinaryHeap::new(),
            content: HashMap::new(),
            by_key: HashMap::new(),
            idle: BTreeMap::new(),
            idle_at: HashMap::new(),
            clock: 0,
            hasher: RandomState::new(),
        }
    }

    /// Positions per block.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Blocks needed for `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.size)
    }

    /// Blocks that [`Blocks::take`] can still hand out (free, never used, or cached and idle).
    pub fn available(&self) -> usize {
        self.free.len() + (self.limit - self.refs.len()) + self.idle.len()
    }

    /// Blocks ever handed out: the cache's tensors must hold this many.
    pub fn allocated(&self) -> usize {
        self.refs.len()
    }

    /// References to `block`.
    pub fn refs(&self, block: BlockId) -> u32 {
        self.refs[block as usize]
    }

    /// A block with one reference: a free one (the lowest), else the least recently used
    /// cached one (forgotten by the prefix cache), else a new one (the tensors grow). None when
    /// every block is referenced.
    pub fn take(&mut self) -> Option<BlockId> {
        let block = if let Some(Reverse(b)) = self.free.pop() {
            b
        } else if let Some((&stamp, &b)) = self.idle.iter().next() {
            self.idle.remove(&stamp);
            self.idle_at.remove(&b);
            self.forget(b);
            b
        } else if self.refs.len() < self.limit {
            self.refs.push(0);
            (self.refs.len() - 1) as BlockId
        } else {
            return None;
        };
        debug_assert_eq!(self.refs[block as usize], 0);
        self.refs[block as usize] = 1;
        Some(block)
    }

    /// One more reference to `block` (a cached block stops being evictable).
    pub fn share(&mut self, block: BlockId) {
        if self.refs[block as usize] == 0 {
            if let Some(stamp) = self.idle_at.remove(&block) {
                self.idle.remove(&stamp);
            }
        }
        self.refs[block as usize] += 1;
    }

    /// One reference fewer to `block`: at none it is cached (if registered) or free.
    pub fn release(&mut self, block: BlockId) {
        let refs = &mut self.refs[block as usize];
        assert!(*refs > 0, "block {block} released more often than taken");
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        if !self.retain {
            self.forget(block);
        }
        if self.content.contains_key(&block) {
            self.clock += 1;
            self.idle.insert(self.clock, block);
            self.idle_at.insert(block, self.clock);
        } else {
            self.free_block(block);
        }
    }

    /// Returns `block` to the free list (the lowest is taken first, so memory stays at the
    /// front of the tensors).
    fn free_block(&mut self, block: BlockId) {
        self.free.push(Reverse(block));
    }

    /// The key of a block of `tokens` after the block keyed `parent` (None for the first).
    fn key(&self, parent: Option<BlockKey>, tokens: &[u32]) -> BlockKey {
        self.hasher.hash_one((parent.unwrap_or(ROOT), tokens))
    }

    /// The registered block computed from `tokens` after the block keyed `parent`, if any.
    pub fn find(&self, parent: Option<BlockKey>, tokens: &[u32]) -> Option<(BlockId, BlockKey)> {
        let key = self.key(parent, tokens);
        let &block = self.by_key.get(&key)?;
        let c = &self.content[&block];
        (c.parent == parent.unwrap_or(ROOT) && *c.tokens == *tokens).then_some((block, key))
    }

    /// Registers `block` as computed from `tokens` (a whole block) after the block keyed
    /// `parent`; returns its key. A block already registered under that key for the same
    /// content (another sequence computed the same tokens) stays the one found; None when the
    /// key belongs to other content (a collision): the caller registers nothing after it.
    pub fn register(
        &mut self,
        block: BlockId,
        parent: Option<BlockKey>,
        tokens: &[u32],
    ) -> Option<BlockKey> {
        debug_assert_eq!(tokens.len(), self.size);
        let key = self.key(parent, tokens);
        if let Some(&other) = self.by_key.get(&key) {
            let c = &self.content[&other];
            let same = c.parent == parent.unwrap_or(ROOT) && *c.tokens == *tokens;
            return same.then_some(key);
        }
        if self.content.contains_key(&block) {
            return Some(key);
        }
        self.by_key.insert(key, block);
        self.content.insert(
            block,
            Cached {
                key,
                parent: parent.unwrap_or(ROOT),
                tokens: tokens.into(),
            },
        );
        Some(key)
    }

    /// Drops `block`'s registration.
    fn forget(&mut self, block: BlockId) {
        if let Some(c) = self.content.remove(&block) {
            if self.by_key.get(&c.key) == Some(&block) {
                self.by_key.remove(&c.key);
            }
        }
    }

    /// Empties the prefix cache: idle cached blocks become free, blocks in use stay with their
    /// sequences but are no longer found (blocks they fill later are registered again). Returns
    /// the blocks dropped from the cache.
    pub fn flush(&mut self) -> usize {
        let dropped = self.content.len();
        let registered: Vec<BlockId> = self.content.keys().copied().collect();
        for b in registered {
            self.forget(b);
        }
        self.idle_at.clear();
        for (_, b) in std::mem::take(&mut self.idle) {
            self.free_block(b);
        }
        dropped
    }

    /// Forgets every block (no sequence may reference one): the tensors may be freed.
    pub fn reset(&mut self) {
        assert!(
            self.refs.iter().all(|&r| r == 0),
            "reset with blocks in use"
        );
        *self = Self::new(self.size, self.limit, self.retain);
    }

    /// True when no block is referenced or cached: the tensors hold nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.refs.iter().all(|&r| r == 0)
    }

    /// The counts of [`BlockCounts`].
    pub fn counts(&self) -> BlockCounts {
        BlockCounts {
            limit: self.limit,
            allocated: self.refs.len(),
            used: self.refs.iter().filter(|&&r| r > 0).count(),
            shared: self.refs.iter().filter(|&&r| r > 1).count(),
            cached: self.content.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_lowest_first_and_come_back_when_released() {
        let mut b = Blocks::new(4, 3, true);
        assert_eq!(b.blocks_for(9), 3);
        assert_eq!((b.take(), b.take(), b.take()), (Some(0), Some(1), Some(2)));
        assert_eq!(b.take(), None);
        assert_eq!(b.available(), 0);
        b.release(2);
        b.release(0);
        assert_eq!(b.available(), 2);
        assert_eq!(b.take(), Some(0));
        b.share(1);
        assert_eq!(b.counts().shared, 1);
        b.release(1);
        assert_eq!(b.refs(1), 1, "one reference left");
        assert_eq!(b.counts().used, 2);
    }

    #[test]
    fn a_registered_block_is_found_by_its_tokens_and_their_prefix_only() {
        let mut b = Blocks::new(2, 4, true);
        let first = b.take().unwrap();
        let k1 = b.register(first, None, &[1, 2]).unwrap();
        let second = b.take().unwrap();
        let k2 = b.register(second, Some(k1), &[3, 4]).unwrap();
        assert_eq!(b.find(None, &[1, 2]), Some((first, k1)));
        assert_eq!(b.find(Some(k1), &[3, 4]), Some((second, k2)));
        // The same tokens after another prefix, or first, are another block.
        assert_eq!(b.find(None, &[3, 4]), None);
        assert_eq!(b.find(Some(k2), &[3, 4]), None);
        // Released, it stays cached; found again, it is referenced again.
        b.release(second);
        assert_eq!(b.counts().used, 1);
        assert_eq!(b.counts().cached, 2);
        b.share(second);
        assert_eq!(b.refs(second), 1);
        assert_eq!(b.available(), 2, "shared again: not evictable");
        // Another cache keys the same tokens differently.
        assert_ne!(Blocks::new(2, 4, true).key(None, &[1, 2]), k1);
    }

    #[test]
    fn idle_cached_blocks_are_evicted_least_recently_used_first_before_the_cache_grows() {
        let mut b = Blocks::new(1, 4, true);
        let blocks: Vec<BlockId> = (0..3).map(|_| b.take().unwrap()).collect();
        for (i, &block) in blocks.iter().enumerate() {
            b.register(block, None, &[i as u32]);
        }
        b.release(blocks[1]);
        b.release(blocks[0]);
        assert_eq!(b.available(), 3, "two cached and one never used");
        // Block 1 went idle first: it is the one reused, and no longer found.
        assert_eq!(b.take(), Some(blocks[1]));
        assert_eq!(b.find(None, &[1]), None);
        assert!(b.find(None, &[0]).is_some());
        assert_eq!(b.take(), Some(blocks[0]));
        // Nothing cached is left: the cache grows to its limit, then refuses.
        assert_eq!(b.take(), Some(3));
        assert_eq!(b.take(), None);
    }

    #[test]
    fn a_flush_forgets_every_key_and_frees_idle_blocks() {
        let mut b = Blocks::new(1, 2, true);
        let (x, y) = (b.take().unwrap(), b.take().unwrap());
        b.register(x, None, &[7]);
        b.register(y, None, &[8]);
        b.release(x);
        assert_eq!(b.flush(), 2);
        assert_eq!(b.find(None, &[7]), None);
        assert_eq!(b.find(None, &[8]), None);
        // y is still in use; x is free (not cached): released, y becomes free too.
        assert_eq!(b.counts().used, 1);
        b.release(y);
        assert!(b.is_empty());
        b.reset();
        assert_eq!(b.allocated(), 0);
    }

    #[test]
    fn without_retention_a_block_is_found_only_while_referenced() {
        let mut b = Blocks::new(1, 2, false);
        let x = b.take().unwrap();
        b.register(x, None, &[4]);
        b.share(x);
        b.release(x);
        assert!(b.find(None, &[4]).is_some(), "still referenced");
        b.release(x);
        assert_eq!(b.find(None, &[4]), None);
        assert!(b.is_empty());
    }

    #[test]
    fn registering_the_same_tokens_twice_keeps_the_first_block() {
        let mut b = Blocks::new(1, 2, true);
        let (x, y) = (b.take().unwrap(), b.take().unwrap());
        let k = b.register(x, None, &[5]).unwrap();
        assert_eq!(b.register(y, None, &[5]), Some(k));
        assert_eq!(b.find(None, &[5]), Some((x, k)));
        // A key held by other content (a collision, forced here) refuses the registration.
        b.by_key.insert(b.key(None, &[6]), x);
        assert_eq!(b.register(y, None, &[6]), None);
        b.release(y);
        assert_eq!(b.take(), Some(y), "the duplicate was never cached");
    }
}
