//! Finding the final answer in a model response (and in a gold answer or solution).
//!
//! Candidates come in priority order: the last `\boxed{}`/`\fbox{}` (with boxes just before
//! it joined into a list, as in `\boxed{1} and \boxed{2}`) or the line after the last answer
//! anchor (`final answer is`, `answer:`, `####`, `A:`, and a few other languages), whichever
//! comes later; then the last math span (`$...$`, `$$...$$`, `\(...\)`, `\[...\]`) and the
//! last number, the later one first, with the whole text (when short) between them.

/// Which extraction targets to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractionConfig {
    /// The last `\boxed{...}` / `\fbox{...}`.
    pub boxed: bool,
    /// "final answer is", "answer:", "####", "A:".
    pub anchors: bool,
    /// The last `$...$`-style math span.
    pub last_math: bool,
    /// The whole text, when it is a short answer (at most two words, 200 characters).
    pub whole_text: bool,
    /// The last number in the text (reward-hackable: off for strict graders).
    pub last_number: bool,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        Self {
            boxed: true,
            anchors: true,
            last_math: true,
            whole_text: true,
            last_number: true,
        }
    }
}

/// The contents of every balanced `\boxed{...}` / `\fbox{...}` with their byte spans.
fn boxes(text: &str) -> Vec<(usize, usize, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let skip = if rest.starts_with("\\boxed") {
            6
        } else if rest.starts_with("\\fbox") {
            5
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let start = i;
        let j = i + skip;
        if bytes.get(j) == Some(&b'{') {
            let mut depth = 0usize;
            let mut k = j;
            let mut end = None;
            while k < bytes.len() {
                match bytes[k] {
                    b'\\' => k += 1,
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(k);
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            match end {
                Some(e) => {
                    out.push((start, e + 1, text[j + 1..e].to_string()));
                    i = e + 1;
                }
                None => i = j + 1,
            }
        } else if bytes.get(j) == Some(&b' ') {
            // `\boxed 5`: up to the next space or `$`.
            let from = j + 1;
            let len = text[from..]
                .find(|c: char| c.is_whitespace() || c == '$')
                .unwrap_or(text.len() - from);
            if len > 0 {
                out.push((start, from + len, text[from..from + len].to_string()));
            }
            i = from + len.max(1);
        } else {
            i = j;
        }
    }
    out
}

/// The final boxed answer of a text as the grader reads it: the last box, with a list of boxes
/// just before it (see [`last_boxed`]). Datasets whose gold answers sit in their solutions'
/// boxes (Minerva) are read with it.
pub fn final_box(text: &str) -> Option<String> {
    last_boxed(text).map(|(_, b)| b)
}

/// The last box, joined with the boxes just before it when the gap between them is short or
/// ends in a list separator (`\boxed{1} and \boxed{2}`); repeated boxes count once.
fn last_boxed(text: &str) -> Option<(usize, String)> {
    let all = boxes(text);
    let (mut start, end, last) = all.last()?.clone();
    let mut parts = vec![last];
    for (s, e, content) in all.iter().rev().skip(1) {
        let gap = strip_markup(&text[*e..start]);
        let lower = gap.to_ascii_lowercase();
        let ends_in_separator = [",", ";", "and", "or", "&"]
            .iter()
            .any(|sep| lower.ends_with(sep));
        let n = gap.chars().count();
        if n < 10 || (n < 70 && ends_in_separator) {
            if !parts.contains(content) {
                parts.push(content.clone());
            }
            start = *s;
        } else {
            break;
        }
    }
    parts.reverse();
    Some((end, parts.join(", ")))
}

/// A gap between boxes without math delimiters, `\text{`, `\quad` and punctuation.
fn strip_markup(gap: &str) -> String {
    let mut g = gap.to_string();
    for pat in [
        "\\text{", "\\mbox{", "\\qquad", "\\quad", "\\(", "\\)", "\\[", "\\]", "$", "}", "{", ".",
    ] {
        g = g.replace(pat, " ");
    }
    g.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Answer anchors, in any case; the last one in the text counts.
const ANCHORS: &[&str] = &[
    "final answer is",
    "final answer:",
    "the answer is",
    "answer is",
    "answer:",
    "answer :",
    "####",
    "réponse est",
    "réponse :",
    "réponse:",
    "respuesta es",
    "respuesta:",
    "antwort ist",
    "antwort:",
    "答案是",
    "答案：",
    "答案:",
];

/// The position where the last anchor ends, and the rest of its line.
fn after_anchor(text: &str) -> Option<(usize, String)> {
    let lower = text.to_lowercase();
    let mut best: Option<(usize, usize)> = None;
    for a in ANCHORS {
        if let Some(pos) = lower.rfind(a) {
            if best.is_none_or(|(p, _)| pos > p) {
                best = Some((pos, pos + a.len()));
            }
        }
    }
    // GSM8K-style `A: 26` at the start of a line.
    if let Some(pos) = text
        .rfind("\nA:")
        .map(|p| p + 1)
        .or_else(|| text.starts_with("A:").then_some(0))
    {
        if best.is_none_or(|(p, _)| pos > p) {
            best = Some((pos, pos + 2));
        }
    }
    let (_, end) = best?;
    // Lower-casing can change byte lengths; then read the rest from the lower-cased text.
    let rest = if lower.len() == text.len() {
        text.get(end..)
    } else {
        lower.get(end..)
    }?;
    let rest = rest.trim_start_matches([':', ' ', '\t', '：']);
    // The answer may start on the next line.
    let line = rest.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let line = cut_sentence(line);
    let line = line.trim().trim_end_matches(['.', ',', '。']).trim();
    (!line.is_empty()).then(|| (end, line.to_string()))
}

/// Candidates within an anchor's line: its math, what follows its last "is", the line, and
/// the line without non-ASCII text.
fn anchor_line_candidates(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let lower = line.to_lowercase();
    for verb in [" is ", " est ", " es ", " ist ", "是", "为"] {
        if let Some(p) = lower.rfind(verb) {
            if let Some(tail) = line.get(p + verb.len()..) {
                out.push(tail.trim().to_string());
            }
            break;
        }
    }
    out.extend(last_math(line).map(|(_, m)| m));
    out.push(line.to_string());
    out.extend(first_number(line));
    out
}

/// Cuts a line at the end of its first sentence (". " outside math).
fn cut_sentence(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, w) in bytes.windows(2).enumerate() {
        if w == b". " {
            let before = &line[..i];
            if before.matches('$').count().is_multiple_of(2) {
                return before;
            }
        }
    }
    line
}

/// The end and content of the last math span.
fn last_math(text: &str) -> Option<(usize, String)> {
    let mut best: Option<(usize, String)> = None;
    let mut consider = |end: usize, content: &str| {
        if !content.trim().is_empty() && best.as_ref().is_none_or(|(e, _)| end > *e) {
            best = Some((end, content.to_string()));
        }
    };
    for (open, close, multiline) in [
        ("$$", "$$", true),
        ("\\[", "\\]", true),
        ("\\(", "\\)", false),
    ] {
        let mut from = 0;
        while let Some(s) = text[from..].find(open) {
            let s = from + s + open.len();
            let Some(len) = text[s..].find(close) else {
                break;
            };
            let content = &text[s..s + len];
            if multiline || !content.contains('\n') {
                consider(s + len, content);
            }
            from = s + len + close.len();
        }
    }
    // Single `$...$`, skipping `$$` pairs and escaped `\$`.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut open: Option<usize> = None;
    let mut k = 0;
    while k < chars.len() {
        let (pos, c) = chars[k];
        let escaped = k > 0 && chars[k - 1].1 == '\\';
        if c == '$' && !escaped {
            if chars.get(k + 1).is_some_and(|&(_, d)| d == '$') {
                let after = pos + 2;
                match text[after..].find("$$") {
                    Some(l) => {
                        let end = after + l + 2;
                        while k < chars.len() && chars[k].0 < end {
                            k += 1;
                        }
                        open = None;
                        continue;
                    }
                    None => {
                        k += 2;
                        continue;
                    }
                }
            }
            match open {
                None => open = Some(pos + 1),
                Some(s) => {
                    let content = &text[s..pos];
                    if !content.contains('\n') {
                        consider(pos, content);
                    }
                    open = None;
                }
            }
        }
        k += 1;
    }
    best
}

/// The end and text of the last number (`-1,234.5`, `.5`, `2/3`).
fn last_number(text: &str) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        if bytes[i].is_ascii_digit() {
            let end = i + 1;
            let mut start = i;
            while start > 0 {
                let c = bytes[start - 1];
                if c.is_ascii_digit()
                    || ((c == b'.' || c == b',' || c == b'/')
                        && start >= 2
                        && bytes[start - 2].is_ascii_digit())
                {
                    start -= 1;
                } else {
                    break;
                }
            }
            if start > 0 && bytes[start - 1] == b'.' {
                start -= 1;
            }
            if start > 0 && bytes[start - 1] == b'-' {
                start -= 1;
            }
            // A number glued to a preceding word (`AZYUK2A`, `x2`) is part of that word.
            if start > 0 && bytes[start - 1].is_ascii_alphabetic() {
                i = start;
                continue;
            }
            return Some((end, text[start..end].to_string()));
        }
    }
    None
}

/// The first number of a line.
fn first_number(line: &str) -> Option<String> {
    let start = line.find(|c: char| c.is_ascii_digit())?;
    let len = line[start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(line.len() - start);
    Some(
        line[start..start + len]
            .trim_end_matches(['.', ','])
            .to_string(),
    )
}

/// Whether a text is short enough to be an answer by itself: at most 200 characters and at
/// most two words of three or more letters (`28 percent`, `\text{Evelyn}`, not a sentence).
fn is_short_answer(text: &str) -> bool {
    let t = text.trim();
    let words = t
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 3)
        .filter(|w| {
            !matches!(
                *w,
                "frac"
                    | "dfrac"
                    | "tfrac"
                    | "sqrt"
                    | "text"
                    | "boxed"
                    | "left"
                    | "right"
                    | "cdot"
                    | "times"
                    | "infty"
                    | "begin"
                    | "end"
                    | "pmatrix"
                    | "bmatrix"
                    | "mathrm"
                    | "textbf"
            )
        })
        .count();
    t.chars().count() <= 200 && words <= 2
}

/// The part of a response after its reasoning (`</think>`), if it has one, without trailing
/// special tokens (`<|endoftext|>`, `<|im_end|>`).
fn strip_thinking(text: &str) -> &str {
    let mut t = match text.rfind("</think>") {
        Some(p) => &text[p + "</think>".len()..],
        None => text,
    };
    while let Some(p) = t.trim_end().strip_suffix("|>").and_then(|s| s.rfind("<|")) {
        t = &t[..p];
    }
    t
}

/// Answer candidates of a model response, best first.
pub fn pred_candidates(response: &str, cfg: &ExtractionConfig) -> Vec<String> {
    let text = strip_thinking(response);
    let mut out = Vec::new();
    let boxed = if cfg.boxed { last_boxed(text) } else { None };
    let anchor = if cfg.anchors {
        after_anchor(text)
    } else {
        None
    };
    // A box and an anchor: the later one is the final answer.
    let anchor_first =
        matches!((&boxed, &anchor), (Some((b, _)), Some((a, _))) if a > b) || boxed.is_none();
    if anchor_first {
        if let Some((_, line)) = &anchor {
            out.extend(anchor_line_candidates(line));
        }
        out.extend(boxed.map(|(_, b)| b));
    } else {
        out.extend(boxed.map(|(_, b)| b));
        if let Some((_, line)) = &anchor {
            out.extend(anchor_line_candidates(line));
        }
    }
    let math = if cfg.last_math { last_math(text) } else { None };
    let number = if cfg.last_number {
        last_number(text)
    } else {
        None
    };
    let whole = (cfg.whole_text && is_short_answer(text)).then(|| text.trim().to_string());
    // The last math span and the last number: the later one first.
    match (math, number) {
        (Some((me, m)), Some((ne, n))) if ne > me => {
            out.extend(whole);
            out.push(n);
            out.push(m);
        }
        (m, n) => {
            out.extend(m.map(|(_, m)| m));
            out.extend(whole);
            out.extend(n.map(|(_, n)| n));
        }
    }
    out
}

/// Answer candidates of a gold answer or solution: its box, its anchor, the whole of it, its
/// last math span. (A gold answer that parses as none of these is compared as text.)
pub fn gold_candidates(gold: &str) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(last_boxed(gold).map(|(_, b)| b));
    if let Some((_, line)) = after_anchor(gold) {
        out.extend(anchor_line_candidates(&line));
    }
    out.push(gold.trim().to_string());
    out.extend(last_math(gold).map(|(_, m)| m));
    out
}

/// Candidate letters of a multiple-choice response, best first: a boxed letter, the first
/// letter after an anchor, a letter opening the response, the last standalone letter.
pub fn choice_candidates(response: &str, letters: &[char]) -> Vec<String> {
    let text = strip_thinking(response);
    let standalone = |s: &str| -> Vec<char> {
        let chars: Vec<char> = s.chars().collect();
        (0..chars.len())
            .filter(|&i| {
                letters.contains(&chars[i])
                    && !(i > 0 && chars[i - 1].is_ascii_alphabetic())
                    && !chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic())
            })
            .map(|i| chars[i])
            .collect()
    };
    let mut out = Vec::new();
    if let Some((_, b)) = last_boxed(text) {
        out.extend(standalone(&b).first().map(char::to_string));
    }
    if let Some((_, line)) = after_anchor(text) {
        out.extend(standalone(&line).first().map(char::to_string));
    }
    let trimmed = text.trim_start().trim_start_matches(['(', '*']);
    if let Some(first) = standalone(trimmed).first() {
        if trimmed.starts_with(*first) {
            out.push(first.to_string());
        }
    }
    out.extend(standalone(text).last().map(char::to_string));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_nest_and_join() {
        let content = |t: &str| last_boxed(t).map(|(_, c)| c);
        assert_eq!(
            content(r"so \boxed{\frac{1}{2}}."),
            Some(r"\frac{1}{2}".into())
        );
        assert_eq!(content(r"\boxed{1} and \boxed{2}"), Some("1, 2".into()));
        assert_eq!(content(r"\boxed{4} so finally \boxed{4}"), Some("4".into()));
        assert_eq!(content(r"\fbox{7}"), Some("7".into()));
        assert_eq!(content(r"\boxed 5$"), Some("5".into()));
        assert_eq!(
            content(r"\boxed{3} then a long detour of many words \boxed{4}"),
            Some("4".into())
        );
        assert_eq!(content(r"\boxed{unbalanced"), None);
    }

    #[test]
    fn anchors_math_and_numbers() {
        let line = |t: &str| after_anchor(t).map(|(_, l)| l);
        assert_eq!(line("so\nA: 26"), Some("26".into()));
        assert_eq!(
            line("The final answer is $5$. I hope it is correct."),
            Some("$5$".into())
        );
        assert_eq!(
            last_math(r"Answer $ 9 $ and \( 10 \)").map(|m| m.1),
            Some(" 10 ".into())
        );
        assert_eq!(last_math("Answer $ \n 9 \n $"), None);
        assert_eq!(
            last_number("it costs 1,234.5 dollars").map(|n| n.1),
            Some("1,234.5".into())
        );
        assert_eq!(last_number("so 2/3.").map(|n| n.1), Some("2/3".into()));
        assert_eq!(last_number("no digits"), None);
        assert_eq!(
            choice_candidates("D. it can't be A or B", &['A', 'B', 'C', 'D']),
            vec!["D", "B"]
        );
        assert_eq!(
            choice_candidates("The answer is for sure D, not A", &['A', 'B', 'C', 'D']),
            vec!["D", "A"]
        );
    }
}
