//! `verify`: reads JSON lines `{"gold": "...", "pred": "..."}` on stdin and writes, in order,
//! one JSON line per input: `{"correct", "status", "extracted_pred", "extracted_gold"}`.
//! A line that is not such an object gets `{"error": "..."}` in its place.

use std::io::{BufRead, BufWriter, Write};

use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    gold: String,
    pred: String,
}

fn main() -> std::io::Result<()> {
    let config = verifier::Config::default();
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let json = match serde_json::from_str::<Input>(&line) {
            Ok(input) => {
                serde_json::to_string(&verifier::verify(&input.gold, &input.pred, &config))
            }
            Err(e) => serde_json::to_string(&serde_json::json!({"error": e.to_string()})),
        }?;
        writeln!(out, "{json}")?;
    }
    out.flush()
}
