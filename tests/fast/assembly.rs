//! The response's assembly on the tiny model: per-token arrays, sums, peak flags, group and
//! summary fields agree with each other and with their definitions (the same check the
//! real-model tier runs on the default model).

use crate::harness;

#[tokio::test]
async fn rollout_returns_groups_with_consistent_statistics() {
    crate::common::check_rollout_consistency(&harness::start(|_| {})).await;
}
