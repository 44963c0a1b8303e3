//! Evaluation of a served model on math benchmarks (`entroll eval`, issue #18): the pass@k
//! estimator so far ([`pass_at_k`]).

pub mod pass_at_k;
