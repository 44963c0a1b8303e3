//! `entroll eval` on the real model, and the shipped datasets against the verifier.
//!
//! The evaluation's counts are checked against a second path: the same problem posted to
//! /rollouts directly, with the seed the report gives, must draw the same samples and the same
//! verdicts; and the report must not depend on how many problems were in flight.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{rollout, samples, server};
use entroll::eval::dataset::Dataset;
use entroll::eval::pass_at_k::pass_at_k;
use serde_json::{json, Value};

/// The project's datasets directory.
fn datasets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")
}

/// Every shipped dataset file, and any listed in ENTROLL_EVAL_EXTRA (colon-separated; for
/// measuring datasets the project may not ship, such as OlympiadBench).
fn dataset_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![datasets_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                files.push(path);
            }
        }
    }
    if let Ok(extra) = std::env::var("ENTROLL_EVAL_EXTRA") {
        files.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    files.sort();
    files
}

#[test]
fn the_verifier_accepts_each_datasets_own_solutions() {
    let config = verifier::Config::default();
    let mut with_solutions = 0;
    for file in dataset_files() {
        let dataset = Dataset::read(&file).unwrap();
        let lines = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        assert_eq!(dataset.problems.len(), lines, "{}", file.display());
        // Every gold answer, boxed as a model would write it, is judged correct.
        let boxed_wrong: Vec<&str> = dataset
            .problems
            .iter()
            .filter(|p| {
                !verifier::verify(&p.gold, &format!("\\boxed{{{}}}", p.gold), &config).correct
            })
            .map(|p| p.id.as_str())
            .collect();
        assert!(
            boxed_wrong.is_empty(),
            "{}: boxed golds judged wrong: {boxed_wrong:?}",
            dataset.name
        );
        // A list of answers (OlympiadBench's multiple answers) is judged as a set: complete in
        // any order, and not by its last part alone.
        let lists: Vec<_> = dataset
            .problems
            .iter()
            .filter(|p| p.gold.contains(", ") && !p.gold.contains(['(', '[']))
            .collect();
        let misjudged: Vec<&str> = lists
            .iter()
            .filter(|p| {
                let parts: Vec<&str> = p.gold.split(", ").collect();
                let reversed: Vec<&str> = parts.iter().rev().copied().collect();
                let judge = |answer: &str| {
                    verifier::verify(&p.gold, &format!("\\boxed{{{answer}}}"), &config).correct
                };
                !judge(&reversed.join(", ")) || judge(parts[parts.len() - 1])
            })
            .map(|p| p.gold.as_str())
            .collect();
        if !lists.is_empty() {
            eprintln!(
                "{}: {} of {} lists judged as sets; not: {misjudged:?}",
                dataset.name,
                lists.len() - misjudged.len(),
                lists.len()
            );
        }
        // OlympiadBench: 64 of 65; the verifier does not compare lists of equations
        // (`\angle B E A_{1}=90, \angle A E B_{1}=90`) as sets.
        assert!(
            misjudged.len() * 50 <= lists.len(),
            "{}: lists not judged as sets: {misjudged:?}",
            dataset.name
        );
        let solved: Vec<_> = dataset
            .problems
            .iter()
            .filter_map(|p| Some((p, p.solution.as_deref()?)))
            .collect();
        if solved.is_empty() {
            eprintln!(
                "{}: {} problems, no worked solutions",
                dataset.name,
                dataset.problems.len()
            );
            continue;
        }
        with_solutions += 1;
        let wrong: Vec<String> = solved
            .iter()
            .filter_map(|(p, solution)| {
                let v = verifier::verify(&p.gold, solution, &config);
                (!v.correct)
                    .then(|| format!("{} (gold {:?}, read {:?})", p.id, p.gold, v.extracted_pred))
            })
            .collect();
        let share = 1.0 - wrong.len() as f64 / solved.len() as f64;
        eprintln!(
            "{}: {} of {} solutions judged correct ({:.1}%); wrong: {wrong:?}",
            dataset.name,
            solved.len() - wrong.len(),
            solved.len(),
            100.0 * share
        );
        assert!(
            share >= 0.995,
            "{}: only {:.1}% of the solutions judged correct",
            dataset.name,
            100.0 * share
        );
    }
    assert!(
        with_solutions >= 4,
        "math500, aime2024, gsm8k and minerva have solutions"
    );
}

/// Runs `entroll eval` with these arguments; returns the status, the report (when written)
/// and standard error.
fn eval(args: &[&str]) -> (std::process::ExitStatus, Option<Value>, String) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("entroll-eval-{}-{run}.json", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_entroll"))
        .arg("eval")
        .args(args)
        .arg("--output")
        .arg(&out)
        .output()
        .expect("run entroll eval");
    let report = std::fs::read_to_string(&out)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    let _ = std::fs::remove_file(&out);
    (
        output.status,
        report,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A small dataset the default model sometimes solves.
fn easy_dataset() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("entroll-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("easy.jsonl");
    std::fs::write(
        &path,
        "{\"id\": \"two\", \"question\": \"What is 2 + 2?\", \"answer\": \"4\"}\n\
         {\"id\": \"ten\", \"question\": \"What is 5 + 5?\", \"answer\": 10}\n",
    )
    .unwrap();
    path
}

#[tokio::test]
async fn eval_reports_what_the_server_draws_and_judges() {
    let s = server();
    let math500 = datasets_dir().join("math500.jsonl");
    let easy = easy_dataset();
    let (k, limit) = (4usize, 2usize);
    let run = |concurrency: &str| {
        let (math500, easy) = (
            math500.to_str().unwrap().to_string(),
            easy.to_str().unwrap().to_string(),
        );
        let concurrency = concurrency.to_string();
        let url = s.base.clone();
        move || {
            eval(&[
                "--url",
                &url,
                "--dataset",
                &math500,
                "--dataset",
                &easy,
                "--k",
                "4",
                "--limit",
                "2",
                "--max-tokens",
                "24",
                "--seed",
                "7",
                "--concurrency",
                &concurrency,
            ])
        }
    };
    let (status, report, stderr) = tokio::task::spawn_blocking(run("3")).await.unwrap();
    assert!(status.success(), "entroll eval failed: {stderr}");
    let report = report.expect("the report was written");
    assert_eq!(report["k"], 4);
    assert_eq!(report["weights_versions"], json!([0]));
    assert!(stderr.contains("overall: 4 problems"), "{stderr}");

    // Each problem: k samples, and the same samples and verdicts from /rollouts directly.
    let mut all = Vec::new();
    for (name, file) in [("math500", &math500), ("easy", &easy)] {
        let d = &report["datasets"][name];
        let problems = d["problems"].as_array().unwrap();
        let dataset = Dataset::read(file).unwrap();
        assert_eq!(problems.len(), limit, "{name}");
        for (i, (p, problem)) in problems.iter().zip(&dataset.problems).enumerate() {
            assert_eq!(p["id"], problem.id.as_str());
            assert_eq!(p["n"], k);
            assert_eq!(p["seed"], 7 + i as u64);
            let direct = rollout(
                s,
                &json!({
                    "prompts": [{"messages": [{"role": "user", "content": format!(
                        "{}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
                        problem.question)}],
                        "answer": problem.gold}],
                    "group_size": k,
                    "sampling": {"max_tokens": 24, "seed": p["seed"]},
                }),
            )
            .await;
            let drawn = samples(&direct);
            let correct = drawn.iter().filter(|s| s["correct"] == true).count();
            let tokens: u64 = drawn.iter().map(|s| s["length"].as_u64().unwrap()).sum();
            let entropy: f64 = drawn
                .iter()
                .map(|s| s["entropy_sum"].as_f64().unwrap())
                .sum();
            assert_eq!(
                (
                    p["c"].as_u64().unwrap() as usize,
                    p["tokens"].as_u64().unwrap()
                ),
                (correct, tokens),
                "{name} {i}"
            );
            assert!(
                (p["entropy_sum"].as_f64().unwrap() - entropy).abs() < 1e-6 * (1.0 + entropy),
                "{name} {i}"
            );
        }
        // The dataset's scores from its problems, by the estimator and by hand.
        let scores = &d["scores"];
        let cs: Vec<usize> = problems
            .iter()
            .map(|p| p["c"].as_u64().unwrap() as usize)
            .collect();
        let mean =
            |f: &dyn Fn(usize) -> f64| cs.iter().map(|&c| f(c)).sum::<f64>() / cs.len() as f64;
        assert!(
            (scores["pass@1"].as_f64().unwrap() - mean(&|c| c as f64 / k as f64)).abs() < 1e-12
        );
        assert!(
            (scores["pass@4"].as_f64().unwrap() - mean(&|c| f64::from(u8::from(c > 0)))).abs()
                < 1e-12
        );
        assert!(
            (scores["pass@2"].as_f64().unwrap() - mean(&|c| pass_at_k(k, c, 2).unwrap())).abs()
                < 1e-12
        );
        all.extend(problems.iter().cloned());
    }
    // Overall: token-weighted entropy and problem-mean pass@1 over both datasets.
    let total = |f: &str| all.iter().map(|p| p[f].as_f64().unwrap()).sum::<f64>();
    let overall = &report["overall"];
    assert_eq!(overall["problems"], 4);
    assert_eq!(overall["samples"], 16);
    assert!(
        (overall["entropy_mean"].as_f64().unwrap() - total("entropy_sum") / total("tokens")).abs()
            < 1e-9
    );
    assert!((overall["length_mean"].as_f64().unwrap() - total("tokens") / 16.0).abs() < 1e-9);
    assert!((overall["pass@1"].as_f64().unwrap() - total("c") / 16.0).abs() < 1e-12);
    assert!(
        total("c") > 0.0,
        "the easy problems are solved at least once, so the counts are tested"
    );

    // The same evaluation one problem at a time: the same report, timing aside.
    let (status, again, stderr) = tokio::task::spawn_blocking(run("1")).await.unwrap();
    assert!(status.success(), "{stderr}");
    let again = again.unwrap();
    for name in ["math500", "easy"] {
        assert_eq!(
            report["datasets"][name]["problems"], again["datasets"][name]["problems"],
            "{name}"
        );
    }
    let _ = std::fs::remove_file(easy);
}

#[tokio::test]
async fn eval_refuses_bad_input_clearly() {
    let s = server();
    let math500 = datasets_dir().join("math500.jsonl");
    let math500 = math500.to_str().unwrap().to_string();
    let base = s.base.clone();
    let bad_line = std::env::temp_dir().join(format!("entroll-bad-{}.jsonl", std::process::id()));
    std::fs::write(
        &bad_line,
        "{\"problem\": \"p\", \"answer\": \"1\"}\n{\"problem\": \"q\"}\n",
    )
    .unwrap();
    let bad_line = bad_line.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--dataset".into(), "/nonexistent/x.jsonl".into()],
            "reading /nonexistent/x.jsonl",
        ),
        (
            vec!["--dataset".into(), bad_line.clone()],
            ":2: no gold answer",
        ),
        // More samples than the server allows a group: every problem refused, with its reason.
        (
            vec![
                "--dataset".into(),
                math500.clone(),
                "--k".into(),
                "100000".into(),
                "--limit".into(),
                "2".into(),
            ],
            "refused every problem",
        ),
        (
            vec![
                "--dataset".into(),
                math500.clone(),
                "--k".into(),
                "0".into(),
            ],
            "--k must be at least 1",
        ),
    ];
    for (args, wanted) in cases {
        let mut full = vec!["--url".to_string(), base.clone()];
        full.extend(args);
        let (status, report, stderr) = tokio::task::spawn_blocking(move || {
            eval(&full.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert!(!status.success() && report.is_none(), "{wanted}: {status}");
        assert!(stderr.contains(wanted), "wanted {wanted:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(bad_line);
}
