//! A statistical check that the reported entropies describe the distribution tokens are
//! drawn from: at T = 1 and top_p = 1, E[-ln pi(y_t)] = H_t at every step, so over many tokens
//! the mean of d_t = -logprob_t - entropy_t is zero within its standard error.

use crate::common;

use common::{floats, rollout, samples, server};
use serde_json::json;

#[tokio::test]
async fn mean_negative_logprob_matches_mean_entropy() {
    let s = server();
    let prompts = [
        "Write a short story about a dragon.",
        "Explain how rain forms.",
        "List some ideas for a birthday party.",
        "Describe your ideal weekend.",
    ];
    let mut d = Vec::new();
    let mut seed = 100;
    while d.len() < 5_000 {
        let request = json!({
            "prompts": prompts.iter().map(|p| json!({"messages": [{"role": "user", "content": p}]})).collect::<Vec<_>>(),
            "group_size": 4,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 128, "seed": seed},
        });
        seed += 1;
        let r = rollout(s, &request).await;
        for sample in samples(&r) {
            let (lp, h) = (floats(sample, "logprobs"), floats(sample, "entropy"));
            d.extend(lp.iter().zip(&h).map(|(l, h)| -l - h));
        }
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let se = (var / n).sqrt();
    eprintln!(
        "{} tokens: mean(-logprob - entropy) = {mean:.4}, standard error {se:.4}",
        d.len()
    );
    assert!(se > 0.0);
    assert!(
        mean.abs() < 3.0 * se,
        "mean {mean} is {:.1} standard errors from 0",
        mean / se
    );
}
