//! Per-token cost of entroll's statistics and draw on one logits row, on this CPU.
//!
//! `entropy` is the softmax pass alone (log-prob and full entropy), `entropy+nucleus` adds the
//! SIREN nucleus, and `step` is everything done per token (statistics and the draw). Rows are
//! Gaussian logits at three scales (flat to peaked) for SmolLM2's and Qwen2.5's vocabularies.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use entroll::stats::distribution::{
    Distribution, NucleusParams, NucleusRule, Truncation, Workspace,
};
use entroll::stats::sampling::{DrawKey, TokenSampler};

fn row(v: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..v)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * scale) as f32
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let nucleus = NucleusParams {
        top_p: 0.8,
        max_candidates: 10_000,
        rule: NucleusRule::Strict,
    };
    let sampler = TokenSampler {
        temperature: 1.0,
        truncation: Truncation::NONE,
        nucleus,
        key: DrawKey {
            seed: 1,
            prompt: 0,
            sample: 0,
        },
        mask: false,
        alternatives: 0,
    };
    let mut group = c.benchmark_group("per_token");
    for v in [49_152usize, 151_936] {
        for scale in [1.0, 3.0, 6.0] {
            let logits = row(v, scale, 7);
            let id = format!("V={v}/sigma={scale}");
            let mut ws = Workspace::default();
            group.bench_with_input(BenchmarkId::new("entropy", &id), &logits, |b, l| {
                b.iter(|| {
                    let d = Distribution::new(black_box(l), 1.0, &mut ws).unwrap();
                    black_box(d.entropy())
                })
            });
            group.bench_with_input(BenchmarkId::new("entropy+nucleus", &id), &logits, |b, l| {
                b.iter(|| {
                    let mut d = Distribution::new(black_box(l), 1.0, &mut ws).unwrap();
                    black_box(d.nucleus(&nucleus))
                })
            });
            group.bench_with_input(BenchmarkId::new("step", &id), &logits, |b, l| {
                b.iter(|| black_box(sampler.step(black_box(l), 3, &mut ws).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
