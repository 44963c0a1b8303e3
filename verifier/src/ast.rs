//! The parsed form of a math answer.

use num_rational::BigRational;

/// Relation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    /// `=` (and `\approx`, which answers use as "is").
    Eq,
    /// `\neq`.
    Ne,
    /// `<`.
    Lt,
    /// `\le`.
    Le,
    /// `>`.
    Gt,
    /// `\ge`.
    Ge,
    /// `\in`.
    In,
}

/// A parsed answer: scalar expressions and the structures answers are made of.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// An exact number literal (integers, fractions of integers).
    Int(BigRational),
    /// A decimal literal: its exact value and the number of digits after the point.
    Dec(BigRational, u32),
    /// A variable or named constant (`pi`, `e`, `i`, `inf` are resolved at evaluation).
    Sym(String),
    /// Sum.
    Add(Vec<Node>),
    /// Product.
    Mul(Vec<Node>),
    /// Negation.
    Neg(Box<Node>),
    /// Quotient.
    Div(Box<Node>, Box<Node>),
    /// Power.
    Pow(Box<Node>, Box<Node>),
    /// A function applied to arguments: `sqrt`, `root` (index, radicand), `sin`, `log`
    /// (base, x), `ln`, `exp`, `abs`, `fact`, `binom`, `floor`, `ceil`, ...
    Func(String, Vec<Node>),
    /// A percentage: the value before `%`.
    Percent(Box<Node>),
    /// Plain words (`\text{Evelyn}`, `odd`).
    Text(String),
    /// `(a, b, ...)`: a point, a vector, or an open interval when compared with one.
    Tuple(Vec<Node>),
    /// An unordered collection: `\{a, b\}`, or a bare list `a, b and c`.
    Set(Vec<Node>),
    /// An interval with its end types (`true` = closed).
    Interval(Box<Node>, Box<Node>, bool, bool),
    /// A union of sets and intervals.
    Union(Vec<Node>),
    /// A matrix, row by row.
    Matrix(Vec<Vec<Node>>),
    /// A chain of relations: operands and the operators between them.
    Relation(Vec<Node>, Vec<Rel>),
    /// `a \pm b`.
    PlusMinus(Box<Node>, Box<Node>),
    /// The empty set.
    Empty,
}

impl Node {
    /// Whether a number literal (outside subscripts) occurs anywhere in the node.
    pub fn has_number(&self) -> bool {
        let mut found = false;
        self.visit(&mut |n| found |= matches!(n, Node::Int(_) | Node::Dec(..)));
        found
    }

    /// Whether the tree is at most `limit` levels deep (checked without recursion, so that
    /// the check itself cannot overflow the stack).
    pub fn depth_at_most(&self, limit: usize) -> bool {
        let mut stack: Vec<(&Node, usize)> = vec![(self, 1)];
        while let Some((n, d)) = stack.pop() {
            if d > limit {
                return false;
            }
            n.for_each_child(|c| stack.push((c, d + 1)));
        }
        true
    }

    /// Calls `f` on each direct child.
    pub fn for_each_child<'a>(&'a self, mut f: impl FnMut(&'a Node)) {
        match self {
            Node::Neg(a) | Node::Percent(a) => f(a),
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::PlusMinus(a, b)
            | Node::Interval(a, b, ..) => {
                f(a);
                f(b);
            }
            Node::Add(v)
            | Node::Mul(v)
            | Node::Func(_, v)
            | Node::Tuple(v)
            | Node::Set(v)
            | Node::Union(v)
            | Node::Relation(v, _) => v.iter().for_each(f),
            Node::Matrix(rows) => rows.iter().flatten().for_each(f),
            _ => {}
        }
    }

    /// Whether the node contains a decimal literal (an inexact, rounded value).
    pub fn has_decimal(&self) -> bool {
        let mut found = false;
        self.visit(&mut |n| found |= matches!(n, Node::Dec(..)));
        found
    }

    /// The fewest digits after the point among the node's decimal literals.
    pub fn min_decimal_places(&self) -> Option<u32> {
        let mut best: Option<u32> = None;
        self.visit(&mut |n| {
            if let Node::Dec(_, k) = n {
                best = Some(best.map_or(*k, |b| b.min(*k)));
            }
        });
        best
    }

    /// Calls `f` on every node, depth first.
    pub fn visit(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        self.for_each_child(|c| c.visit(f));
    }

    /// Free variables (symbols other than the named constants).
    pub fn free_symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.visit(&mut |n| {
            if let Node::Sym(s) = n {
                if !is_constant(s) && !out.contains(s) {
                    out.push(s.clone());
                }
            }
        });
        out
    }

    /// Whether this is a scalar expression (no structure, relation or text).
    pub fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Node::Tuple(_)
                | Node::Set(_)
                | Node::Interval(..)
                | Node::Union(_)
                | Node::Matrix(_)
                | Node::Relation(..)
                | Node::Text(_)
                | Node::Empty
                | Node::PlusMinus(..)
        )
    }
}

/// Symbols with a fixed meaning.
pub fn is_constant(s: &str) -> bool {
    matches!(s, "pi" | "e" | "i" | "inf")
}
