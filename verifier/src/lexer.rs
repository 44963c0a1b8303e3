//! LaTeX (and plain text) math to tokens, with the normalisations every grader needs:
//! spacing and sizing commands dropped, `\dfrac`/`\tfrac`/`\cfrac` read as `\frac`, degree
//! marks dropped, `\%`/`percent` read as `%`, `{,}` and thousands separators joined,
//! `\text{...}` read as words (or as math when it holds math).

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Digits with an optional decimal point.
    Num(String),
    /// One letter.
    Letter(char),
    /// A word: `\text{...}` content or a run of two or more letters.
    Word(String),
    /// A LaTeX command without its backslash (`frac`, `sqrt`, `pi`, ...).
    Cmd(String),
    /// Punctuation and operators: `+ - * / ^ _ ! = < > , ; : | ( ) [ ] { } & % '`.
    Op(char),
    /// `\le`, `<=`.
    Le,
    /// `\ge`, `>=`.
    Ge,
    /// `\ne`.
    Ne,
    /// `\{`.
    SetOpen,
    /// `\}`.
    SetClose,
    /// `\\` between matrix rows.
    RowSep,
    /// `\begin{name}`.
    Begin(String),
    /// `\end{name}`.
    End(String),
    /// A list separator spelled as a word (`and`, `or`).
    Sep,
    /// `\approx`: what follows it is an approximation of what precedes it.
    Approx,
}

/// Commands that only affect spacing or size.
const IGNORED: &[&str] = &[
    "left",
    "right",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "biggl",
    "biggr",
    "Biggl",
    "Biggr",
    "displaystyle",
    "textstyle",
    "scriptstyle",
    "limits",
    "nolimits",
    "quad",
    "qquad",
    "middle",
    "hfill",
    "phantom",
    "nonumber",
    "notag",
    "mkern",
    "hline",
    "centering",
    "allowbreak",
];

/// Commands whose braced argument is text.
const TEXT_CMDS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textsf",
    "texttt",
    "mbox",
    "hbox",
    "textnormal",
    "emph",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mathnormal",
    "operatorname",
];

/// Words read as `%`.
const PERCENT_WORDS: &[&str] = &["percent", "percentage", "pct", "percents"];

fn read_group(chars: &[char], i: &mut usize) -> Option<String> {
    // Skips spaces, then reads a balanced {...} group (without the braces).
    while *i < chars.len() && chars[*i].is_whitespace() {
        *i += 1;
    }
    if *i >= chars.len() || chars[*i] != '{' {
        return None;
    }
    let mut depth = 0;
    let start = *i + 1;
    while *i < chars.len() {
        match chars[*i] {
            '\\' => *i += 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let s: String = chars[start..*i].iter().collect();
                    *i += 1;
                    return Some(s);
                }
            }
            _ => {}
        }
        *i += 1;
    }
    None
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

fn is_greek(c: char) -> bool {
    ('\u{391}'..='\u{3C9}').contains(&c)
}

/// Splits `src` into tokens; `None` if it holds something no answer holds.
pub fn lex(src: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    lex_into(&chars, &mut out, 0)?;
    Some(out)
}

fn lex_into(chars: &[char], out: &mut Vec<Tok>, depth: usize) -> Option<()> {
    if depth > 32 {
        return None;
    }
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == '~' || c == '$' {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut s = String::new();
            // Integer part, joining thousands separators (`1,000`, `1{,}000`, `1\,000`): the
            // first group has 1-3 digits and no leading 0, later groups exactly 3.
            let (mut group_len, mut grouped) = (0usize, false);
            loop {
                while i < chars.len() && chars[i].is_ascii_digit() {
                    s.push(chars[i]);
                    group_len += 1;
                    i += 1;
                }
                let sep = separator_len(chars, i);
                let valid_group = if grouped {
                    group_len == 3
                } else {
                    (1..=3).contains(&group_len) && !s.starts_with('0')
                };
                if sep > 0
                    && valid_group
                    && chars.len() >= i + sep + 3
                    && chars[i + sep..i + sep + 3]
                        .iter()
                        .all(|d| d.is_ascii_digit())
                    && !chars.get(i + sep + 3).is_some_and(|d| d.is_ascii_digit())
                {
                    i += sep;
                    grouped = true;
                    group_len = 0;
                    continue;
                }
                break;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                s.push('.');
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    s.push(chars[i]);
                    i += 1;
                }
            }
            out.push(Tok::Num(s));
            continue;
        }
        if is_letter(c) {
            let start = i;
            while i < chars.len() && is_letter(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.chars().count() == 1 && is_greek(c) {
                out.push(Tok::Letter(c));
            } else if word.is_ascii() {
                push_word(out, &word);
            } else {
                // Prose in another script, or accented words.
                out.push(Tok::Word(word));
            }
            continue;
        }
        if c.is_alphanumeric() || (!c.is_ascii() && !"≤≥≠≈°×·⋅÷−–π∞√⩽⩾".contains(c))
        {
            // Other scripts' digits and punctuation (`，`, `。`): prose.
            out.push(Tok::Word(c.to_string()));
            i += 1;
            continue;
        }
        if c == '\\' {
            let next = chars.get(i + 1).copied();
            match next {
                Some('\\') => {
                    // `\\name` (doubly escaped command) or a row separator.
                    if chars.get(i + 2).is_some_and(|d| d.is_ascii_alphabetic()) {
                        i += 1;
                        continue;
                    }
                    out.push(Tok::RowSep);
                    i += 2;
                }
                Some('{') => {
                    out.push(Tok::SetOpen);
                    i += 2;
                }
                Some('}') => {
                    out.push(Tok::SetClose);
                    i += 2;
                }
                Some('%') => {
                    out.push(Tok::Op('%'));
                    i += 2;
                }
                Some('$') | Some('#') | Some('&') | Some('_') => {
                    i += 2;
                }
                Some(',') | Some(';') | Some(':') | Some('!') | Some(' ') | Some('>') => {
                    i += 2;
                }
                Some('(') | Some(')') | Some('[') | Some(']') => {
                    // Math delimiters: boundaries, not brackets.
                    i += 2;
                }
                Some(d) if d.is_ascii_alphabetic() => {
                    let start = i + 1;
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_alphabetic() {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    lex_command(chars, &mut i, &name, out, depth)?;
                }
                _ => i += 1,
            }
            continue;
        }
        match c {
            '<' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Le);
                i += 2;
            }
            '>' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Ge);
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Ne);
                i += 2;
            }
            '≤' | '⩽' => {
                out.push(Tok::Le);
                i += 1;
            }
            '≥' | '⩾' => {
                out.push(Tok::Ge);
                i += 1;
            }
            '≈' => {
                out.push(Tok::Approx);
                i += 1;
            }
            '≠' => {
                out.push(Tok::Ne);
                i += 1;
            }
            '°' => i += 1,
            '×' | '·' | '⋅' => {
                out.push(Tok::Op('*'));
                i += 1;
            }
            '÷' => {
                out.push(Tok::Op('/'));
                i += 1;
            }
            '−' | '–' => {
                out.push(Tok::Op('-'));
                i += 1;
            }
            'π' => {
                out.push(Tok::Cmd("pi".into()));
                i += 1;
            }
            '∞' => {
                out.push(Tok::Cmd("infty".into()));
                i += 1;
            }
            '√' => {
                out.push(Tok::Cmd("sqrt".into()));
                i += 1;
            }
            '+' | '-' | '*' | '/' | '^' | '_' | '!' | '=' | '<' | '>' | ',' | ';' | ':' | '|'
            | '(' | ')' | '[' | ']' | '{' | '}' | '&' | '%' | '\'' => {
                // `^\circ` and `^{\circ}`: degrees, dropped.
                if c == '^' {
                    let rest: String = chars[i + 1..chars.len().min(i + 12)].iter().collect();
                    let rest = rest.trim_start();
                    if rest.starts_with("\\circ")
                        || rest.starts_with("{\\circ}")
                        || rest.starts_with("{ \\circ }")
                    {
                        let skip = if rest.starts_with('{') {
                            rest.find('}').map_or(0, |p| p + 1)
                        } else {
                            5
                        };
                        i += 1
                            + (chars[i + 1..]
                                .iter()
                                .take_while(|c| c.is_whitespace())
                                .count())
                            + skip;
                        continue;
                    }
                }
                out.push(Tok::Op(c));
                i += 1;
            }
            _ => i += 1,
        }
    }
    Some(())
}

/// Length of a thousands separator at `i`: `,` (optionally followed by `\!` and spaces),
/// `{,}` or `\,`; 0 if none.
fn separator_len(chars: &[char], i: usize) -> usize {
    let rest = &chars[i.min(chars.len())..];
    if rest.starts_with(&[',', '\\', '!']) {
        3 + rest[3..].iter().take_while(|c| **c == ' ').count()
    } else if rest.first() == Some(&',') {
        1
    } else if rest.starts_with(&['{', ',', '}']) {
        3
    } else if rest.starts_with(&['\\', ',']) {
        2
    } else {
        0
    }
}

fn push_word(out: &mut Vec<Tok>, word: &str) {
    let lower = word.to_ascii_lowercase();
    if lower == "and" || lower == "or" {
        out.push(Tok::Sep);
    } else if PERCENT_WORDS.contains(&lower.as_str()) {
        out.push(Tok::Op('%'));
    } else if lower == "degrees" || lower == "degree" {
        // Degree marks are dropped.
    } else if word.chars().count() == 1 {
        out.push(Tok::Letter(word.chars().next().unwrap_or('x')));
    } else {
        out.push(Tok::Word(word.to_string()));
    }
}

fn lex_command(
    chars: &[char],
    i: &mut usize,
    name: &str,
    out: &mut Vec<Tok>,
    depth: usize,
) -> Option<()> {
    if IGNORED.contains(&name) {
        return Some(());
    }
    if name == "hspace" || name == "vspace" || name == "phantom" || name == "label" {
        read_group(chars, i);
        return Some(());
    }
    if TEXT_CMDS.contains(&name) {
        let Some(content) = read_group(chars, i) else {
            return Some(());
        };
        let trimmed = content.trim();
        if trimmed.is_empty() {
            return Some(());
        }
        let plain = trimmed
            .chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '.' || c == '\'');
        if name == "operatorname" {
            out.push(Tok::Cmd(trimmed.to_string()));
        } else if plain
            && (name.starts_with("text")
                || name == "mbox"
                || name == "hbox"
                || name == "emph"
                || name == "mathrm")
        {
            for w in trimmed.split_whitespace() {
                let w = w.trim_matches(|c| c == '.' || c == '\'');
                if w.is_empty() {
                    continue;
                }
                let lower = w.to_ascii_lowercase();
                if lower == "and" || lower == "or" {
                    out.push(Tok::Sep);
                } else if PERCENT_WORDS.contains(&lower.as_str()) {
                    out.push(Tok::Op('%'));
                } else if w.chars().count() == 1 && name != "text" {
                    out.push(Tok::Letter(w.chars().next().unwrap()));
                } else {
                    out.push(Tok::Word(w.to_string()));
                }
            }
        } else {
            let inner: Vec<char> = content.chars().collect();
            lex_into(&inner, out, depth + 1)?;
        }
        return Some(());
    }
    match name {
        "begin" | "end" => {
            let env = read_group(chars, i).unwrap_or_default();
            let env = env.trim_end_matches('*').to_string();
            if env == "array" {
                // Column spec.
                read_group(chars, i);
            }
            out.push(if name == "begin" {
                Tok::Begin(env)
            } else {
                Tok::End(env)
            });
        }
        "le" | "leq" | "leqslant" | "leqq" => out.push(Tok::Le),
        "ge" | "geq" | "geqslant" | "geqq" => out.push(Tok::Ge),
        "ne" | "neq" => out.push(Tok::Ne),
        "lt" => out.push(Tok::Op('<')),
        "gt" => out.push(Tok::Op('>')),
        "approx" | "simeq" | "thickapprox" => out.push(Tok::Approx),
        "equiv" | "cong" => out.push(Tok::Op('=')),
        "cdot" | "times" | "ast" | "bullet" => out.push(Tok::Op('*')),
        "div" => out.push(Tok::Op('/')),
        "colon" => out.push(Tok::Op(':')),
        "lvert" | "rvert" | "vert" | "mid" => out.push(Tok::Op('|')),
        "lbrace" => out.push(Tok::SetOpen),
        "rbrace" => out.push(Tok::SetClose),
        "langle" => out.push(Tok::Op('(')),
        "rangle" => out.push(Tok::Op(')')),
        "dfrac" | "tfrac" | "cfrac" => out.push(Tok::Cmd("frac".into())),
        "dbinom" | "tbinom" => out.push(Tok::Cmd("binom".into())),
        "circ" | "degree" => {}
        "dots" | "ldots" | "cdots" => out.push(Tok::Cmd("dots".into())),
        "land" | "wedge" => out.push(Tok::Sep),
        "lor" | "vee" => out.push(Tok::Sep),
        "textdollar" | "dollar" => {}
        "pmod" | "bmod" | "mod" => out.push(Tok::Cmd("mod".into())),
        _ => {
            if let Some(prefix) = KNOWN_PREFIXES
                .iter()
                .find(|p| name.len() > p.len() && name.starts_with(**p))
            {
                lex_command(chars, i, prefix, out, depth)?;
                let rest: Vec<char> = name[prefix.len()..].chars().collect();
                lex_into(&rest, out, depth + 1)?;
            } else {
                out.push(Tok::Cmd(name.to_string()));
            }
        }
    }
    Some(())
}

/// Commands that answers run into the next word without a space (`\quadx`, `\cdotx`),
/// longest first.
const KNOWN_PREFIXES: &[&str] = &[
    "qquad", "infty", "times", "right", "quad", "left", "cdot", "sqrt", "frac", "circ", "pi",
];
