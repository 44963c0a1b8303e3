//! Fuzzes `verifier::verify` on arbitrary (gold, response) pairs: it must never panic, never
//! run away, and report `correct` exactly when its status is `correct`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Gold answer and response are separated by the first newline-tab pair, else split in half.
    let (gold, pred) = match text.split_once("\n\t") {
        Some(pair) => pair,
        None => text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i)),
    };
    let verdict = verifier::verify(gold, pred, &verifier::Config::default());
    assert_eq!(verdict.correct, verdict.status == verifier::Status::Correct);
});
