//! Evaluation of scalar [`Node`]s: exactly, as rationals, where the expression is rational;
//! numerically, in complex f64, everywhere else. Both run under a [`Budget`] so that no input
//! (a power tower, a huge factorial) can take unbounded time or memory.

use num_bigint::BigInt;
use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use crate::ast::Node;

/// A bound on the work one verification may do.
#[derive(Debug)]
pub struct Budget {
    steps: u64,
    calls: u64,
    deadline: std::time::Instant,
    exhausted: bool,
}

impl Budget {
    /// At most `steps` evaluation steps and `time` wall time.
    pub fn new(steps: u64, time: std::time::Duration) -> Self {
        Self {
            steps,
            calls: 0,
            deadline: std::time::Instant::now() + time,
            exhausted: false,
        }
    }

    /// Spends `n` steps; false once the budget is gone.
    pub fn spend(&mut self, n: u64) -> bool {
        if self.exhausted {
            return false;
        }
        self.steps = self.steps.saturating_sub(n);
        self.calls += 1;
        // The clock is read every 256 calls.
        if self.steps == 0
            || (self.calls.is_multiple_of(256) && std::time::Instant::now() > self.deadline)
        {
            self.exhausted = true;
        }
        !self.exhausted
    }

    /// Whether the budget ran out.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }
}

/// Largest result, in bits, that exact arithmetic may produce.
const MAX_BITS: u64 = 20_000;

fn bits(r: &BigRational) -> u64 {
    r.numer().bits() + r.denom().bits()
}

/// The exact rational value of `node`, if it is a rational expression of moderate size.
pub fn exact(node: &Node, budget: &mut Budget) -> Option<BigRational> {
    if !budget.spend(1) {
        return None;
    }
    let v = match node {
        Node::Int(r) | Node::Dec(r, _) => r.clone(),
        Node::Neg(a) => -exact(a, budget)?,
        Node::Percent(a) => exact(a, budget)? / BigRational::from_integer(100.into()),
        Node::Add(v) => {
            let mut acc = BigRational::zero();
            for x in v {
                acc += exact(x, budget)?;
            }
            acc
        }
        Node::Mul(v) => {
            let mut acc = BigRational::one();
            for x in v {
                acc *= exact(x, budget)?;
                if bits(&acc) > MAX_BITS {
                    return None;
                }
            }
            acc
        }
        Node::Div(a, b) => {
            let d = exact(b, budget)?;
            if d.is_zero() {
                return None;
            }
            exact(a, budget)? / d
        }
        Node::Pow(a, b) => {
            let base = exact(a, budget)?;
            let e = exact(b, budget)?;
            if !e.is_integer() {
                return None;
            }
            let e = e.to_integer().to_i64()?;
            if base.is_zero() && e < 0 {
                return None;
            }
            let est = bits(&base).saturating_mul(e.unsigned_abs());
            if est > MAX_BITS || !budget.spend(est / 64 + 1) {
                return None;
            }
            let p = num_traits::pow(base, e.unsigned_abs() as usize);
            if e < 0 {
                p.recip()
            } else {
                p
            }
        }
        Node::Func(name, args) => match (name.as_str(), args.as_slice()) {
            ("fact", [a]) => {
                let n = exact(a, budget)?;
                if !n.is_integer() || n.is_negative() {
                    return None;
                }
                let n = n.to_integer().to_u64()?;
                if n > 1000 || !budget.spend(n) {
                    return None;
                }
                BigRational::from_integer((1..=n).fold(BigInt::one(), |acc, k| acc * k))
            }
            ("binom", [a, b]) => {
                let n = exact(a, budget)?.to_integer().to_i64()?;
                let k = exact(b, budget)?.to_integer().to_i64()?;
                if !(0..=n).contains(&k) || n > 5000 || !budget.spend(k as u64) {
                    return None;
                }
                let mut acc = BigInt::one();
                for j in 0..k {
                    acc = acc * (n - j) / (j + 1);
                }
                BigRational::from_integer(acc)
            }
            ("abs", [a]) => exact(a, budget)?.abs(),
            ("floor", [a]) => exact(a, budget)?.floor(),
            ("ceil", [a]) => exact(a, budget)?.ceil(),
            ("sqrt", [a]) => {
                let v = exact(a, budget)?;
                exact_sqrt(&v)?
            }
            _ => return None,
        },
        _ => return None,
    };
    (bits(&v) <= MAX_BITS).then_some(v)
}

fn exact_sqrt(v: &BigRational) -> Option<BigRational> {
    if v.is_negative() {
        return None;
    }
    let n = v.numer().sqrt();
    let d = v.denom().sqrt();
    (&n * &n == *v.numer() && &d * &d == *v.denom()).then(|| BigRational::new(n, d))
}

/// Converts a rational to f64 (±inf past the range).
pub fn to_f64(r: &BigRational) -> f64 {
    r.to_f64().unwrap_or_else(|| {
        let sign = if r.is_negative() { -1.0 } else { 1.0 };
        let mag = r.numer().bits() as i64 - r.denom().bits() as i64;
        if mag > 0 {
            sign * f64::INFINITY
        } else {
            0.0
        }
    })
}

/// The numeric value of `node` with variables from `vars`; `None` where undefined.
pub fn numeric(
    node: &Node,
    vars: &dyn Fn(&str) -> Option<Complex64>,
    budget: &mut Budget,
) -> Option<Complex64> {
    if !budget.spend(1) {
        return None;
    }
    let c = |x: f64| Complex64::new(x, 0.0);
    let v = match node {
        Node::Int(r) | Node::Dec(r, _) => c(to_f64(r)),
        Node::Sym(s) => match s.as_str() {
            "pi" => c(std::f64::consts::PI),
            "e" => c(std::f64::consts::E),
            "i" => Complex64::new(0.0, 1.0),
            "inf" => c(f64::INFINITY),
            other => vars(other)?,
        },
        Node::Neg(a) => -numeric(a, vars, budget)?,
        Node::Percent(a) => numeric(a, vars, budget)? / 100.0,
        Node::Add(v) => {
            let mut acc = c(0.0);
            for x in v {
                acc += numeric(x, vars, budget)?;
            }
            acc
        }
        Node::Mul(v) => {
            let mut acc = c(1.0);
            for x in v {
                acc *= numeric(x, vars, budget)?;
            }
            acc
        }
        Node::Div(a, b) => {
            let d = numeric(b, vars, budget)?;
            if d.norm() == 0.0 {
                return None;
            }
            numeric(a, vars, budget)? / d
        }
        Node::Pow(a, b) => {
            let base = numeric(a, vars, budget)?;
            let e = numeric(b, vars, budget)?;
            if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 1e6 {
                if base.norm() == 0.0 && e.re < 0.0 {
                    return None;
                }
                if base.im == 0.0 {
                    c(base.re.powi(e.re as i32))
                } else {
                    base.powi(e.re as i32)
                }
            } else if base.im == 0.0 && base.re > 0.0 && e.im == 0.0 {
                c(base.re.powf(e.re))
            } else if base.im == 0.0 && base.re < 0.0 && e.im == 0.0 {
                // Odd roots of negative reals stay real: (-8)^(1/3) = -2.
                let inv = 1.0 / e.re;
                if (inv - inv.round()).abs() < 1e-9 && (inv.round() as i64) % 2 != 0 {
                    c(-(-base.re).powf(e.re))
                } else {
                    base.powc(e)
                }
            } else {
                base.powc(e)
            }
        }
        Node::Func(name, args) => {
            let arg = |k: usize, budget: &mut Budget| -> Option<Complex64> {
                numeric(args.get(k)?, vars, budget)
            };
            match name.as_str() {
                "sqrt" => {
                    let x = arg(0, budget)?;
                    if x.im == 0.0 && x.re >= 0.0 {
                        c(x.re.sqrt())
                    } else {
                        x.sqrt()
                    }
                }
                "root" => {
                    let n = arg(0, budget)?;
                    let x = arg(1, budget)?;
                    if x.im == 0.0 && n.im == 0.0 {
                        if x.re >= 0.0 {
                            c(x.re.powf(1.0 / n.re))
                        } else if (n.re.round() as i64) % 2 != 0 {
                            c(-(-x.re).powf(1.0 / n.re))
                        } else {
                            x.powc(1.0 / n)
                        }
                    } else {
                        x.powc(1.0 / n)
                    }
                }
                "sin" => arg(0, budget)?.sin(),
                "cos" => arg(0, budget)?.cos(),
                "tan" => arg(0, budget)?.tan(),
                "sec" => 1.0 / arg(0, budget)?.cos(),
                "csc" => 1.0 / arg(0, budget)?.sin(),
                "cot" => 1.0 / arg(0, budget)?.tan(),
                "arcsin" => arg(0, budget)?.asin(),
                "arccos" => arg(0, budget)?.acos(),
                "arctan" => arg(0, budget)?.atan(),
                "sinh" => arg(0, budget)?.sinh(),
                "cosh" => arg(0, budget)?.cosh(),
                "tanh" => arg(0, budget)?.tanh(),
                "ln" => arg(0, budget)?.ln(),
                "log10" => arg(0, budget)?.log10(),
                "logb" => {
                    let b = arg(0, budget)?;
                    arg(1, budget)?.ln() / b.ln()
                }
                "exp" => arg(0, budget)?.exp(),
                "abs" => c(arg(0, budget)?.norm()),
                "floor" => {
                    let x = arg(0, budget)?;
                    c(x.re.floor())
                }
                "ceil" => {
                    let x = arg(0, budget)?;
                    c(x.re.ceil())
                }
                "fact" => {
                    let x = arg(0, budget)?;
                    if x.im != 0.0 || x.re < 0.0 || x.re.fract() != 0.0 || x.re > 170.0 {
                        return None;
                    }
                    c((1..=x.re as u64).fold(1.0, |acc, k| acc * k as f64))
                }
                "binom" => {
                    let n = arg(0, budget)?.re;
                    let k = arg(1, budget)?.re;
                    if k < 0.0 || k > n || k > 1000.0 {
                        return None;
                    }
                    c((0..k as u64).fold(1.0, |acc, j| acc * (n - j as f64) / (j as f64 + 1.0)))
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    (!v.re.is_nan() && !v.im.is_nan()).then_some(v)
}
