//! Tokens to [`Node`]: a recursive-descent parser for the math that answers are written in.
//!
//! Precedence, loosest first: list separators (`,` `;` `and` `or`) → relations (`=` `<` `\le`
//! `\in` ...) → ratio `:` → union `\cup` → sums (`+` `-` `\pm`) → products (`*` `/`, implicit)
//! → unary minus → powers and postfix (`^` `!` `%`) → atoms. Words after a value are units and
//! are dropped; an answer that is only words is text.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

use crate::ast::{Node, Rel};
use crate::lexer::Tok;

/// Names read as functions of one argument.
const FUNCTIONS: &[&str] = &[
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "ln", "log", "lg", "exp", "det", "gcd", "lcm", "max", "min",
];

/// Greek letters and other commands read as symbols.
const SYMBOL_CMDS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
    "ell",
];

/// Commands whose braced argument is the thing itself (`\boxed{x}` is `x`).
const WRAPPERS: &[&str] = &[
    "boxed",
    "fbox",
    "overline",
    "underline",
    "vec",
    "hat",
    "bar",
    "tilde",
    "mathbb",
    "mathcal",
    "mathfrak",
    "widehat",
    "overrightarrow",
    "bold",
    "boldsymbol",
    "bm",
];

/// Nesting bound, so that hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Parses a token stream into one answer.
pub fn parse(tokens: &[Tok]) -> Option<Node> {
    let mut p = Parser {
        toks: tokens.to_vec(),
        pos: 0,
        depth: 0,
    };
    let node = p.list(&[])?;
    if p.pos < p.toks.len() {
        return None;
    }
    // Postfix and left-associative chains (`9!!!…`, `a/b/c/…`, `x^2^2…`) build deep trees
    // without recursing here; everything that walks the tree recurses, so bound its depth.
    node.depth_at_most(MAX_TREE_DEPTH).then_some(node)
}

/// Deepest tree any later stage walks.
const MAX_TREE_DEPTH: usize = 256;

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

fn int(n: i64) -> Node {
    Node::Int(BigRational::from_integer(BigInt::from(n)))
}

fn number(s: &str) -> Option<Node> {
    match s.split_once('.') {
        None => Some(Node::Int(BigRational::from_integer(
            s.parse::<BigInt>().ok()?,
        ))),
        Some((whole, frac)) => {
            let digits = format!("{whole}{frac}");
            let num: BigInt = if digits.is_empty() {
                BigInt::zero()
            } else {
                digits.parse().ok()?
            };
            let places = frac.len() as u32;
            if places > 4096 {
                return None;
            }
            let den = num_traits::pow(BigInt::from(10), places as usize);
            Some(Node::Dec(BigRational::new(num, den), places))
        }
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k)
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn at_end(&self, stops: &[Tok]) -> bool {
        match self.peek() {
            None => true,
            Some(t) => stops.contains(t),
        }
    }

    /// A list of items separated by `,` `;` `and` `or`; one item is returned as it is.
    fn list(&mut self, stops: &[Tok]) -> Option<Node> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            while matches!(
                self.peek(),
                Some(Tok::Sep) | Some(Tok::Op(',')) | Some(Tok::Op(';'))
            ) {
                self.pos += 1;
            }
            if self.at_end(stops) {
                break;
            }
            items.push(self.relation(stops)?);
            if self.at_end(stops) {
                break;
            }
            match self.peek() {
                Some(Tok::Sep) | Some(Tok::Op(',')) | Some(Tok::Op(';')) => continue,
                _ => return None,
            }
        }
        self.leave();
        match items.len() {
            0 => None,
            1 => items.pop(),
            _ => Some(Node::Set(items)),
        }
    }

    fn rel_op(&self) -> Option<Rel> {
        match self.peek()? {
            Tok::Op('=') => Some(Rel::Eq),
            Tok::Op('<') => Some(Rel::Lt),
            Tok::Op('>') => Some(Rel::Gt),
            Tok::Le => Some(Rel::Le),
            Tok::Ge => Some(Rel::Ge),
            Tok::Ne => Some(Rel::Ne),
            Tok::Cmd(c) if c == "in" => Some(Rel::In),
            _ => None,
        }
    }

    fn relation(&mut self, stops: &[Tok]) -> Option<Node> {
        let first = self.ratio(stops)?;
        let mut operands = vec![first];
        let mut ops = Vec::new();
        loop {
            if self.peek() == Some(&Tok::Approx) {
                // `a = b ≈ c` states b; `x ≈ c` states c.
                self.pos += 1;
                let approx = self.ratio(stops)?;
                let first_is_name =
                    !operands[0].free_symbols().is_empty() && !operands[0].has_number();
                if operands.len() < 2 && first_is_name {
                    ops.push(Rel::Eq);
                    operands.push(approx);
                }
                continue;
            }
            let Some(op) = self.rel_op() else {
                break;
            };
            self.pos += 1;
            // Repeated `==`.
            while self.eat(&Tok::Op('=')) {}
            if self.at_end(stops) {
                break;
            }
            ops.push(op);
            operands.push(self.ratio(stops)?);
        }
        if ops.is_empty() {
            return operands.pop();
        }
        let operands = operands
            .into_iter()
            .map(words_as_symbols)
            .collect::<Option<Vec<_>>>()?;
        Some(Node::Relation(operands, ops))
    }

    fn ratio(&mut self, stops: &[Tok]) -> Option<Node> {
        let mut left = self.union(stops)?;
        while self.peek() == Some(&Tok::Op(':')) {
            self.pos += 1;
            let right = self.union(stops)?;
            left = Node::Div(
                Box::new(words_as_symbols(left)?),
                Box::new(words_as_symbols(right)?),
            );
        }
        Some(left)
    }

    fn union(&mut self, stops: &[Tok]) -> Option<Node> {
        let first = self.sum(stops)?;
        let mut parts = vec![first];
        while matches!(self.peek(), Some(Tok::Cmd(c)) if c == "cup" || c == "Cup") {
            self.pos += 1;
            parts.push(self.sum(stops)?);
        }
        if parts.len() == 1 {
            parts.pop()
        } else {
            Some(Node::Union(parts))
        }
    }

    fn sum(&mut self, stops: &[Tok]) -> Option<Node> {
        self.enter()?;
        let mut terms = Vec::new();
        let mut pm: Option<Node> = None;
        let first = self.signed(stops)?;
        terms.push(first);
        loop {
            match self.peek() {
                Some(Tok::Op('+')) => {
                    self.pos += 1;
                    if self.at_end(stops) {
                        break;
                    }
                    terms.push(self.signed(stops)?);
                }
                Some(Tok::Op('-')) => {
                    self.pos += 1;
                    let t = self.signed(stops)?;
                    terms.push(Node::Neg(Box::new(t)));
                }
                Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                    self.pos += 1;
                    let t = self.signed(stops)?;
                    pm = Some(match pm {
                        None => t,
                        Some(prev) => Node::Add(vec![prev, t]),
                    });
                }
                _ => break,
            }
        }
        self.leave();
        let base = if terms.len() == 1 {
            terms.pop()?
        } else {
            Node::Add(
                terms
                    .into_iter()
                    .map(words_as_symbols)
                    .collect::<Option<Vec<_>>>()?,
            )
        };
        Some(match pm {
            Some(d) => Node::PlusMinus(Box::new(base), Box::new(d)),
            None => base,
        })
    }

    fn signed(&mut self, stops: &[Tok]) -> Option<Node> {
        self.enter()?;
        let node = match self.peek() {
            Some(Tok::Op('-')) => {
                self.pos += 1;
                Node::Neg(Box::new(self.signed(stops)?))
            }
            Some(Tok::Op('+')) => {
                self.pos += 1;
                self.signed(stops)?
            }
            Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                self.pos += 1;
                let t = self.signed(stops)?;
                Node::PlusMinus(Box::new(int(0)), Box::new(t))
            }
            _ => self.product(stops)?,
        };
        self.leave();
        Some(node)
    }

    /// Whether the next token can start an implicit factor.
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) | Some(Tok::Letter(_)) | Some(Tok::Op('(')) => true,
            Some(Tok::Word(w)) => !is_unit(w),
            Some(Tok::Cmd(c)) => !matches!(
                c.as_str(),
                "pm" | "mp"
                    | "cup"
                    | "cap"
                    | "in"
                    | "dots"
                    | "mod"
                    | "setminus"
                    | "to"
                    | "rightarrow"
                    | "implies"
                    | "Rightarrow"
                    | "quad"
                    | "rfloor"
                    | "rceil"
            ),
            Some(Tok::Begin(_)) => true,
            _ => false,
        }
    }

    fn product(&mut self, stops: &[Tok]) -> Option<Node> {
        let mut factors = vec![self.power(stops)?];
        let mut node: Option<Node> = None;
        loop {
            match self.peek() {
                Some(Tok::Op('*')) => {
                    self.pos += 1;
                    factors.push(self.power(stops)?);
                }
                Some(Tok::Op('/')) => {
                    self.pos += 1;
                    let den = self.power(stops)?;
                    let num = take_product(&mut factors, node.take())?;
                    node = Some(Node::Div(Box::new(num), Box::new(den)));
                }
                Some(Tok::Word(w)) if !self.at_end(stops) && is_unit(w) => {
                    // Units after a value: dropped.
                    while matches!(self.peek(), Some(Tok::Word(w)) if is_unit(w)) {
                        self.pos += 1;
                    }
                    // `cm^2`.
                    if self.peek() == Some(&Tok::Op('^'))
                        && matches!(self.peek_at(1), Some(Tok::Num(_)))
                    {
                        self.pos += 2;
                    }
                }
                _ if self.starts_factor() && !self.at_end(stops) => {
                    factors.push(self.power(stops)?);
                }
                _ => break,
            }
        }
        take_product(&mut factors, node)
    }

    fn power(&mut self, stops: &[Tok]) -> Option<Node> {
        self.enter()?;
        let mut base = self.atom(stops)?;
        loop {
            match self.peek() {
                Some(Tok::Op('^')) => {
                    self.pos += 1;
                    let exp = self.exponent(stops)?;
                    base = Node::Pow(Box::new(base), Box::new(exp));
                }
                Some(Tok::Op('!')) => {
                    self.pos += 1;
                    base = Node::Func("fact".into(), vec![base]);
                }
                Some(Tok::Op('%')) => {
                    self.pos += 1;
                    base = Node::Percent(Box::new(base));
                }
                Some(Tok::Op('\'')) => {
                    self.pos += 1;
                    base = match base {
                        Node::Sym(s) => Node::Sym(format!("{s}'")),
                        other => other,
                    };
                }
                _ => break,
            }
        }
        self.leave();
        Some(base)
    }

    /// The exponent after `^`: a braced group, or one token (`x^2`, `x^-1`).
    fn exponent(&mut self, stops: &[Tok]) -> Option<Node> {
        match self.peek()? {
            Tok::Op('{') => self.braced(),
            Tok::Op('-') => {
                self.pos += 1;
                Some(Node::Neg(Box::new(self.exponent(stops)?)))
            }
            Tok::Num(n) => {
                // `x^23` in LaTeX means x^2 3; answers mean x^{23}. Take the whole number.
                let n = n.clone();
                self.pos += 1;
                number(&n)
            }
            _ => self.atom(stops),
        }
    }

    /// `{ ... }` as a group: its content, a list inside making a set.
    fn braced(&mut self) -> Option<Node> {
        if !self.eat(&Tok::Op('{')) {
            return None;
        }
        if self.eat(&Tok::Op('}')) {
            return Some(Node::Empty);
        }
        let inner = self.list(&[Tok::Op('}')])?;
        self.eat(&Tok::Op('}')).then_some(inner)
    }

    /// A braced argument, or the next single atom (`\frac12`, `\sqrt3`).
    fn argument(&mut self) -> Option<Node> {
        match self.peek()? {
            Tok::Op('{') => self.braced(),
            Tok::Num(n) => {
                // `\frac12`: one digit per argument.
                let n = n.clone();
                let mut chars = n.chars();
                let first = chars.next()?;
                let rest: String = chars.collect();
                if rest.is_empty() || n.contains('.') {
                    self.pos += 1;
                    return number(&n);
                }
                // Split the digit run: consume one digit, leave the rest as a new token.
                self.split_number(first, rest)
            }
            _ => self.atom(&[]),
        }
    }

    /// Takes the first digit of the current number token, leaving the rest in its place.
    fn split_number(&mut self, first: char, rest: String) -> Option<Node> {
        self.toks[self.pos] = Tok::Num(rest);
        number(&first.to_string())
    }

    fn delimited_list(&mut self, close: &[Tok]) -> Option<(Vec<Node>, Tok)> {
        let mut items = Vec::new();
        loop {
            if let Some(t) = self.peek().cloned() {
                if close.contains(&t) {
                    self.pos += 1;
                    return Some((items, t));
                }
            }
            let mut stops = close.to_vec();
            stops.push(Tok::Op(','));
            stops.push(Tok::Op(';'));
            items.push(self.relation(&stops)?);
            match self.peek()? {
                Tok::Op(',') | Tok::Op(';') => {
                    self.pos += 1;
                }
                t if close.contains(t) => {}
                _ => return None,
            }
        }
    }

    fn atom(&mut self, stops: &[Tok]) -> Option<Node> {
        self.enter()?;
        let tok = self.bump()?;
        let node = match tok {
            Tok::Num(n) => {
                if self.peek() == Some(&Tok::Op('_')) {
                    // A number in another base, `1011_2`: compared as written.
                    self.pos += 1;
                    Node::Sym(format!("{n}_{}", self.subscript()?))
                } else {
                    number(&n)?
                }
            }
            Tok::Letter(c) => {
                let mut name = c.to_string();
                if self.peek() == Some(&Tok::Op('_')) {
                    self.pos += 1;
                    name.push('_');
                    name.push_str(&self.subscript()?);
                }
                Node::Sym(name)
            }
            Tok::Word(w) => {
                // A word standing alone (not after a value) is text.
                let mut words = vec![w];
                while let Some(Tok::Word(next)) = self.peek() {
                    words.push(next.clone());
                    self.pos += 1;
                }
                Node::Text(words.join(" "))
            }
            Tok::Op('(') => {
                let (items, close) = self.delimited_list(&[Tok::Op(')'), Tok::Op(']')])?;
                match (items.len(), close) {
                    (0, _) => Node::Empty,
                    (1, Tok::Op(')')) => items.into_iter().next()?,
                    (2, Tok::Op(']')) => {
                        let mut it = items.into_iter();
                        Node::Interval(Box::new(it.next()?), Box::new(it.next()?), false, true)
                    }
                    (_, Tok::Op(')')) => Node::Tuple(items),
                    _ => return None,
                }
            }
            Tok::Op('[') => {
                let (items, close) = self.delimited_list(&[Tok::Op(')'), Tok::Op(']')])?;
                match (items.len(), close) {
                    (0, _) => Node::Empty,
                    (1, Tok::Op(']')) => items.into_iter().next()?,
                    (2, c) => {
                        let mut it = items.into_iter();
                        Node::Interval(
                            Box::new(it.next()?),
                            Box::new(it.next()?),
                            true,
                            c == Tok::Op(']'),
                        )
                    }
                    (_, Tok::Op(']')) => Node::Tuple(items),
                    _ => return None,
                }
            }
            Tok::Op('{') => {
                self.pos -= 1;
                self.braced()?
            }
            Tok::SetOpen => {
                let (items, _) = self.delimited_list(&[Tok::SetClose])?;
                if items.is_empty() {
                    Node::Empty
                } else {
                    Node::Set(items)
                }
            }
            Tok::Op('|') => {
                let inner = self.sum(&[Tok::Op('|')])?;
                if !self.eat(&Tok::Op('|')) {
                    return None;
                }
                Node::Func("abs".into(), vec![inner])
            }
            Tok::Begin(env) => self.environment(&env)?,
            Tok::Cmd(c) => self.command(&c, stops)?,
            _ => return None,
        };
        self.leave();
        Some(node)
    }

    fn subscript(&mut self) -> Option<String> {
        let s = match self.bump()? {
            Tok::Num(n) => n,
            Tok::Letter(c) => c.to_string(),
            Tok::Word(w) => w,
            Tok::Op('{') => {
                let mut s = String::new();
                let mut depth = 1;
                while let Some(t) = self.bump() {
                    match t {
                        Tok::Op('{') => depth += 1,
                        Tok::Op('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Tok::Num(n) => s.push_str(&n),
                        Tok::Letter(c) => s.push(c),
                        Tok::Word(w) => s.push_str(&w),
                        Tok::Cmd(c) => s.push_str(&c),
                        Tok::Op(c) => s.push(c),
                        _ => {}
                    }
                }
                s
            }
            Tok::Cmd(c) => c,
            _ => return None,
        };
        Some(s)
    }

    fn environment(&mut self, env: &str) -> Option<Node> {
        let mut rows: Vec<Vec<Node>> = Vec::new();
        let mut row: Vec<Node> = Vec::new();
        let stops = [Tok::Op('&'), Tok::RowSep, Tok::End(env.to_string())];
        loop {
            match self.peek()? {
                Tok::End(e) if e == env => {
                    self.pos += 1;
                    break;
                }
                Tok::Op('&') => {
                    self.pos += 1;
                }
                Tok::RowSep => {
                    self.pos += 1;
                    if !row.is_empty() {
                        rows.push(std::mem::take(&mut row));
                    }
                }
                _ => row.push(self.list(&stops)?),
            }
        }
        if !row.is_empty() {
            rows.push(row);
        }
        match env {
            "pmatrix" | "bmatrix" | "matrix" | "array" | "Bmatrix" | "smallmatrix" => {
                Some(Node::Matrix(rows))
            }
            "vmatrix" => Some(Node::Func("det".into(), vec![Node::Matrix(rows)])),
            _ => {
                // align, cases, gathered...: the rows as a list.
                let mut items: Vec<Node> = rows.into_iter().flatten().collect();
                if items.len() == 1 {
                    items.pop()
                } else {
                    Some(Node::Set(items))
                }
            }
        }
    }

    fn command(&mut self, c: &str, stops: &[Tok]) -> Option<Node> {
        Some(match c {
            "frac" => {
                let num = self.argument()?;
                let den = self.argument()?;
                Node::Div(Box::new(num), Box::new(den))
            }
            "binom" | "choose" => {
                let n = self.argument()?;
                let k = self.argument()?;
                Node::Func("binom".into(), vec![n, k])
            }
            "sqrt" => {
                if self.eat(&Tok::Op('[')) {
                    let index = self.sum(&[Tok::Op(']')])?;
                    if !self.eat(&Tok::Op(']')) {
                        return None;
                    }
                    let radicand = self.argument()?;
                    Node::Func("root".into(), vec![index, radicand])
                } else {
                    Node::Func("sqrt".into(), vec![self.argument()?])
                }
            }
            "pi" | "Pi" => Node::Sym("pi".into()),
            "infty" | "infinity" | "inf" => Node::Sym("inf".into()),
            "emptyset" | "varnothing" | "empty" => Node::Empty,
            "imath" => Node::Sym("i".into()),
            "lfloor" | "lceil" => {
                let close = if c == "lfloor" { "rfloor" } else { "rceil" };
                let inner = self.sum(&[Tok::Cmd(close.into())])?;
                if !self.eat(&Tok::Cmd(close.into())) {
                    return None;
                }
                Node::Func(
                    if c == "lfloor" { "floor" } else { "ceil" }.into(),
                    vec![inner],
                )
            }
            "dots" => Node::Sym("dots".into()),
            s if WRAPPERS.contains(&s) => {
                if self.peek() == Some(&Tok::Op('{')) {
                    self.braced()?
                } else {
                    self.atom(stops)?
                }
            }
            s if SYMBOL_CMDS.contains(&s) => Node::Sym(s.to_string()),
            s if FUNCTIONS.contains(&s) => self.function(s, stops)?,
            _ => return None,
        })
    }

    fn function(&mut self, name: &str, stops: &[Tok]) -> Option<Node> {
        let mut base = None;
        let mut power = None;
        // `\log_2`, `\sin^2`, in either order.
        for _ in 0..2 {
            if self.eat(&Tok::Op('_')) {
                base = Some(self.exponent(stops)?);
            } else if self.eat(&Tok::Op('^')) {
                power = Some(self.exponent(stops)?);
            }
        }
        let arg = if self.peek() == Some(&Tok::Op('(')) {
            self.atom(stops)?
        } else {
            self.power(stops)?
        };
        let name = match name {
            "lg" => "log10",
            other => other,
        };
        let mut node = match (name, base) {
            ("log", Some(b)) => Node::Func("logb".into(), vec![b, arg]),
            ("log", None) => Node::Func("ln".into(), vec![arg]),
            (n, _) => Node::Func(n.into(), vec![arg]),
        };
        if let Some(p) = power {
            // `\sin^{-1}` is the inverse function.
            if p == Node::Neg(Box::new(int(1))) {
                if let Node::Func(n, args) = &node {
                    if ["sin", "cos", "tan"].contains(&n.as_str()) {
                        node = Node::Func(format!("arc{n}"), args.clone());
                        return Some(node);
                    }
                }
            }
            node = Node::Pow(Box::new(node), Box::new(p));
        }
        Some(node)
    }
}

fn take_product(factors: &mut Vec<Node>, pending: Option<Node>) -> Option<Node> {
    let mut all: Vec<Node> = pending.into_iter().collect();
    all.append(factors);
    Some(match all.len() {
        0 => Node::Int(BigRational::one()),
        1 => all.pop()?,
        _ => Node::Mul(
            all.into_iter()
                .map(words_as_symbols)
                .collect::<Option<Vec<_>>>()?,
        ),
    })
}

/// Inside arithmetic or a relation a short word is a product of symbols (`AB`, `NO`, `xy`);
/// a longer word means the text is prose, not math, and the parse fails.
fn words_as_symbols(n: Node) -> Option<Node> {
    let conv = |b: Box<Node>| words_as_symbols(*b).map(Box::new);
    Some(match n {
        Node::Text(w) => {
            let upper = w.len() <= 4 && w.chars().all(|c| c.is_ascii_uppercase());
            let lower = w.len() <= 3 && w.chars().all(|c| c.is_ascii_lowercase()) && !is_unit(&w);
            if !(upper || lower) {
                return None;
            }
            let mut syms: Vec<Node> = w.chars().map(|c| Node::Sym(c.to_string())).collect();
            if syms.len() == 1 {
                syms.pop()?
            } else {
                Node::Mul(syms)
            }
        }
        Node::Mul(v) => Node::Mul(
            v.into_iter()
                .map(words_as_symbols)
                .collect::<Option<Vec<_>>>()?,
        ),
        Node::Add(v) => Node::Add(
            v.into_iter()
                .map(words_as_symbols)
                .collect::<Option<Vec<_>>>()?,
        ),
        Node::Func(f, v) => Node::Func(
            f,
            v.into_iter()
                .map(words_as_symbols)
                .collect::<Option<Vec<_>>>()?,
        ),
        Node::Div(a, b) => Node::Div(conv(a)?, conv(b)?),
        Node::Pow(a, b) => Node::Pow(conv(a)?, conv(b)?),
        Node::Neg(a) => Node::Neg(conv(a)?),
        other => other,
    })
}

/// Unit words dropped after a value.
const UNITS: &[&str] = &[
    "cm", "mm", "km", "kg", "mg", "lb", "lbs", "oz", "ft", "yd", "mi", "mph", "kph", "hr", "hrs",
    "min", "sec", "ms", "ml", "mL", "cl", "dl", "cc", "sq", "cu", "in", "pm", "am", "th", "st",
    "nd", "rd", "dm", "kW", "kJ", "Hz", "mol", "usd", "eur",
];

/// Whether a word after a value is a unit (or any longer word, read as one).
fn is_unit(w: &str) -> bool {
    UNITS.contains(&w) || w.chars().count() >= 4 || !w.is_ascii()
}
