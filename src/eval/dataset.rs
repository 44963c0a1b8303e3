//! Evaluation datasets: JSONL files of one problem and its gold answer a line, read in each
//! benchmark's own format, so that `entroll eval` takes the published files as they are.
//!
//! A line's fields decide how it is read:
//! - the problem: `problem` or `question` (OlympiadBench's `context`, when set, goes before it);
//! - the gold answer: OlympiadBench's `final_answer` list (with `is_multiple_answer`, its parts
//!   become one comma-separated list); else `answer`, a string (GSM8K's worked solution ending
//!   in `#### 18` gives the number after the marks, without thousands commas), an integer or a
//!   float (AMC's `27.0` is `27`); else the final `\boxed{}` of `solution` (Minerva);
//! - the reference solution, for checking the verifier against the golds: a `solution` string,
//!   or GSM8K's `answer` (OlympiadBench's solutions are proofs with no marked answer);
//! - the id: `id`, `unique_id` or `idx`, else the line number.

use std::path::Path;

use serde_json::{Map, Value};

/// One problem of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The dataset's id for it (or its line number).
    pub id: String,
    /// The problem as the model is asked it.
    pub question: String,
    /// The gold answer, as the verifier compares it.
    pub gold: String,
    /// The dataset's worked solution, when it has one.
    pub solution: Option<String>,
}

/// A dataset: its name (the file's stem) and its problems in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The name reports use (`math500` for `math500.jsonl`).
    pub name: String,
    /// The file it was read from.
    pub source: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A line is not a problem in any known format.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file holds no problem.
    #[error("{path} holds no problems")]
    Empty {
        /// The file.
        path: String,
    },
}

impl Dataset {
    /// Reads a JSONL dataset (blank lines are skipped).
    pub fn read(path: &Path) -> Result<Dataset, DatasetError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
            path: shown.clone(),
            source,
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| shown.clone(), |s| s.to_string_lossy().into_owned());
        let problems = Self::parse(&text).map_err(|(line, message)| DatasetError::Line {
            path: shown.clone(),
            line,
            message,
        })?;
        if problems.is_empty() {
            return Err(DatasetError::Empty { path: shown });
        }
        Ok(Dataset {
            name,
            source: shown,
            problems,
        })
    }

    /// The problems of a JSONL text; an error names the line (from 1) and what is wrong.
    pub fn parse(text: &str) -> Result<Vec<Problem>, (usize, String)> {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                let row: Value = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
                let row = row
                    .as_object()
                    .ok_or_else(|| (i + 1, "not a JSON object".to_string()))?;
                problem(row, i + 1).map_err(|message| (i + 1, message))
            })
            .collect()
    }
}

/// One line's problem.
fn problem(row: &Map<String, Value>, line: usize) -> Result<Problem, String> {
    let text = |key: &str| row.get(key).and_then(Value::as_str).filter(|s| is_set(s));
    let question = text("problem")
        .or_else(|| text("question"))
        .ok_or("no `problem` or `question` string")?;
    let question = match text("context") {
        Some(context) => format!("{context}\n\n{question}"),
        None => question.to_string(),
    };
    // OlympiadBench's `solution` is a list of proofs that mark no final answer, so it is not
    // a reference solution the verifier could read an answer from.
    let solution = match row.get("solution") {
        Some(Value::String(s)) if is_set(s) => Some(s.clone()),
        _ => None,
    };
    let (gold, solution) = if let Some(list) = row.get("final_answer") {
        let multiple = matches!(row.get("is_multiple_answer"), Some(Value::Bool(true)))
            || text("is_multiple_answer") == Some("True");
        (olympiad_gold(list, multiple)?, solution)
    } else if let Some(answer) = row.get("answer") {
        match answer {
            Value::String(s) if s.contains("####") => (gsm8k_gold(s)?, Some(s.clone())),
            Value::String(s) if is_set(s) => (s.trim().to_string(), solution),
            Value::Number(n) => (number_gold(n)?, solution),
            _ => {
                return Err(format!(
                    "`answer` is not a number or a non-empty string: {answer}"
                ))
            }
        }
    } else if let Some(s) = &solution {
        let boxed = verifier::extract::final_box(s).ok_or("`solution` has no \\boxed{} answer")?;
        (boxed, solution)
    } else {
        return Err("no gold answer (`final_answer`, `answer` or a boxed `solution`)".into());
    };
    if gold.trim().is_empty() {
        return Err("the gold answer is empty".into());
    }
    let id = ["id", "unique_id", "idx"]
        .iter()
        .find_map(|key| match row.get(*key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| line.to_string());
    Ok(Problem {
        id,
        question,
        gold,
        solution,
    })
}

/// Whether a string field holds something (the Qwen2.5-Math copies write absent as "None").
fn is_set(s: &str) -> bool {
    !s.trim().is_empty() && s != "None"
}

/// GSM8K: the number after the last `####`, without thousands commas.
fn gsm8k_gold(answer: &str) -> Result<String, String> {
    let (_, last) = answer.rsplit_once("####").ok_or("no ####")?;
    Ok(last.trim().replace(',', ""))
}

/// A JSON number as written in an answer: integral floats (AMC's `27.0`) as integers.
fn number_gold(n: &serde_json::Number) -> Result<String, String> {
    if n.is_i64() || n.is_u64() {
        return Ok(n.to_string());
    }
    let x = n.as_f64().ok_or("not a finite number")?;
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Ok(format!("{}", x as i64))
    } else {
        Ok(x.to_string())
    }
}

/// OlympiadBench: `final_answer` is a list of LaTeX strings with `$` delimiters; a multiple
/// answer packs its parts into one of them (`"$69$,$84$"`, `"1,3,5"`). The gold is the parts
/// without delimiters, comma-separated: `69, 84`.
fn olympiad_gold(list: &Value, multiple: bool) -> Result<String, String> {
    let items = list
        .as_array()
        .ok_or("`final_answer` is not a list")?
        .iter()
        .map(|v| v.as_str().ok_or("`final_answer` holds a non-string"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = Vec::new();
    for item in items {
        let bare = item.replace('$', "");
        if multiple {
            parts.extend(split_top_level(&bare));
        } else {
            parts.push(bare.trim().to_string());
        }
    }
    parts.retain(|p| !p.is_empty());
    Ok(parts.join(", "))
}

/// The parts of a list at its outermost commas (those not inside brackets or braces).
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for ch in s.chars() {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(ch);
    }
    parts.push(current.trim().to_string());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Problem {
        let mut problems = Dataset::parse(line).unwrap();
        assert_eq!(problems.len(), 1);
        problems.remove(0)
    }

    #[test]
    fn each_format_gives_its_gold() {
        let math = one(
            r#"{"problem": "p", "solution": "so \\boxed{3}", "answer": "\\frac{1}{2}", "unique_id": "test/a.json"}"#,
        );
        assert_eq!(
            (math.gold.as_str(), math.id.as_str()),
            ("\\frac{1}{2}", "test/a.json")
        );
        assert_eq!(math.solution.as_deref(), Some("so \\boxed{3}"));
        let aime = one(r#"{"id": 60, "problem": "p", "answer": "025"}"#);
        assert_eq!((aime.gold.as_str(), aime.id.as_str()), ("025", "60"));
        assert_eq!(one(r#"{"problem": "p", "answer": 70}"#).gold, "70");
        assert_eq!(one(r#"{"problem": "p", "answer": 27.0}"#).gold, "27");
        assert_eq!(one(r#"{"problem": "p", "answer": -0.5}"#).gold, "-0.5");
        let gsm =
            one(r#"{"question": "q", "answer": "So 1,200 + 3 = <<1200+3=1203>>1203\n#### 1,203"}"#);
        assert_eq!(gsm.gold, "1203");
        assert!(gsm.solution.unwrap().ends_with("#### 1,203"));
        let minerva = one(
            r#"{"problem": "p", "solution": "a \\boxed{1}, so after all that the size is \\boxed{4.5e33} \\mathrm{~m}", "idx": "7"}"#,
        );
        assert_eq!(
            (minerva.gold.as_str(), minerva.id.as_str()),
            ("4.5e33", "7")
        );
    }

    #[test]
    fn olympiad_lists_and_multiple_answers() {
        let row = |answer: &str, multiple: bool| {
            one(&format!(
                r#"{{"question": "q", "context": null, "solution": ["first", "second"], "final_answer": {answer}, "is_multiple_answer": {multiple}}}"#
            ))
        };
        let single = row(r#"["$\\frac{41}{12}$"]"#, false);
        assert_eq!(
            (single.gold.as_str(), single.solution),
            ("\\frac{41}{12}", None)
        );
        assert_eq!(row(r#"["$69$,$84$"]"#, true).gold, "69, 84");
        assert_eq!(row(r#"["1,3,5"]"#, true).gold, "1, 3, 5");
        assert_eq!(
            row(r#"["$(1,8,19), (2,7,13)$"]"#, true).gold,
            "(1,8,19), (2,7,13)"
        );
        // A tuple that is one answer keeps its commas.
        assert_eq!(row(r#"["$(2,3)$"]"#, false).gold, "(2,3)");
        let with_context = one(r#"{"question": "q", "context": "c", "final_answer": ["2"]}"#);
        assert_eq!(with_context.question, "c\n\nq");
    }

    #[test]
    fn ids_default_to_line_numbers_and_blank_lines_are_skipped() {
        let problems = Dataset::parse(
            "{\"problem\": \"a\", \"answer\": \"1\"}\n\n{\"problem\": \"b\", \"answer\": \"2\"}\n",
        )
        .unwrap();
        let ids: Vec<&str> = problems.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["1", "3"]);
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, wanted) in [
            ("{\"answer\": \"1\"}", "no `problem` or `question`"),
            ("{\"problem\": \"p\"}", "no gold answer"),
            (
                "{\"problem\": \"p\", \"answer\": \"  \"}",
                "not a number or a non-empty string",
            ),
            (
                "{\"problem\": \"p\", \"solution\": \"no box\"}",
                "no \\boxed{}",
            ),
            ("[1]", "not a JSON object"),
            ("{\"problem\": ", "EOF"),
        ] {
            let text = format!("{{\"problem\": \"ok\", \"answer\": \"1\"}}\n{text}");
            let (line, message) = Dataset::parse(&text).unwrap_err();
            assert_eq!(line, 2, "{text}");
            assert!(message.contains(wanted), "{text}: {message}");
        }
    }
}
