//! A forward's query rows as attention reads them ([`Queries`]): each row's position and the
//! block table of its sequence, in the flat form the device kernels take and with the bounds
//! check that guards their reads. Below [`super::batch`], which makes them, and
//! [`super::kernel_attention`], which hands them to the kernels.

/// A forward's rows as attention reads them: each row's position and block table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    /// `[offset of its table, position]` per row, then the tables one after another (offsets
    /// count from the first table): the kernels' input, uploaded as it is.
    flat: Vec<u32>,
    /// Each row's table as `(offset, length)`.
    spans: Vec<(usize, usize)>,
}

impl Queries {
    /// Rows `(table, position)`: each row reads positions `0..=position` through its table.
    pub fn new(rows: &[(&[u32], usize)]) -> Self {
        let mut flat = Vec::with_capacity(2 * rows.len());
        let mut tables: Vec<u32> = Vec::new();
        let mut spans = Vec::with_capacity(rows.len());
        let mut last: Option<(*const u32, usize, usize)> = None;
        for &(table, position) in rows {
            // Rows of one prompt chunk share their table: stored once.
            let offset = match last {
                Some((ptr, len, offset)) if ptr == table.as_ptr() && len == table.len() => offset,
                _ => {
                    tables.extend_from_slice(table);
                    tables.len() - table.len()
                }
            };
            last = Some((table.as_ptr(), table.len(), offset));
            flat.extend([offset as u32, position as u32]);
            spans.push((offset, table.len()));
        }
        flat.extend(tables);
        Self { flat, spans }
    }

    /// The flat form the kernels read.
    pub fn flat(&self) -> &[u32] {
        &self.flat
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Position of row `t`.
    pub fn position(&self, t: usize) -> usize {
        self.flat[2 * t + 1] as usize
    }

    /// Block table of row `t`.
    pub fn table(&self, t: usize) -> &[u32] {
        let (offset, len) = self.spans[t];
        let base = 2 * self.len() + offset;
        &self.flat[base..base + len]
    }

    /// Checks that every row's table covers its position and names blocks below `blocks`.
    pub fn check(&self, block_size: usize, blocks: usize) -> candle_core::Result<()> {
        for t in 0..self.len() {
            let (position, table) = (self.position(t), self.table(t));
            if position / block_size >= table.len()
                || table[..=position / block_size]
                    .iter()
                    .any(|&b| b as usize >= blocks)
            {
                candle_core::bail!("attention: position {position} of row {t} is not cached");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_store_a_shared_table_once_and_read_back_each_row_s() {
        let (a, b) = (vec![4u32, 7], vec![1u32]);
        let q = Queries::new(&[(&a[..], 17), (&a[..], 18), (&b[..], 2)]);
        assert_eq!(q.flat, vec![0, 17, 0, 18, 2, 2, 4, 7, 1]);
        assert_eq!((q.table(1), q.position(1)), (&[4, 7][..], 18));
        assert_eq!((q.table(2), q.position(2)), (&[1][..], 2));
        assert!(q.check(16, 8).is_ok());
        // Position 18 needs a second block of 16; block 7 must exist.
        assert!(q.check(16, 7).is_err());
        assert!(Queries::new(&[(&b[..], 16)]).check(16, 8).is_err());
    }
}
