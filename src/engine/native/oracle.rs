//! An independent second computation of what the native engine reports, for tests: the whole
//! sequence in one plain forward (no KV cache, no slots, no batching, no chunking, causal
//! attention by dense tensor operations with every key/value head repeated), in float32 on the
//! CPU, and each token's log-probability and entropy from its logits in f64, without
//! [`crate::stats::distribution`].
//!
//! It shares only the weights and the layers' matrix products with the engine; the cache,
//! the scheduler's plans, the attention kernel and the statistics code are all bypassed, so a
//! bug in any of them shows as a disagreement.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use super::config::RopeStyle;
use super::load::read_gguf;
use super::model::Transformer;

/// The oracle's view of one generated token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescored {
    /// `ln π(token)` under the full distribution at the temperature.
    pub logprob: f64,
    /// Full-vocabulary entropy of that distribution, nats.
    pub entropy: f64,
}

/// A model loaded on its own for re-scoring sequences.
pub struct Oracle {
    model: Transformer,
}

impl Oracle {
    /// Loads the model at `path` (a GGUF file, dequantized, or a safetensors directory) in
    /// float32 on the CPU.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let device = Device::Cpu;
        let model = if path.is_dir() {
            Transformer::from_safetensors(path, DType::F32, &device)?
        } else {
            let (content, file) = read_gguf(path)?;
            Transformer::from_gguf(content, file, path, Some(DType::F32), &device)?
        };
        Ok(Self { model })
    }

    /// Re-scores `generated` after `prompt` at `temperature`: for each generated token, its
    /// log-probability and the entropy of the distribution it was drawn from.
    pub fn rescore(
        &self,
        prompt: &[u32],
        generated: &[u32],
        temperature: f64,
    ) -> anyhow::Result<Vec<Rescored>> {
        let rows = self.rows(prompt, generated)?;
        Ok(rows
            .iter()
            .zip(generated)
            .map(|(row, &token)| measure(row, token, temperature))
            .collect())
    }

    /// The whole distribution each of `generated` was drawn from: `ln π` of every token of the
    /// vocabulary at `temperature`, in f64, one row per generated token. Tests check a
    /// truncation (top-k, top-p) against the distribution it cut.
    pub fn log_probs(
        &self,
        prompt: &[u32],
        generated: &[u32],
        temperature: f64,
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let rows = self.rows(prompt, generated)?;
        Ok(rows
            .iter()
            .map(|row| log_softmax(row, temperature))
            .collect())
    }

    /// The logits rows that predict each of `generated` after `prompt`.
    fn rows(&self, prompt: &[u32], generated: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
        anyhow::ensure!(!prompt.is_empty(), "an empty prompt has no distribution");
        if generated.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        // Logits at positions prompt.len() - 1 .. predict the generated tokens.
        let logits = self.logits(&tokens[..tokens.len() - 1], prompt.len() - 1)?;
        Ok(logits.to_vec2()?)
    }

    /// Logits `[tokens.len() - from, V]` of positions `from..` of `tokens`, all positions
    /// computed in one forward.
    fn logits(&self, tokens: &[u32], from: usize) -> candle_core::Result<Tensor> {
        let m = &self.model;
        let a = &m.arch;
        let len = tokens.len();
        let (heads, kv_heads, d) = (a.heads, a.kv_heads, a.head_dim);
        let groups = heads / kv_heads;
        let ids = Tensor::new(tokens, &m.device)?;
        let cos = m.cos.narrow(0, 0, len)?;
        let sin = m.sin.narrow(0, 0, len)?;
        let causal: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let causal = Tensor::from_vec(causal, (len, len), &m.device)?;
        // [len, width] → [1, heads, len, d], per-head norm, RoPE over the time axis.
        let heads_of =
            |x: Tensor, n: usize, norm: &Option<Tensor>| -> candle_core::Result<Tensor> {
                let mut x = x.reshape((len, n, d))?;
                if let Some(norm) = norm {
                    x = candle_nn::ops::rms_norm(&x, norm, a.rms_eps as f32)?;
                }
                let x = x.transpose(0, 1)?.unsqueeze(0)?.contiguous()?;
                match a.rope_style {
                    RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin),
                    RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, &cos, &sin),
                }
            };
        // [1, kv_heads, len, d] → [1, heads, len, d]: query head h reads key/value head h / groups.
        let repeat = |x: Tensor| -> candle_core::Result<Tensor> {
            x.unsqueeze(2)?
                .broadcast_as((1, kv_heads, groups, len, d))?
                .contiguous()?
                .reshape((1, heads, len, d))
        };
        let mut x = m.embed.index_select(&ids, 0)?;
        for layer in &m.layers {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, a.rms_eps as f32)?;
            let (q, k, v) = layer.qkv(&h)?;
            let q = heads_of(q, heads, &layer.q_norm)?;
            let k = repeat(heads_of(k, kv_heads, &layer.k_norm)?)?;
            let v = v.reshape((len, kv_heads, d))?;
            let v = repeat(v.transpose(0, 1)?.unsqueeze(0)?.contiguous()?)?;
            let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&causal)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let mixed = probs
                .matmul(&v)? // [1, heads, len, d]
                .squeeze(0)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((len, heads * d))?;
            x = (x + layer.o.forward(&mixed)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, a.rms_eps as f32)?;
            x = (x + layer.feed_forward(&h)?)?;
        }
        let x = x.narrow(0, from, len - from)?;
        let x = candle_nn::ops::rms_norm(&x, &m.norm, a.rms_eps as f32)?;
        m.lm_head.forward(&x)?.to_dtype(DType::F32)
    }
}

/// `ln softmax(row / temperature)`, in f64.
fn log_softmax(row: &[f32], temperature: f64) -> Vec<f64> {
    let z: Vec<f64> = row.iter().map(|&x| x as f64 / temperature).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = z.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + total.ln();
    z.iter().map(|&x| x - lse).collect()
}

/// Log-probability of `token` and the entropy of `softmax(row / temperature)`, in f64.
fn measure(row: &[f32], token: u32, temperature: f64) -> Rescored {
    let lp = log_softmax(row, temperature);
    let entropy = -lp.iter().map(|&l| l.exp() * l).sum::<f64>();
    Rescored {
        logprob: lp[token as usize],
        entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_matches_closed_forms() {
        // Uniform over 4: entropy ln 4, every log-probability -ln 4.
        let r = measure(&[0.5; 4], 2, 1.0);
        assert!((r.entropy - 4f64.ln()).abs() < 1e-12);
        assert!((r.logprob + 4f64.ln()).abs() < 1e-12);
        // Two tokens with logits 0 and ln 3 at T = 1: probabilities 1/4 and 3/4.
        let r = measure(&[0.0, 3f32.ln()], 1, 1.0);
        assert!((r.logprob - 0.75f64.ln()).abs() < 1e-7);
        let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((r.entropy - h).abs() < 1e-7);
        // Temperature 2 halves the logits.
        let r = measure(&[0.0, 2.0 * 3f32.ln()], 1, 2.0);
        assert!((r.logprob - 0.75f64.ln()).abs() < 1e-6);
    }
}
