//! Rewards on the tiny random model: its samples hold no answer, so every verdict is checked
//! against the verifier run here and every group field and advantage against its definition on
//! an all-wrong group (zero variance: advantages 0 under every estimator). The real-model tier
//! (`tests/model/rewards.rs`) covers groups with correct samples.

use serde_json::json;

use crate::common::{check_rewards, rollout};
use crate::harness;

#[tokio::test]
async fn an_unsolved_group_gets_zero_rewards_and_zero_advantages() {
    let server = harness::start(|_| {});
    for estimator in [json!("grpo"), json!("drgrpo"), json!({"qae": 0.5})] {
        let r = rollout(
            &server,
            &json!({
                "prompts": [{"id": "sum", "text": "Question: What is 3 + 4?\nAnswer:", "answer": "7"}],
                "group_size": 4,
                "sampling": {"max_tokens": 16, "seed": 2024},
                "advantage": estimator,
            }),
        )
        .await;
        let correct = check_rewards(&r, "7", &estimator);
        assert!(correct.iter().all(|&c| !c));
        let group = &r["groups"][0];
        assert_eq!(group["pass_rate"], 0.0);
        assert_eq!(group["all_equal"], true);
        for s in group["samples"].as_array().unwrap() {
            assert_eq!(s["advantage"], 0.0, "{estimator}");
        }
    }
}
