//! What one forward of the native model computes: a prompt chunk of one sequence or one token
//! of each of several sequences ([`Batch`]), each row with the block table of its sequence.
//! The batcher ([`super::plan`]) makes them; the model ([`super::model`]) and attention
//! ([`super::attention`]) run them. It sits below all three, beside the cache it addresses
//! ([`super::kv`]).

use super::kv::KvCache;
use super::queries::Queries;

/// What one forward computes. The scheduler says which kind it is; the model never infers it
/// from the batch's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// Consecutive prompt tokens of one sequence at positions `start..start + tokens.len()`.
    Prompt {
        /// The sequence's block table: block `i` holds positions `i · size..(i + 1) · size`.
        blocks: Vec<u32>,
        /// Position of the first token.
        start: usize,
        /// The chunk's tokens.
        tokens: Vec<u32>,
    },
    /// One token for each of several sequences.
    Decode {
        /// One row per sequence.
        rows: Vec<DecodeRow>,
    },
}

/// One sequence's token in a decode step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeRow {
    /// The sequence's block table.
    pub blocks: Vec<u32>,
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

    /// Each row's position.
    pub fn positions(&self) -> Vec<usize> {
        match self {
            Self::Prompt { start, tokens, .. } => (*start..start + tokens.len()).collect(),
            Self::Decode { rows } => rows.iter().map(|r| r.position).collect(),
        }
    }

    /// Blocks `0..n` the cache must hold for this forward: one past the highest block any
    /// row's table names.
    pub fn blocks_spanned(&self) -> usize {
        let highest = match self {
            Self::Prompt { blocks, .. } => blocks.iter().max(),
            Self::Decode { rows } => rows.iter().flat_map(|r| r.blocks.iter()).max(),
        };
        highest.map_or(0, |&b| b as usize + 1)
    }

    /// Each row's block table and position: a row attends to positions `0..=position`.
    pub fn queries(&self) -> Queries {
        match self {
            Self::Prompt {
                blocks,
                start,
                tokens,
            } => Queries::new(
                &(*start..start + tokens.len())
                    .map(|p| (blocks.as_slice(), p))
                    .collect::<Vec<_>>(),
            ),
            Self::Decode { rows } => Queries::new(
                &rows
                    .iter()
                    .map(|r| (r.blocks.as_slice(), r.position))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// The cache rows each row's keys and values go to, head by head: entry `i · kv_heads + h`
    /// is where row `i`'s head `h` is written.
    pub(super) fn writes(&self, cache: &KvCache) -> Vec<u32> {
        let size = cache.block_size();
        let mut out = Vec::with_capacity(self.rows() * cache.kv_heads());
        let mut each = |table: &[u32], p: usize| {
            for h in 0..cache.kv_heads() {
                out.push(cache.row(table[p / size], h, p % size) as u32);
            }
        };
        match self {
            Self::Prompt {
                blocks,
                start,
                tokens,
            } => (*start..start + tokens.len()).for_each(|p| each(blocks, p)),
            Self::Decode { rows } => rows.iter().for_each(|r| each(&r.blocks, r.position)),
        }
        out
    }
}
