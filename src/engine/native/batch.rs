//! What one forward of the native model computes: a prompt chunk of one sequence or one token
//! of each of several sequences ([`Batch`]). The batcher ([`super::plan`]) makes them; the
//! model ([`super::model`]) and attention ([`super::attention`]) run them. It sits below all
//! three, beside the cache it addresses ([`super::kv`]).

use super::kv::KvCache;

/// What one forward computes. The scheduler says which kind it is; the model never infers it
/// from the batch's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Consecutive prompt tokens of one sequence at positions `start..start + tokens.len()` of
    /// `slot`. Their keys and values are also written to every slot of `copies` (the other
    /// samples of the prompt, which prefill with it).
    Prompt {
        /// The slot whose cache the chunk extends.
        slot: usize,
        /// Position of the first token.
        start: usize,
        /// The chunk's tokens.
        tokens: Vec<u32>,
        /// Slots that receive copies of the chunk's keys and values.
        copies: Vec<usize>,
    },
    /// One token for each of several sequences.
    Decode {
        /// One row per sequence.
        rows: Vec<DecodeRow>,
    },
}

/// One sequence's token in a decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeRow {
    /// The sequence's slot.
    pub slot: usize,
    /// Position of the token (the positions before it are cached).
    pub position: usize,
    /// The token fed.
    pub token: u32,
}

impl Batch {
    /// Rows of the forward (tokens computed).
    pub fn rows(&self) -> usize {
        match self {
            Self::Prompt { tokens, .. } => tokens.len(),
            Self::Decode { rows } => rows.len(),
        }
    }

    /// The tokens, one per row of the forward.
    pub fn tokens(&self) -> Vec<u32> {
        match self {
            Self::Prompt { tokens, .. } => tokens.clone(),
            Self::Decode { rows } => rows.iter().map(|r| r.token).collect(),
        }
    }

    /// `(slot, position)` of each row: a row attends to positions `0..=position` of its slot.
    pub fn queries(&self) -> Vec<(usize, usize)> {
        match self {
            Self::Prompt {
                slot,
                start,
                tokens,
                ..
            } => (*start..start + tokens.len()).map(|p| (*slot, p)).collect(),
            Self::Decode { rows } => rows.iter().map(|r| (r.slot, r.position)).collect(),
        }
    }

    /// The cache rows each row's keys and values are written to: the rows of the queries,
    /// then (for a prompt chunk) the same positions of every copy slot.
    pub(super) fn writes(&self, cache: &KvCache) -> Vec<usize> {
        let queries = self.queries();
        let mut rows: Vec<usize> = queries.iter().map(|&(s, p)| cache.row(s, p)).collect();
        if let Self::Prompt { copies, .. } = self {
            for &copy in copies {
                rows.extend(queries.iter().map(|&(_, p)| cache.row(copy, p)));
            }
        }
        rows
    }
}
