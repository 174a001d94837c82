//! Postgres `numeric` with the exactness Postgres has: a fixed decimal of up to 38 digits whose
//! scale (`dscale`) follows Postgres' rules, so both comparisons and `::text` output agree with
//! the server. Values or results we cannot represent exactly are errors, never approximations.

use super::EvalError;
use std::cmp::Ordering;
use std::fmt;

/// Largest number of decimal digits a mantissa may have.
const MAX_DIGITS: u32 = 38;

/// `10^i` for `i` in `0..=38`.
const fn pow10_table() -> [i128; 39] {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
}
const POW10: [i128; 39] = pow10_table();

fn pow10(n: u32) -> Option<i128> {
    POW10.get(n as usize).copied()
}

fn unsupported() -> EvalError {
    EvalError::Unsupported("numeric value exceeds the 38 digits supported here".into())
}

/// A finite decimal `m / 10^scale` with `|m| < 10^38`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dec {
    m: i128,
    scale: u32,
}

/// A numeric value, including Postgres' special values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    NaN,
    PosInf,
    NegInf,
    Fin(Dec),
}

impl Dec {
    /// Builds `m / 10^scale`, checking the representable range.
    pub(crate) fn new(m: i128, scale: u32) -> Result<Dec, EvalError> {
        if scale > MAX_DIGITS || m.unsigned_abs() >= POW10[MAX_DIGITS as usize] as u128 {
            return Err(unsupported());
        }
        Ok(Dec { m, scale })
    }

    /// An integer as a decimal of scale 0.
    pub(crate) fn from_i64(v: i64) -> Dec {
        Dec { m: v as i128, scale: 0 }
    }

    /// Whether the value is zero (at any scale).
    pub(crate) fn is_zero(&self) -> bool {
        self.m == 0
    }

    fn signum(&self) -> i128 {
        self.m.signum()
    }

    /// Mantissa at a larger scale, if it fits.
    fn at_scale(&self, scale: u32) -> Option<i128> {
        if scale < self.scale {
            return None;
        }
        self.m.checked_mul(pow10(scale - self.scale)?)
    }

    fn cmp(&self, other: &Dec) -> Ordering {
        let (a, b) = (self.signum(), other.signum());
        if a != b {
            return a.cmp(&b);
        }
        let s = self.scale.max(other.scale);
        match (self.at_scale(s), other.at_scale(s)) {
            (Some(x), Some(y)) => x.cmp(&y),
            // The side that overflowed when scaled up has the larger magnitude.
            (None, _) => {
                if a >= 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (_, None) => {
                if a >= 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
        }
    }

    fn add(&self, other: &Dec) -> Result<Dec, EvalError> {
        let s = self.scale.max(other.scale);
        let a = self.at_scale(s).ok_or_else(unsupported)?;
        let b = other.at_scale(s).ok_or_else(unsupported)?;
        Dec::new(a.checked_add(b).ok_or_else(unsupported)?, s)
    }

    fn neg(&self) -> Dec {
        Dec { m: -self.m, scale: self.scale }
    }

    fn mul(&self, other: &Dec) -> Result<Dec, EvalError> {
        Dec::new(self.m.checked_mul(other.m).ok_or_else(unsupported)?, self.scale + other.scale)
    }

    /// Postgres' NBASE (10000) weight and first NBASE digit of the value (`select_div_scale`).
    fn nbase_weight_and_first_digit(&self) -> (i64, i128) {
        if self.m == 0 {
            return (0, 0);
        }
        let abs = self.m.unsigned_abs();
        let ndigits = abs.to_string().len() as i64;
        // Decimal exponent of the leading digit.
        let e = ndigits - 1 - self.scale as i64;
        let w = e.div_euclid(4);
        // first digit = floor(|x| / 10^(4w)) = floor(abs / 10^(4w + scale)).
        let shift = 4 * w + self.scale as i64;
        let first = if shift >= 0 {
            match pow10(shift as u32) {
                Some(p) => (abs / p as u128) as i128,
                None => 0,
            }
        } else {
            (abs * POW10[(-shift) as usize] as u128) as i128
        };
        (w, first)
    }

    /// Division rounded at Postgres' `select_div_scale` result scale, half away from zero.
    fn div(&self, other: &Dec) -> Result<Dec, EvalError> {
        if other.m == 0 {
            return Err(EvalError::DivisionByZero);
        }
        let (w1, f1) = self.nbase_weight_and_first_digit();
        let (w2, f2) = other.nbase_weight_and_first_digit();
        let mut qweight = w1 - w2;
        if f1 <= f2 {
            qweight -= 1;
        }
        let rscale = (16 - qweight * 4).max(self.scale as i64).max(other.scale as i64).clamp(0, 1000);
        if rscale > MAX_DIGITS as i64 {
            return Err(unsupported());
        }
        let rscale = rscale as u32;
        // q = m1 * 10^(rscale + s2 - s1) / m2
        let k = rscale as i64 + other.scale as i64 - self.scale as i64;
        let (num, den) = if k >= 0 {
            let p = pow10(k as u32).ok_or_else(unsupported)?;
            (self.m.checked_mul(p).ok_or_else(unsupported)?, other.m)
        } else {
            let p = pow10((-k) as u32).ok_or_else(unsupported)?;
            (self.m, other.m.checked_mul(p).ok_or_else(unsupported)?)
        };
        Dec::new(div_round_half_away(num, den).ok_or_else(unsupported)?, rscale)
    }

    /// Remainder of truncated division; scale is the larger input scale.
    fn rem(&self, other: &Dec) -> Result<Dec, EvalError> {
        if other.m == 0 {
            return Err(EvalError::DivisionByZero);
        }
        let s = self.scale.max(other.scale);
        let a = self.at_scale(s).ok_or_else(unsupported)?;
        let b = other.at_scale(s).ok_or_else(unsupported)?;
        Dec::new(a % b, s)
    }

    /// Rounds (half away from zero) to `scale` digits after the point; also pads to it.
    pub(crate) fn round_to(&self, scale: u32) -> Result<Dec, EvalError> {
        if scale >= self.scale {
            return Dec::new(self.at_scale(scale).ok_or_else(unsupported)?, scale);
        }
        let p = pow10(self.scale - scale).ok_or_else(unsupported)?;
        Dec::new(div_round_half_away(self.m, p).ok_or_else(unsupported)?, scale)
    }

    /// Nearest integer, half away from zero (numeric → int casts).
    pub(crate) fn round_to_i128(&self) -> i128 {
        match pow10(self.scale) {
            Some(p) => div_round_half_away(self.m, p).unwrap_or(0),
            None => 0,
        }
    }

    /// Number of digits before the decimal point (0 for |x| < 1).
    fn integer_digits(&self) -> u32 {
        let int = match pow10(self.scale) {
            Some(p) => (self.m / p).unsigned_abs(),
            None => 0,
        };
        if int == 0 {
            0
        } else {
            int.to_string().len() as u32
        }
    }
}

/// `n / d` rounded half away from zero.
fn div_round_half_away(n: i128, d: i128) -> Option<i128> {
    let q = n.checked_div(d)?;
    let r = n.checked_rem(d)?;
    if r == 0 {
        return Some(q);
    }
    let twice = r.unsigned_abs().checked_mul(2)?;
    if twice >= d.unsigned_abs() {
        let sign = if (n < 0) != (d < 0) { -1 } else { 1 };
        q.checked_add(sign)
    } else {
        Some(q)
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.m.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let mut out = String::with_capacity(digits.len() + 3);
        if self.m < 0 {
            out.push('-');
        }
        if digits.len() > scale {
            out.push_str(&digits[..digits.len() - scale]);
            if scale > 0 {
                out.push('.');
                out.push_str(&digits[digits.len() - scale..]);
            }
        } else {
            out.push('0');
            if scale > 0 {
                out.push('.');
                out.extend(std::iter::repeat_n('0', scale - digits.len()));
                out.push_str(&digits);
            }
        }
        f.write_str(&out)
    }
}

impl Num {
    /// Postgres' `numeric_in`.
    pub(crate) fn parse(input: &str) -> Result<Num, EvalError> {
        let bad = || EvalError::InvalidInput(format!("invalid input syntax for type numeric: \"{input}\""));
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        match s.to_ascii_lowercase().as_str() {
            "nan" => return Ok(Num::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Num::PosInf),
            "-infinity" | "-inf" => return Ok(Num::NegInf),
            _ => {}
        }
        let (neg, (mut mantissa, frac), exp) = split_decimal(s).ok_or_else(bad)?;
        // scale = fraction digits - exponent; a negative scale means trailing zeros.
        let mut scale = frac as i64 - exp;
        if scale < 0 {
            mantissa.extend(std::iter::repeat_n(b'0', (-scale).min(100) as usize));
            scale = 0;
        }
        let trimmed: Vec<u8> = {
            let first = mantissa.iter().position(|&c| c != b'0').unwrap_or(mantissa.len());
            mantissa[first..].to_vec()
        };
        if trimmed.len() > MAX_DIGITS as usize || scale > MAX_DIGITS as i64 {
            return Err(unsupported());
        }
        let mut m: i128 = 0;
        for c in trimmed {
            m = m * 10 + (c - b'0') as i128;
        }
        Ok(Num::Fin(Dec::new(if neg { -m } else { m }, scale as u32)?))
    }

    /// integer → numeric (exact).
    pub(crate) fn from_i64(v: i64) -> Num {
        Num::Fin(Dec::from_i64(v))
    }

    /// float8 → numeric: Postgres prints the float with `%.15g` (`%.6g` for float4) and reads that.
    pub(crate) fn from_float(v: f64, significant: usize) -> Result<Num, EvalError> {
        if v.is_nan() {
            return Ok(Num::NaN);
        }
        if v.is_infinite() {
            return Ok(if v > 0.0 { Num::PosInf } else { Num::NegInf });
        }
        let s = format!("{:.*e}", significant.saturating_sub(1), v);
        // `d.ddddde-5`: strip trailing zeros of the mantissa the way %g does.
        let (mant, exp) = s.split_once('e').ok_or_else(unsupported)?;
        let mant = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        Num::parse(&format!("{mant}e{exp}"))
    }

    /// numeric → float8, correctly rounded like Postgres' `strtod` of the text form.
    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Num::NaN => f64::NAN,
            Num::PosInf => f64::INFINITY,
            Num::NegInf => f64::NEG_INFINITY,
            Num::Fin(d) => d.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    /// numeric → float4, correctly rounded like Postgres' `strtof` of the text form.
    pub(crate) fn to_f32(self) -> f32 {
        match self {
            Num::NaN => f32::NAN,
            Num::PosInf => f32::INFINITY,
            Num::NegInf => f32::NEG_INFINITY,
            Num::Fin(d) => d.to_string().parse().unwrap_or(f32::NAN),
        }
    }

    /// numeric → integer: rounds half away from zero; specials cannot be converted.
    pub(crate) fn to_i128(self) -> Result<i128, EvalError> {
        match self {
            Num::NaN => Err(EvalError::InvalidInput("cannot convert NaN to integer".into())),
            Num::PosInf | Num::NegInf => Err(EvalError::InvalidInput("cannot convert infinity to integer".into())),
            Num::Fin(d) => Ok(d.round_to_i128()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Num::NegInf => 0,
            Num::Fin(_) => 1,
            Num::PosInf => 2,
            Num::NaN => 3,
        }
    }

    /// Postgres' numeric ordering: -Infinity < finite < Infinity < NaN, NaN = NaN.
    pub(crate) fn cmp(&self, other: &Num) -> Ordering {
        match (self, other) {
            (Num::Fin(a), Num::Fin(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn sign(&self) -> i128 {
        match self {
            Num::NaN => 0,
            Num::PosInf => 1,
            Num::NegInf => -1,
            Num::Fin(d) => d.signum(),
        }
    }

    /// `numeric + numeric` (scale: the larger input scale).
    pub(crate) fn add(&self, other: &Num) -> Result<Num, EvalError> {
        Ok(match (self, other) {
            (Num::Fin(a), Num::Fin(b)) => Num::Fin(a.add(b)?),
            (Num::NaN, _) | (_, Num::NaN) => Num::NaN,
            (Num::PosInf, Num::NegInf) | (Num::NegInf, Num::PosInf) => Num::NaN,
            (Num::PosInf, _) | (_, Num::PosInf) => Num::PosInf,
            _ => Num::NegInf,
        })
    }

    /// Unary minus.
    pub(crate) fn neg(&self) -> Num {
        match self {
            Num::NaN => Num::NaN,
            Num::PosInf => Num::NegInf,
            Num::NegInf => Num::PosInf,
            Num::Fin(d) => Num::Fin(d.neg()),
        }
    }

    /// `numeric - numeric`.
    pub(crate) fn sub(&self, other: &Num) -> Result<Num, EvalError> {
        self.add(&other.neg())
    }

    /// `numeric * numeric` (scale: the sum of the input scales).
    pub(crate) fn mul(&self, other: &Num) -> Result<Num, EvalError> {
        Ok(match (self, other) {
            (Num::Fin(a), Num::Fin(b)) => Num::Fin(a.mul(b)?),
            (Num::NaN, _) | (_, Num::NaN) => Num::NaN,
            _ => match self.sign() * other.sign() {
                0 => Num::NaN,
                s if s > 0 => Num::PosInf,
                _ => Num::NegInf,
            },
        })
    }

    /// `numeric / numeric` at Postgres' result scale; division by zero is an error.
    pub(crate) fn div(&self, other: &Num) -> Result<Num, EvalError> {
        Ok(match (self, other) {
            (Num::Fin(a), Num::Fin(b)) => Num::Fin(a.div(b)?),
            (Num::NaN, _) | (_, Num::NaN) => Num::NaN,
            (Num::PosInf | Num::NegInf, Num::PosInf | Num::NegInf) => Num::NaN,
            (Num::PosInf | Num::NegInf, Num::Fin(b)) => {
                if b.is_zero() {
                    return Err(EvalError::DivisionByZero);
                }
                if self.sign() * b.signum() > 0 {
                    Num::PosInf
                } else {
                    Num::NegInf
                }
            }
            // finite / ±Infinity = 0
            (Num::Fin(_), _) => Num::Fin(Dec { m: 0, scale: 0 }),
        })
    }

    /// `numeric % numeric` (truncated division remainder, sign of the dividend).
    pub(crate) fn rem(&self, other: &Num) -> Result<Num, EvalError> {
        Ok(match (self, other) {
            (Num::Fin(a), Num::Fin(b)) => Num::Fin(a.rem(b)?),
            (Num::NaN, _) | (_, Num::NaN) => Num::NaN,
            (Num::PosInf | Num::NegInf, _) => Num::NaN,
            (Num::Fin(a), _) => Num::Fin(*a),
        })
    }

    /// Applies a `numeric(precision, scale)` modifier: round to `scale`, then check the digits
    /// before the point fit.
    pub(crate) fn apply_typmod(&self, precision: u32, scale: u32) -> Result<Num, EvalError> {
        match self {
            Num::Fin(d) => {
                let r = d.round_to(scale)?;
                if r.m != 0 && r.integer_digits() > precision.saturating_sub(scale) {
                    return Err(EvalError::OutOfRange(format!(
                        "numeric field overflow: a field with precision {precision}, scale {scale} must round to an absolute value less than 10^{}",
                        precision.saturating_sub(scale)
                    )));
                }
                Ok(Num::Fin(r))
            }
            Num::NaN => Ok(Num::NaN),
            _ => Err(EvalError::OutOfRange(format!(
                "numeric field overflow: a field with precision {precision}, scale {scale} cannot hold an infinite value"
            ))),
        }
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Num) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::NaN => f.write_str("NaN"),
            Num::PosInf => f.write_str("Infinity"),
            Num::NegInf => f.write_str("-Infinity"),
            Num::Fin(d) => d.fmt(f),
        }
    }
}

/// Splits `[+-]digits[.digits][e[+-]digits]` into (negative, (all digits, fraction digit count),
/// exponent). `None` when it is not that shape.
pub(crate) fn split_decimal(s: &str) -> Option<(bool, (Vec<u8>, usize), i64)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let mut digits = Vec::new();
    let mut frac = 0usize;
    let mut seen_point = false;
    while i < b.len() {
        match b[i] {
            c @ b'0'..=b'9' => {
                digits.push(c);
                if seen_point {
                    frac += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        i += 1;
    }
    if digits.is_empty() {
        return None;
    }
    let mut exp: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let mut eneg = false;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            eneg = b[i] == b'-';
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            exp = exp.saturating_mul(10).saturating_add((b[i] - b'0') as i64);
            i += 1;
        }
        if i == start {
            return None;
        }
        if exp > 100_000 {
            exp = 100_000;
        }
        if eneg {
            exp = -exp;
        }
    }
    if i != b.len() {
        return None;
    }
    Some((neg, (digits, frac), exp))
}
