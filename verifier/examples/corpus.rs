//! The verifier on a folder of labelled cases (`{gold, pred, expected}` JSON lines): per-file
//! agreement with the labels, false positives, and per-answer latency (answers/s, p50, p99).
//! Prints one JSON object, in the same shape as `bench/math_verify_baseline.py`.
//!
//!     cargo run --release -p verifier --example corpus -- verifier/tests/cases

use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let folder = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "verifier/tests/cases".into());
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .expect("case folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    let config = verifier::Config::default();
    let (mut per_file, mut latencies, mut fp) = (BTreeMap::new(), Vec::new(), 0usize);
    for path in paths {
        let (mut agree, mut total) = (0usize, 0usize);
        for line in std::fs::read_to_string(&path).expect("read cases").lines() {
            let case: serde_json::Value = serde_json::from_str(line).expect("JSON case");
            let (gold, pred) = (
                case["gold"].as_str().unwrap_or(""),
                case["pred"].as_str().unwrap_or(""),
            );
            let start = Instant::now();
            let correct = verifier::verify(gold, pred, &config).correct;
            latencies.push(start.elapsed().as_secs_f64());
            let expected = case["expected"].as_bool().unwrap_or(false);
            agree += usize::from(correct == expected);
            fp += usize::from(correct && !expected);
            total += 1;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        per_file.insert(name, [agree, total]);
    }
    latencies.sort_by(f64::total_cmp);
    let n = latencies.len().max(1);
    let report = serde_json::json!({
        "verifier": "entroll verifier",
        "per_file": per_file,
        "false_positives": fp,
        "answers_per_s": n as f64 / latencies.iter().sum::<f64>(),
        "p50_ms": 1e3 * latencies[n / 2],
        "p99_ms": 1e3 * latencies[(n * 99 / 100).min(n - 1)],
    });
    println!("{report}");
}
