//! Agreement with the labelled cases in `tests/cases/` (established verifiers' test suites and
//! labelled model outputs; sources and licences in `tests/cases/README.md`): at least 99% overall, at least 95% without the
//! GSM8K file, and fewer false positives than Math-Verify 0.9.0's 15 on the same cases.

use std::path::Path;

#[test]
fn agrees_with_the_labelled_cases() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let config = verifier::Config::default();
    let (mut agree, mut total, mut agree_ng, mut total_ng, mut false_pos) = (0, 0, 0, 0, 0);
    let mut files = 0;
    for entry in std::fs::read_dir(&folder).expect("verifier/tests/cases") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        files += 1;
        let gsm8k = path.to_string_lossy().contains("gsm8k");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let got = verifier::verify(
                case["gold"].as_str().unwrap(),
                case["pred"].as_str().unwrap(),
                &config,
            )
            .correct;
            let expected = case["expected"].as_bool().unwrap();
            let ok = usize::from(got == expected);
            agree += ok;
            total += 1;
            if !gsm8k {
                agree_ng += ok;
                total_ng += 1;
            }
            false_pos += usize::from(got && !expected);
        }
    }
    assert!(files >= 8, "expected the eight case files, found {files}");
    let overall = agree as f64 / total as f64;
    let without_gsm8k = agree_ng as f64 / total_ng as f64;
    eprintln!("agreement {overall:.4} ({agree}/{total}), without GSM8K {without_gsm8k:.4}, false positives {false_pos}");
    assert!(overall >= 0.99, "overall agreement {overall}");
    assert!(
        without_gsm8k >= 0.95,
        "agreement without GSM8K {without_gsm8k}"
    );
    assert!(false_pos < 15, "{false_pos} false positives");
}
