//! Evaluation of a served model on math benchmarks (`entroll eval`): datasets read in each
//! benchmark's own format ([`dataset`]), each problem sampled k times through POST /rollouts and
//! judged by the server's verifier ([`run`]), and pass@k, entropy and length per dataset
//! ([`report`], with the unbiased estimator in [`pass_at_k`]).

pub mod dataset;
pub mod pass_at_k;
pub mod report;
pub mod run;
