//! Math answer verification for RL rewards: does a model's response answer a gold answer?
//!
//! ```
//! let v = verifier::verify(r"\frac{1}{2}", r"so the answer is \boxed{0.5}", &Default::default());
//! assert!(v.correct);
//! ```
//!
//! [`verify`] extracts the final answer from the response ([`extract`]), parses both sides
//! into a small math AST ([`lexer`], [`parser`], [`ast`]) and compares them ([`compare`]):
//! exact rational arithmetic where the values are rational, decimal-rounding rules where one
//! side is a decimal, and evaluation at sample points for expressions with variables. Every
//! call runs under a step and time budget and never panics; past the budget it answers
//! `timed_out`.

pub mod ast;
pub mod compare;
pub mod eval;
pub mod extract;
pub mod lexer;
pub mod parser;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use extract::ExtractionConfig;

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The answer equals the gold answer.
    Correct,
    /// An answer was found and parsed, and it differs.
    Wrong,
    /// The response holds no answer.
    NoAnswer,
    /// An answer was found but could not be read as math (and did not match as text).
    Unparsable,
    /// The budget ran out before a verdict.
    TimedOut,
}

impl Status {
    /// Every status, in declaration order (dashboards and metrics list them all up front).
    pub const ALL: [Status; 5] = [
        Status::Correct,
        Status::Wrong,
        Status::NoAnswer,
        Status::Unparsable,
        Status::TimedOut,
    ];

    /// The status as it appears in JSON and in metric labels (`status_names_match_json`
    /// checks it against serde).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Correct => "correct",
            Status::Wrong => "wrong",
            Status::NoAnswer => "no_answer",
            Status::Unparsable => "unparsable",
            Status::TimedOut => "timed_out",
        }
    }
}

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the response is correct.
    pub correct: bool,
    /// How the verification ended.
    pub status: Status,
    /// The answer extracted from the response.
    pub extracted_pred: Option<String>,
    /// The gold answer as extracted.
    pub extracted_gold: Option<String>,
}

/// Verifier settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where answers are looked for in responses.
    pub extraction: ExtractionConfig,
    /// Wall-time bound of one call.
    pub time_limit: Duration,
    /// Evaluation-step bound of one call.
    pub max_steps: u64,
    /// Longest answer (in characters) that is parsed; longer ones are compared as text.
    pub max_answer_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            extraction: ExtractionConfig::default(),
            time_limit: Duration::from_millis(50),
            max_steps: 200_000,
            max_answer_chars: 2_000,
        }
    }
}

/// Parses one answer string.
pub fn parse_answer(s: &str, max_chars: usize) -> Option<ast::Node> {
    if s.chars().count() > max_chars {
        return None;
    }
    let s = normalize_whole(s);
    let tokens = lexer::lex(&s)?;
    if tokens.is_empty() || tokens.len() > 4 * max_chars {
        return None;
    }
    parser::parse(&tokens)
}

/// Whole-answer rewrites that depend on the answer being only a number: a decimal comma
/// (`1,22`, `0,111`, `1000,99`; two or more digits after it) and space-separated thousands
/// (`1 000`).
fn normalize_whole(s: &str) -> String {
    let t = s.trim().trim_matches('$').trim();
    let digits_comma = |t: &str| {
        let t = t.strip_prefix('-').unwrap_or(t);
        match t.split_once(',') {
            Some((a, b)) => {
                !a.is_empty()
                    && !b.is_empty()
                    && a.chars().all(|c| c.is_ascii_digit())
                    && b.chars().all(|c| c.is_ascii_digit())
            }
            None => false,
        }
    };
    if digits_comma(t) {
        let (a, b) = t.split_once(',').unwrap_or((t, ""));
        let a_digits = a.trim_start_matches('-');
        let thousands =
            b.len() == 3 && (1..=3).contains(&a_digits.len()) && !a_digits.starts_with('0');
        // `2,1` is a list; `1,22`, `0,111`, `1000,99` are decimals.
        if !thousands && b.len() >= 2 {
            return format!("{a}.{b}");
        }
    }
    let groups: Vec<&str> = t.split(' ').collect();
    if groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
    {
        return groups.concat();
    }
    s.to_string()
}

/// A loose textual form, for answers that match as written even if they do not parse.
fn text_key(s: &str) -> String {
    let mut t = s.replace("\\boxed{}", "");
    for pat in [
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\displaystyle",
        "$",
        "\\dfrac",
        "\\tfrac",
    ] {
        let rep = if pat.ends_with("frac") { "\\frac" } else { "" };
        t = t.replace(pat, rep);
    }
    t.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
}

/// Verifies `pred` (a response or an answer) against `gold` (an answer or a solution).
pub fn verify(gold: &str, pred: &str, config: &Config) -> Verdict {
    let mut budget = eval::Budget::new(config.max_steps, config.time_limit);
    let gold_cands = extract::gold_candidates(gold);
    let gold_parsed = gold_cands
        .iter()
        .find_map(|c| parse_answer(c, config.max_answer_chars).map(|n| (c.clone(), n)));
    let pred_cands = extract::pred_candidates(pred, &config.extraction);
    let first_pred = pred_cands.first().cloned();
    let Some(first_pred) = first_pred else {
        return Verdict {
            correct: false,
            status: Status::NoAnswer,
            extracted_pred: None,
            extracted_gold: gold_parsed.map(|(c, _)| c),
        };
    };
    let gold_text = gold_parsed
        .as_ref()
        .map(|(c, _)| c.clone())
        .or_else(|| gold_cands.first().cloned());
    // A gold answer that is one capital letter makes this a multiple-choice question.
    let choice = gold_parsed.as_ref().and_then(|(_, g)| match g {
        ast::Node::Sym(s) | ast::Node::Text(s)
            if s.len() == 1 && s.chars().all(|c| c.is_ascii_uppercase()) =>
        {
            s.chars().next()
        }
        _ => None,
    });
    let pred_cands = match choice {
        Some(letter) => {
            let letters: Vec<char> = ('A'..=letter.max('D')).collect();
            let mut c = extract::choice_candidates(pred, &letters);
            c.extend(pred_cands);
            c
        }
        None => pred_cands,
    };
    // The first candidate that parses is the answer.
    let pred_parsed = pred_cands
        .iter()
        .find_map(|c| parse_answer(c, config.max_answer_chars).map(|n| (c.clone(), n)));
    let (status, extracted) = match (&gold_parsed, &pred_parsed) {
        (Some((_, g)), Some((pc, p))) => {
            let eq = compare::equivalent(g, p, &mut budget);
            let status = if eq {
                Status::Correct
            } else if budget.exhausted() {
                Status::TimedOut
            } else if gold_text.as_deref().map(text_key) == Some(text_key(pc)) {
                Status::Correct
            } else {
                Status::Wrong
            };
            (status, pc.clone())
        }
        _ => {
            let matched = gold_text
                .as_deref()
                .map(text_key)
                .is_some_and(|g| !g.is_empty() && g == text_key(&first_pred));
            let status = if matched {
                Status::Correct
            } else if pred_parsed.is_none() {
                Status::Unparsable
            } else {
                Status::Wrong
            };
            (status, first_pred)
        }
    };
    Verdict {
        correct: status == Status::Correct,
        status,
        extracted_pred: Some(extracted),
        extracted_gold: gold_text,
    }
}
