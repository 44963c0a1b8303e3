//! The unbiased pass@k estimator of Chen et al. (2021, "Evaluating Large Language Models
//! Trained on Code", eq. 1): with `n` samples of a problem of which `c` are correct, the
//! probability that at least one of `k` samples drawn without replacement is correct,
//! `1 - C(n - c, k) / C(n, k)`, computed as a product so that no binomial overflows.

/// Why pass@k cannot be estimated from `n` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PassAtKError {
    /// `k` is 0 or exceeds the samples drawn.
    #[error("pass@{k} needs 1 <= k <= n, and n = {n}")]
    BadK {
        /// The k asked for.
        k: usize,
        /// The samples drawn.
        n: usize,
    },
    /// More correct samples than samples.
    #[error("{c} correct of {n} samples")]
    BadCount {
        /// Correct samples.
        c: usize,
        /// Samples drawn.
        n: usize,
    },
}

/// pass@k of one problem from `n` samples, `c` of them correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, PassAtKError> {
    if k == 0 || k > n {
        return Err(PassAtKError::BadK { k, n });
    }
    if c > n {
        return Err(PassAtKError::BadCount { c, n });
    }
    if n - c < k {
        // Every k-subset holds a correct sample.
        return Ok(1.0);
    }
    // C(n-c, k) / C(n, k) = prod over i in (n-c, n] of (1 - k / i).
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Ok(1.0 - miss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_computed_by_hand() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // k = 1 is the fraction correct.
        assert!(close(pass_at_k(5, 2, 1).unwrap(), 0.4));
        // 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7));
        // 1 - C(6,3)/C(10,3) = 1 - 20/120.
        assert!(close(pass_at_k(10, 4, 3).unwrap(), 5.0 / 6.0));
        // k = n: 1 as soon as one sample is correct, 0 with none.
        assert_eq!(pass_at_k(4, 1, 4), Ok(1.0));
        assert_eq!(pass_at_k(4, 0, 4), Ok(0.0));
        // c = 0 and c = n.
        assert_eq!(pass_at_k(16, 0, 8), Ok(0.0));
        assert_eq!(pass_at_k(16, 16, 1), Ok(1.0));
        // Large n without overflow: 1 - C(900,10)/C(1000,10).
        let expected = 1.0
            - (991..=1000)
                .map(|i| (i - 100) as f64 / i as f64)
                .product::<f64>();
        assert!(close(pass_at_k(1000, 100, 10).unwrap(), expected));
    }

    #[test]
    fn impossible_arguments_are_refused() {
        assert_eq!(pass_at_k(4, 1, 0), Err(PassAtKError::BadK { k: 0, n: 4 }));
        assert_eq!(pass_at_k(4, 1, 5), Err(PassAtKError::BadK { k: 5, n: 4 }));
        assert_eq!(
            pass_at_k(4, 5, 2),
            Err(PassAtKError::BadCount { c: 5, n: 4 })
        );
    }

    /// The share of the k-subsets of `n` samples (the first `c` correct) holding a correct
    /// one, by enumerating every subset as a bit mask.
    fn enumerated(n: usize, c: usize, k: usize) -> f64 {
        let correct = (1u32 << c) - 1;
        let (mut subsets, mut hits) = (0u32, 0u32);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                subsets += 1;
                hits += u32::from(mask & correct != 0);
            }
        }
        hits as f64 / subsets as f64
    }

    #[test]
    fn agrees_with_enumerating_every_subset() {
        for n in 1..=10 {
            for c in 0..=n {
                for k in 1..=n {
                    let (estimate, count) = (pass_at_k(n, c, k).unwrap(), enumerated(n, c, k));
                    assert!(
                        (estimate - count).abs() < 1e-12,
                        "n={n} c={c} k={k}: {estimate} vs {count}"
                    );
                }
            }
        }
    }
}
