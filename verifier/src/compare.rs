//! Whether a predicted answer equals the gold one.
//!
//! Rules, in order: text answers compare case-insensitively; `label = value` assignments are
//! unwrapped; structures compare element-wise (tuples ordered, sets as multisets, intervals
//! with their end types, matrices entry by entry); relations compare up to a constant factor
//! (positive for inequalities); a gold inequality may be answered with the interval it
//! describes (not the reverse). Scalars compare exactly as rationals when both are rational;
//! a predicted decimal is accepted when it is the exact gold value correctly rounded at its own
//! digits (and within 1%); two values of which one is a decimal also match when they agree
//! to six significant digits; other constants compare to a relative 1e-9; expressions with
//! variables compare at sample points.

use num_complex::Complex64;

use crate::ast::{Node, Rel};
use crate::eval::{exact, numeric, to_f64, Budget};

/// Which side of the comparison a node came from (the rules are not symmetric).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Gold,
    Pred,
}

/// Whether `pred` answers `gold`.
pub fn equivalent(gold: &Node, pred: &Node, budget: &mut Budget) -> bool {
    let gold = reduce_chain(gold);
    let pred = reduce_chain(pred);
    equiv(&gold, &pred, budget)
}

/// A node that names something rather than stating a value: `x`, `AB`, `f(x)`, `a_3`,
/// `(p, q)`, `\frac{NO}{BO}`.
fn is_label(n: &Node) -> bool {
    let mut has_symbol = false;
    n.visit(&mut |m| has_symbol |= matches!(m, Node::Sym(s) if s != "pi" && s != "inf"));
    has_symbol
        && !n.has_number()
        && match n {
            Node::Sym(_) | Node::Mul(_) | Node::Div(..) | Node::Func(..) | Node::Pow(..) => true,
            Node::Tuple(items) => items.iter().all(is_label),
            _ => false,
        }
}

/// Truncates `a = b ≈ c` chains after the last exact value, recursively through lists.
fn reduce_chain(n: &Node) -> Node {
    match n {
        Node::Set(items) => Node::Set(items.iter().map(reduce_chain).collect()),
        other => other.clone(),
    }
}

/// The value an assignment chain states: `x = 5 + 6 = 11` → `11`. For predictions, a
/// computation chain with a symbol-free left side also states its last value.
fn assigned_value(n: &Node, side: Side) -> Option<&Node> {
    let Node::Relation(operands, ops) = n else {
        return None;
    };
    if !ops.iter().all(|r| matches!(r, Rel::Eq | Rel::In)) {
        return None;
    }
    let first = &operands[0];
    let unwrap = is_label(first)
        || (side == Side::Pred && first.free_symbols().is_empty() && first.is_scalar());
    unwrap.then(|| operands.last()).flatten()
}

fn unwrap_side(n: &Node, side: Side) -> Node {
    match n {
        Node::Set(items) => Node::Set(items.iter().map(|x| unwrap_side(x, side)).collect()),
        _ => assigned_value(n, side)
            .cloned()
            .unwrap_or_else(|| n.clone()),
    }
}

fn is_relation(n: &Node) -> bool {
    matches!(n, Node::Relation(..))
}

fn equiv(gold: &Node, pred: &Node, budget: &mut Budget) -> bool {
    if budget.exhausted() {
        return false;
    }
    // Assignments are unwrapped unless both sides are genuine (non-assignment) relations.
    let g_assign = assigned_value(gold, Side::Gold).is_some();
    let p_assign = assigned_value(pred, Side::Pred).is_some();
    if is_relation(gold) && is_relation(pred) && !(g_assign && p_assign) && !(g_assign ^ p_assign) {
        return relation_equiv(gold, pred, budget);
    }
    if is_relation(gold) && is_relation(pred) && (g_assign ^ p_assign) {
        // One side is an assignment, the other a general equation: compare as equations,
        // then fall back to the assigned values.
        if relation_equiv(gold, pred, budget) {
            return true;
        }
    }
    let g = unwrap_side(gold, Side::Gold);
    let p = unwrap_side(pred, Side::Pred);
    if let (Node::Relation(..), Node::Relation(..)) = (&g, &p) {
        return relation_equiv(&g, &p, budget);
    }
    structural(&g, &p, budget)
}

fn structural(g: &Node, p: &Node, budget: &mut Budget) -> bool {
    let involves_matrix = |n: &Node| {
        matches!(n, Node::Add(_) | Node::Mul(_) | Node::Neg(_)) && {
            let mut found = false;
            n.visit(&mut |m| found |= matches!(m, Node::Matrix(_)));
            found
        }
    };
    if involves_matrix(g) || involves_matrix(p) {
        let (Some(a), Some(b)) = (fold_matrices(g), fold_matrices(p)) else {
            return false;
        };
        return structural(&Node::Matrix(a), &Node::Matrix(b), budget);
    }
    match (g, p) {
        (Node::Text(a), Node::Text(b)) => text_eq(a, b),
        (Node::Text(a), Node::Sym(b)) | (Node::Sym(b), Node::Text(a)) => text_eq(a, b),
        (Node::Text(_), _) | (_, Node::Text(_)) => false,
        (Node::Empty, Node::Empty) => true,
        (Node::Empty, _) | (_, Node::Empty) => false,
        (Node::PlusMinus(..), _) | (_, Node::PlusMinus(..)) => {
            let (g2, p2) = (expand_pm(g), expand_pm(p));
            match (&g2, &p2) {
                (Node::Set(_), _) | (_, Node::Set(_)) => {
                    sets_equal(&as_items(&g2), &as_items(&p2), budget)
                }
                _ => false,
            }
        }
        (Node::Set(a), Node::Set(b)) => sets_equal(a, b, budget),
        (Node::Set(a), Node::Tuple(b)) | (Node::Tuple(b), Node::Set(a)) => {
            // A set against a tuple: the set in increasing order.
            a.len() == b.len() && {
                let sorted = sort_numeric(a, budget);
                sorted.iter().zip(b).all(|(x, y)| equiv(x, y, budget))
            }
        }
        (Node::Set(a), other) | (other, Node::Set(a)) if a.len() == 1 => {
            let only = a[0].clone();
            equiv_ordered(g, p, &only, other, budget)
        }
        (Node::Tuple(a), Node::Tuple(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equiv(x, y, budget))
        }
        (Node::Interval(a1, b1, c1, d1), Node::Interval(a2, b2, c2, d2)) => {
            c1 == c2 && d1 == d2 && equiv(a1, a2, budget) && equiv(b1, b2, budget)
        }
        (Node::Interval(a1, b1, false, false), Node::Tuple(t))
        | (Node::Tuple(t), Node::Interval(a1, b1, false, false))
            if t.len() == 2 =>
        {
            equiv(a1, &t[0], budget) && equiv(b1, &t[1], budget)
        }
        (Node::Union(a), Node::Union(b)) => sets_equal(a, b, budget),
        (Node::Matrix(a), Node::Matrix(b)) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(r1, r2)| {
                    r1.len() == r2.len() && r1.iter().zip(r2).all(|(x, y)| equiv(x, y, budget))
                })
        }
        (Node::Matrix(m), Node::Tuple(t)) | (Node::Tuple(t), Node::Matrix(m)) => {
            // A column or row vector written as a tuple.
            let flat: Vec<&Node> = m.iter().flatten().collect();
            (m.len() == 1 || m.iter().all(|r| r.len() == 1))
                && flat.len() == t.len()
                && flat.iter().zip(t).all(|(x, y)| equiv(x, y, budget))
        }
        (Node::Relation(..), _) => {
            // A gold inequality answered by the interval it describes.
            match relation_to_set(g) {
                Some(set) => structural(&set, p, budget),
                None => false,
            }
        }
        (_, Node::Relation(..)) => false,
        _ if g.is_scalar() && p.is_scalar() => scalar_equiv(g, p, budget),
        _ => false,
    }
}

fn equiv_ordered(g: &Node, _p: &Node, set_item: &Node, other: &Node, budget: &mut Budget) -> bool {
    if matches!(g, Node::Set(_)) {
        equiv(set_item, other, budget)
    } else {
        equiv(other, set_item, budget)
    }
}

fn as_items(n: &Node) -> Vec<Node> {
    match n {
        Node::Set(items) => items.iter().flat_map(as_items).collect(),
        other => vec![other.clone()],
    }
}

fn expand_pm(n: &Node) -> Node {
    match n {
        Node::PlusMinus(a, b) => Node::Set(vec![
            Node::Add(vec![(**a).clone(), (**b).clone()]),
            Node::Add(vec![(**a).clone(), Node::Neg(b.clone())]),
        ]),
        Node::Set(items) => Node::Set(items.iter().flat_map(|x| as_items(&expand_pm(x))).collect()),
        other => other.clone(),
    }
}

fn text_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (a, b) = (norm(a), norm(b));
    !a.is_empty() && a == b
}

fn sort_numeric(items: &[Node], budget: &mut Budget) -> Vec<Node> {
    let mut keyed: Vec<(f64, Node)> = items
        .iter()
        .map(|n| {
            let v = numeric(n, &|_| None, budget).map_or(f64::NAN, |c| c.re);
            (v, n.clone())
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, n)| n).collect()
}

/// Set equality under [`equiv`]: every element of each side matches one of the other
/// (repeated elements count once).
fn sets_equal(a: &[Node], b: &[Node], budget: &mut Budget) -> bool {
    let a: Vec<Node> = a.iter().flat_map(as_items).collect();
    let b: Vec<Node> = b.iter().flat_map(as_items).collect();
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a.iter().all(|x| b.iter().any(|y| equiv(x, y, budget)))
        && b.iter().all(|y| a.iter().any(|x| equiv(x, y, budget)))
}

/// `lhs op rhs` with `>`/`\ge` turned around, as (expression = lhs - rhs, op).
fn normal_form(lhs: &Node, rhs: &Node, op: Rel) -> (Node, Rel) {
    let diff = |a: &Node, b: &Node| Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))]);
    match op {
        Rel::Gt => (diff(rhs, lhs), Rel::Lt),
        Rel::Ge => (diff(rhs, lhs), Rel::Le),
        other => (diff(lhs, rhs), other),
    }
}

fn relation_equiv(g: &Node, p: &Node, budget: &mut Budget) -> bool {
    let (Node::Relation(go, gops), Node::Relation(po, pops)) = (g, p) else {
        return false;
    };
    if go.len() == 2 && po.len() == 2 {
        let (fg, og) = normal_form(&go[0], &go[1], gops[0]);
        let (fp, op) = normal_form(&po[0], &po[1], pops[0]);
        if og != op {
            return false;
        }
        return match og {
            Rel::Eq | Rel::Ne => proportional(&fg, &fp, false, budget),
            Rel::Lt | Rel::Le => proportional(&fg, &fp, true, budget),
            _ => equiv(&go[1], &po[1], budget) && equiv(&go[0], &po[0], budget),
        };
    }
    // Chains: operand by operand, or reversed with mirrored operators.
    if go.len() != po.len() {
        return false;
    }
    let same = gops == pops && go.iter().zip(po).all(|(a, b)| equiv(a, b, budget));
    if same {
        return true;
    }
    let mirrored: Vec<Rel> = pops.iter().rev().map(|r| mirror(*r)).collect();
    mirrored == *gops
        && go
            .iter()
            .zip(po.iter().rev())
            .all(|(a, b)| equiv(a, b, budget))
}

/// The operator with its sides swapped: `a < b` is `b > a`.
fn mirror(r: Rel) -> Rel {
    match r {
        Rel::Lt => Rel::Gt,
        Rel::Gt => Rel::Lt,
        Rel::Le => Rel::Ge,
        Rel::Ge => Rel::Le,
        other => other,
    }
}

/// `x r b` as an interval.
fn one_sided(b: &Node, r: Rel) -> Option<Node> {
    let inf = Box::new(Node::Sym("inf".into()));
    let neg_inf = Box::new(Node::Neg(Box::new(Node::Sym("inf".into()))));
    let closed = matches!(r, Rel::Le | Rel::Ge);
    match r {
        Rel::Lt | Rel::Le => Some(Node::Interval(neg_inf, Box::new(b.clone()), false, closed)),
        Rel::Gt | Rel::Ge => Some(Node::Interval(Box::new(b.clone()), inf, closed, false)),
        _ => None,
    }
}

/// A one-variable inequality (or chain) as the set it describes.
fn relation_to_set(n: &Node) -> Option<Node> {
    let Node::Relation(operands, ops) = n else {
        return None;
    };
    let closed = |r: &Rel| matches!(r, Rel::Le | Rel::Ge);
    match (operands.as_slice(), ops.as_slice()) {
        ([a, x, b], [r1, r2]) if is_label(x) && !is_label(a) && !is_label(b) => {
            let ascending = matches!(r1, Rel::Lt | Rel::Le) && matches!(r2, Rel::Lt | Rel::Le);
            let descending = matches!(r1, Rel::Gt | Rel::Ge) && matches!(r2, Rel::Gt | Rel::Ge);
            if ascending {
                Some(Node::Interval(
                    Box::new(a.clone()),
                    Box::new(b.clone()),
                    closed(r1),
                    closed(r2),
                ))
            } else if descending {
                Some(Node::Interval(
                    Box::new(b.clone()),
                    Box::new(a.clone()),
                    closed(r2),
                    closed(r1),
                ))
            } else {
                None
            }
        }
        ([x, b], [r]) if is_label(x) && !is_label(b) => one_sided(b, *r),
        // `b > x` is `x < b`.
        ([b, x], [r]) if is_label(x) && !is_label(b) => one_sided(b, mirror(*r)),
        _ => None,
    }
}

/// Deterministic sample points in (0.3, 2.3), away from the integers' special values.
fn sample_points(n_vars: usize, k: usize) -> Vec<f64> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ ((k as u64) << 32) ^ n_vars as u64;
    (0..n_vars)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            0.3 + 2.0 * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn close(a: Complex64, b: Complex64, rel: f64) -> bool {
    // Overflowed values (a power tower, say) cannot be compared.
    if !(a.re.is_finite() && a.im.is_finite() && b.re.is_finite() && b.im.is_finite()) {
        return false;
    }
    let scale = a.norm().max(b.norm()).max(1e-300);
    (a - b).norm() <= rel * scale || (a - b).norm() <= 1e-12
}

/// Both expressions evaluated at the same sample points of their joint variables.
fn at_sample_points(
    a: &Node,
    b: &Node,
    budget: &mut Budget,
) -> Vec<(Option<Complex64>, Option<Complex64>)> {
    let mut vars = a.free_symbols();
    for v in b.free_symbols() {
        if !vars.contains(&v) {
            vars.push(v);
        }
    }
    (0..12)
        .map(|k| {
            let pts = sample_points(vars.len(), k);
            let lookup = |name: &str| {
                vars.iter()
                    .position(|v| v == name)
                    .map(|i| Complex64::new(pts[i], 0.0))
            };
            (numeric(a, &lookup, budget), numeric(b, &lookup, budget))
        })
        .collect()
}

/// `f = c * g` for one nonzero constant `c` (positive if `positive`).
fn proportional(f: &Node, g: &Node, positive: bool, budget: &mut Budget) -> bool {
    let mut ratio: Option<Complex64> = None;
    let mut agree = 0;
    for pair in at_sample_points(f, g, budget) {
        let (Some(a), Some(b)) = pair else {
            continue;
        };
        if a.norm() < 1e-12 && b.norm() < 1e-12 {
            agree += 1;
            continue;
        }
        if a.norm() < 1e-12 || b.norm() < 1e-12 {
            return false;
        }
        let r = a / b;
        match ratio {
            None => ratio = Some(r),
            Some(r0) if !close(r, r0, 1e-8) => return false,
            Some(_) => {}
        }
        agree += 1;
    }
    agree >= 3
        && match ratio {
            Some(r) => !positive || (r.re > 0.0 && r.im.abs() < 1e-9),
            None => true,
        }
}

fn strip_percent(n: &Node) -> (&Node, bool) {
    match n {
        Node::Percent(inner) => (inner, true),
        other => (other, false),
    }
}

fn scalar_equiv(g: &Node, p: &Node, budget: &mut Budget) -> bool {
    let (g_inner, g_pct) = strip_percent(g);
    let (p_inner, p_pct) = strip_percent(p);
    if g_pct != p_pct {
        // `28%` against `28` (the MATH convention) or against `0.28`.
        let hundred = Node::Int(num_rational::BigRational::from_integer(100.into()));
        let scaled = |n: &Node| Node::Div(Box::new(n.clone()), Box::new(hundred.clone()));
        return value_equiv(g_inner, p_inner, budget)
            || if g_pct {
                value_equiv(&scaled(g_inner), p_inner, budget)
            } else {
                value_equiv(g_inner, &scaled(p_inner), budget)
            };
    }
    value_equiv(g_inner, p_inner, budget)
}

fn is_infinite(n: &Node) -> Option<i8> {
    match n {
        Node::Sym(s) if s == "inf" => Some(1),
        Node::Neg(a) => is_infinite(a).map(|s| -s),
        Node::Add(v) if v.len() == 1 => is_infinite(&v[0]),
        _ => None,
    }
}

fn value_equiv(g: &Node, p: &Node, budget: &mut Budget) -> bool {
    if g == p {
        return true;
    }
    match (is_infinite(g), is_infinite(p)) {
        (Some(a), Some(b)) => return a == b,
        (Some(_), None) | (None, Some(_)) => return false,
        _ => {}
    }
    let vars_g = g.free_symbols();
    let vars_p = p.free_symbols();
    if vars_g.is_empty() && vars_p.is_empty() {
        if let (Some(a), Some(b)) = (exact(g, budget), exact(p, budget)) {
            if a == b {
                return true;
            }
            // Exact values that differ are different, unless a decimal is a rounding of the other.
            let (x, y) = (to_f64(&a), to_f64(&b));
            return match (g.has_decimal(), p.has_decimal()) {
                (false, false) => false,
                (false, true) => rounded_match(p, x, y) || same_significant_digits(x, y),
                _ => same_significant_digits(x, y),
            };
        }
        let (Some(a), Some(b)) = (numeric(g, &|_| None, budget), numeric(p, &|_| None, budget))
        else {
            return false;
        };
        if g.has_decimal() || p.has_decimal() {
            if a.im.abs() > 1e-12 || b.im.abs() > 1e-12 {
                return close(a, b, 1e-9);
            }
            return close(a, b, 1e-12)
                || same_significant_digits(a.re, b.re)
                || (!g.has_decimal() && rounded_match(p, a.re, b.re));
        }
        return close(a, b, 1e-9);
    }
    // Expressions with variables: equal as functions.
    let tol = if g.has_decimal() || p.has_decimal() {
        1e-6
    } else {
        1e-9
    };
    let mut agree = 0;
    for pair in at_sample_points(g, p, budget) {
        match pair {
            (Some(a), Some(b)) if close(a, b, tol) => agree += 1,
            (None, None) => {}
            _ => return false,
        }
    }
    agree >= 3
}

/// The prediction is a decimal with `k` digits after the point and the gold answer is exact:
/// equal when the gold value rounds to it at `k` digits (with a floor for floating-point
/// error) and it is within 1% of the gold value. (A decimal gold answer is never matched by
/// rounding the other way: gold `3.14` is not `\pi`.)
fn rounded_match(pred: &Node, a: f64, b: f64) -> bool {
    if !(a.is_finite() && b.is_finite()) {
        return false;
    }
    let Some(k) = pred.min_decimal_places() else {
        return false;
    };
    let half_ulp = 0.5 * 10f64.powi(-(k as i32));
    let diff = (a - b).abs();
    let scale = a.abs().max(b.abs());
    diff <= half_ulp * (1.0 + 1e-9) + 1e-12 * scale && diff <= 0.01 * scale.max(1e-300) + 1e-12
}

/// Whether two values agree to six significant digits (rounded): how precise a decimal answer
/// must be to match a longer one (`0.0666668` = `0.066666793`, `2.23` ≠ `2.232`).
fn same_significant_digits(a: f64, b: f64) -> bool {
    if !(a.is_finite() && b.is_finite()) {
        return false;
    }
    if a == b {
        return true;
    }
    let m = a.abs().max(b.abs());
    if !m.is_finite() || m == 0.0 || a.signum() != b.signum() {
        return false;
    }
    let scale = 10f64.powi(m.log10().floor() as i32 - 5);
    (a / scale).round() == (b / scale).round()
}

/// Matrix sums, products and scalar multiples, carried out entry by entry.
fn fold_matrices(n: &Node) -> Option<Vec<Vec<Node>>> {
    match n {
        Node::Matrix(rows) => Some(rows.clone()),
        Node::Neg(a) => Some(
            fold_matrices(a)?
                .into_iter()
                .map(|r| r.into_iter().map(|x| Node::Neg(Box::new(x))).collect())
                .collect(),
        ),
        Node::Add(terms) => {
            let mats: Vec<Vec<Vec<Node>>> =
                terms.iter().map(fold_matrices).collect::<Option<_>>()?;
            let first = mats.first()?;
            let (r, c) = (first.len(), first.first().map_or(0, Vec::len));
            if mats
                .iter()
                .any(|m| m.len() != r || m.iter().any(|row| row.len() != c))
            {
                return None;
            }
            Some(
                (0..r)
                    .map(|i| {
                        (0..c)
                            .map(|j| Node::Add(mats.iter().map(|m| m[i][j].clone()).collect()))
                            .collect()
                    })
                    .collect(),
            )
        }
        Node::Mul(factors) if factors.iter().any(|f| matches!(f, Node::Matrix(_))) => {
            let mut acc: Option<Vec<Vec<Node>>> = None;
            let mut scalar: Vec<Node> = Vec::new();
            for f in factors {
                match fold_matrices(f) {
                    Some(m) => {
                        acc = Some(match acc {
                            None => m,
                            Some(a) => matmul(&a, &m)?,
                        })
                    }
                    None if f.is_scalar() => scalar.push(f.clone()),
                    None => return None,
                }
            }
            let m = acc?;
            Some(
                m.into_iter()
                    .map(|r| {
                        r.into_iter()
                            .map(|x| {
                                let mut v = scalar.clone();
                                v.push(x);
                                Node::Mul(v)
                            })
                            .collect()
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

fn matmul(a: &[Vec<Node>], b: &[Vec<Node>]) -> Option<Vec<Vec<Node>>> {
    let inner = a.first()?.len();
    if inner != b.len() || a.iter().any(|r| r.len() != inner) {
        return None;
    }
    let cols = b.first()?.len();
    Some(
        a.iter()
            .map(|row| {
                (0..cols)
                    .map(|j| {
                        Node::Add(
                            (0..inner)
                                .map(|k| Node::Mul(vec![row[k].clone(), b[k][j].clone()]))
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect(),
    )
}
