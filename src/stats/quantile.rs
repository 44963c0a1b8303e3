//! The one quantile rule entroll uses: peak thresholds and the quantile advantage baseline
//! both take it, so they agree with numpy and torch.

/// The linear-interpolation quantile (numpy's and torch's default) of `sorted` ascending values:
/// position `q * (n - 1)`, interpolated. `None` for no values.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_numpy_linear() {
        // numpy.quantile([1, 2, 4, 8], 0.8) == 5.6
        assert!((quantile_sorted(&[1.0, 2.0, 4.0, 8.0], 0.8).unwrap() - 5.6).abs() < 1e-12);
        assert_eq!(quantile_sorted(&[3.0], 0.8), Some(3.0));
        assert_eq!(quantile_sorted(&[], 0.8), None);
    }
}
