//! The deterministic generator of the unit tests and of `entroll check-kernels` (splitmix64,
//! normals by Box–Muller), for random logits rows that are the same on every run.

/// splitmix64.
pub(crate) struct TestRng(pub(crate) u64);

impl TestRng {
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform in [0, 1) (53 bits).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal.
    pub(crate) fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `v` logits drawn from N(0, scale²).
    pub(crate) fn row(&mut self, v: usize, scale: f64) -> Vec<f32> {
        (0..v).map(|_| (self.normal() * scale) as f32).collect()
    }
}
