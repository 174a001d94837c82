//! `float4`/`float8` input and output exactly as Postgres 12+ does them: `strtod`-style input with
//! range errors, and shortest round-trip output with Postgres' switch to exponent notation.

use super::numeric::split_decimal;
use super::EvalError;

/// Postgres' `float8in` (`float4in` when `single`): the value, or the message Postgres gives.
pub(crate) fn parse_float(input: &str, single: bool) -> Result<f64, EvalError> {
    let type_name = if single { "real" } else { "double precision" };
    let bad = || EvalError::InvalidInput(format!("invalid input syntax for type {type_name}: \"{input}\""));
    let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
    match s.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => return Ok(f64::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(f64::INFINITY),
        "-infinity" | "-inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let (_, (digits, _), _) = split_decimal(s).ok_or_else(bad)?;
    let out_of_range = || EvalError::OutOfRange(format!("\"{input}\" is out of range for type {type_name}"));
    let nonzero = digits.iter().any(|&d| d != b'0');
    if single {
        let v: f32 = s.parse().map_err(|_| bad())?;
        if v.is_infinite() || (v == 0.0 && nonzero) {
            return Err(out_of_range());
        }
        Ok(v as f64)
    } else {
        let v: f64 = s.parse().map_err(|_| bad())?;
        if v.is_infinite() || (v == 0.0 && nonzero) {
            return Err(out_of_range());
        }
        Ok(v)
    }
}

/// Postgres' `float8out` / `float4out` with `extra_float_digits > 0` (the default): the output
/// of Postgres' Ryu port (`src/common/d2s.c`, `f2s.c`), which is the shortest representation that
/// lies strictly inside the rounding interval (bounds excluded), in fixed notation for decimal
/// exponents in `-4..15` (`-4..6` for float4) and `d.ddde+XX` otherwise.
pub(crate) fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let (mantissa, exponent) = if single { ryu::f2d_full(v as f32) } else { ryu::d2d_full(v) };
    to_chars(v.is_sign_negative(), mantissa, exponent, if single { 6 } else { 15 })
}

/// Ryu's `to_chars`: `mantissa * 10^exponent` laid out as Postgres prints it.
fn to_chars(negative: bool, mantissa: u64, exponent: i32, upper: i32) -> String {
    let mut digits = mantissa.to_string();
    let olength = digits.len() as i32;
    let exp = exponent + olength - 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..upper).contains(&exp) {
        let nexp = exponent + olength;
        if nexp <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-nexp) as usize));
            out.push_str(&digits);
        } else if exponent < 0 {
            out.push_str(&digits[..nexp as usize]);
            out.push('.');
            out.push_str(&digits[nexp as usize..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', exponent as usize));
        }
        return out;
    }
    if exponent == 0 {
        // From the small-integer path: move trailing zeros into the exponent.
        while digits.len() > 1 && digits.ends_with('0') {
            digits.pop();
        }
    }
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exp.unsigned_abs()));
    out
}

/// A faithful port of the decision logic of Postgres' Ryu (`d2d`, `f2d` and the small-integer
/// paths, with `acceptBounds = false`), computing Ryu's `vr`/`vp`/`vm` exactly with big integers
/// instead of its precomputed tables.
mod ryu {
    use std::cmp::Ordering;

    /// Unsigned big integer, little-endian 64-bit limbs.
    #[derive(Clone)]
    struct Big(Vec<u64>);

    impl Big {
        fn from_u64(v: u64) -> Big {
            Big(vec![v])
        }
        fn mul_small(&mut self, m: u64) {
            let mut carry: u128 = 0;
            for limb in self.0.iter_mut() {
                let x = (*limb as u128) * (m as u128) + carry;
                *limb = x as u64;
                carry = x >> 64;
            }
            if carry > 0 {
                self.0.push(carry as u64);
            }
        }
        fn mul_pow5(&mut self, mut n: u32) {
            // 5^27 is the largest power of five below 2^64.
            const P27: u64 = 7_450_580_596_923_828_125;
            while n >= 27 {
                self.mul_small(P27);
                n -= 27;
            }
            self.mul_small(5u64.pow(n));
        }
        fn shl(&mut self, bits: u32) {
            let limbs = (bits / 64) as usize;
            let rest = bits % 64;
            if rest > 0 {
                let mut carry = 0u64;
                for limb in self.0.iter_mut() {
                    let next = *limb >> (64 - rest);
                    *limb = (*limb << rest) | carry;
                    carry = next;
                }
                if carry > 0 {
                    self.0.push(carry);
                }
            }
            if limbs > 0 {
                let mut v = vec![0u64; limbs];
                v.extend_from_slice(&self.0);
                self.0 = v;
            }
        }
        /// `floor(self / 2^bits)` when the result fits in 64 bits (it does for Ryu's values).
        fn shr_to_u64(&self, bits: u32) -> u64 {
            let limb = (bits / 64) as usize;
            let rest = bits % 64;
            let lo = self.0.get(limb).copied().unwrap_or(0);
            let hi = self.0.get(limb + 1).copied().unwrap_or(0);
            if rest == 0 {
                lo
            } else {
                (lo >> rest) | (hi << (64 - rest))
            }
        }
        fn cmp(&self, other: &Big) -> Ordering {
            let len = |b: &Big| b.0.iter().rposition(|&l| l != 0).map_or(0, |p| p + 1);
            let (a, b) = (len(self), len(other));
            if a != b {
                return a.cmp(&b);
            }
            for i in (0..a).rev() {
                match self.0[i].cmp(&other.0[i]) {
                    Ordering::Equal => continue,
                    o => return o,
                }
            }
            Ordering::Equal
        }
    }

    /// `floor(n / d)` for a quotient known to fit in 64 bits.
    fn div_to_u64(n: &Big, d: &Big) -> u64 {
        let mut q: u64 = 0;
        for bit in (0..64).rev() {
            let candidate = q | (1u64 << bit);
            let mut prod = d.clone();
            prod.mul_small(candidate);
            if prod.cmp(n) != Ordering::Greater {
                q = candidate;
            }
        }
        q
    }

    /// `floor(m * 2^e2 / 10^q)` for `e2 >= q` (Ryu's e2 >= 0 branch).
    fn scaled_down(m: u64, e2: u32, q: u32) -> u64 {
        let mut n = Big::from_u64(m);
        n.shl(e2 - q);
        let mut d = Big::from_u64(1);
        d.mul_pow5(q);
        div_to_u64(&n, &d)
    }

    /// `floor(m * 5^i / 2^q)` (Ryu's e2 < 0 branch).
    fn scaled_up(m: u64, i: u32, q: u32) -> u64 {
        let mut n = Big::from_u64(m);
        n.mul_pow5(i);
        n.shr_to_u64(q)
    }

    fn log10_pow2(e: i32) -> u32 {
        ((e as u32) * 78_913) >> 18
    }

    fn log10_pow5(e: i32) -> u32 {
        ((e as u32) * 732_923) >> 20
    }

    fn pow5_factor(mut v: u64) -> u32 {
        let mut count = 0;
        while v != 0 {
            let (q, r) = (v / 5, v % 5);
            if r != 0 {
                break;
            }
            v = q;
            count += 1;
        }
        count
    }

    fn multiple_of_pow5(v: u64, p: u32) -> bool {
        pow5_factor(v) >= p
    }

    fn multiple_of_pow2(v: u64, p: u32) -> bool {
        p < 64 && v & ((1u64 << p) - 1) == 0
    }

    /// `double_to_shortest_decimal_bufn` up to `to_chars`: (mantissa, exponent) of a finite,
    /// non-zero double.
    pub(super) fn d2d_full(f: f64) -> (u64, i32) {
        let bits = f.to_bits();
        let ieee_mantissa = bits & ((1u64 << 52) - 1);
        let ieee_exponent = ((bits >> 52) & 0x7ff) as u32;
        // Small integers are printed exactly.
        let e2 = ieee_exponent as i32 - 1023 - 52;
        if (-52..=0).contains(&e2) {
            let mask = (1u64 << (-e2)) - 1;
            if ieee_mantissa & mask == 0 {
                let m2 = (1u64 << 52) | ieee_mantissa;
                return (m2 >> (-e2), 0);
            }
        }
        d2d(ieee_mantissa, ieee_exponent)
    }

    fn d2d(ieee_mantissa: u64, ieee_exponent: u32) -> (u64, i32) {
        let (e2, m2) = if ieee_exponent == 0 {
            (1 - 1023 - 52 - 2, ieee_mantissa)
        } else {
            (ieee_exponent as i32 - 1023 - 52 - 2, (1u64 << 52) | ieee_mantissa)
        };
        let mv = 4 * m2;
        let mm_shift = (ieee_mantissa != 0 || ieee_exponent <= 1) as u64;
        let mp = mv + 2;
        let mm = mv - 1 - mm_shift;
        let (mut vr, mut vp, mut vm, e10);
        let mut vr_tz = false;
        if e2 >= 0 {
            let q = log10_pow2(e2) - (e2 > 3) as u32;
            e10 = q as i32;
            vr = scaled_down(mv, e2 as u32, q);
            vp = scaled_down(mp, e2 as u32, q);
            vm = scaled_down(mm, e2 as u32, q);
            if q <= 21 {
                if mv % 5 == 0 {
                    vr_tz = multiple_of_pow5(mv, q);
                } else {
                    vp -= multiple_of_pow5(mv + 2, q) as u64;
                }
            }
        } else {
            let q = log10_pow5(-e2) - (-e2 > 1) as u32;
            let i = (-e2) as u32 - q;
            e10 = q as i32 + e2;
            vr = scaled_up(mv, i, q);
            vp = scaled_up(mp, i, q);
            vm = scaled_up(mm, i, q);
            if q <= 1 {
                vr_tz = true;
                vp -= 1;
            } else if q < 63 {
                vr_tz = multiple_of_pow2(mv, q - 1);
            }
        }
        let mut removed = 0;
        let mut last_removed_digit = 0u64;
        let output;
        if vr_tz {
            while vp / 10 > vm / 10 {
                vr_tz &= last_removed_digit == 0;
                last_removed_digit = vr % 10;
                vr /= 10;
                vp /= 10;
                vm /= 10;
                removed += 1;
            }
            if vr_tz && last_removed_digit == 5 && vr % 2 == 0 {
                last_removed_digit = 4;
            }
            output = vr + (vr == vm || last_removed_digit >= 5) as u64;
        } else {
            let mut round_up = false;
            while vp / 10 > vm / 10 {
                round_up = vr % 10 >= 5;
                vr /= 10;
                vp /= 10;
                vm /= 10;
                removed += 1;
            }
            output = vr + (vr == vm || round_up) as u64;
        }
        (output, e10 + removed)
    }

    /// `float_to_shortest_decimal_bufn` up to `to_chars` for a finite, non-zero float.
    pub(super) fn f2d_full(f: f32) -> (u64, i32) {
        let bits = f.to_bits();
        let ieee_mantissa = bits & ((1u32 << 23) - 1);
        let ieee_exponent = (bits >> 23) & 0xff;
        let e2 = ieee_exponent as i32 - 127 - 23;
        if (-23..=0).contains(&e2) {
            let mask = (1u32 << (-e2)) - 1;
            if ieee_mantissa & mask == 0 {
                let m2 = (1u32 << 23) | ieee_mantissa;
                return ((m2 >> (-e2)) as u64, 0);
            }
        }
        f2d(ieee_mantissa, ieee_exponent)
    }

    fn f2d(ieee_mantissa: u32, ieee_exponent: u32) -> (u64, i32) {
        let (e2, m2) = if ieee_exponent == 0 {
            (1 - 127 - 23 - 2, ieee_mantissa as u64)
        } else {
            (ieee_exponent as i32 - 127 - 23 - 2, ((1u32 << 23) | ieee_mantissa) as u64)
        };
        let mv = 4 * m2;
        let mp = mv + 2;
        let mm_shift = (ieee_mantissa != 0 || ieee_exponent <= 1) as u64;
        let mm = mv - 1 - mm_shift;
        let (mut vr, mut vp, mut vm, e10);
        let mut vr_tz = false;
        let mut last_removed_digit = 0u64;
        if e2 >= 0 {
            let q = log10_pow2(e2);
            e10 = q as i32;
            vr = scaled_down(mv, e2 as u32, q);
            vp = scaled_down(mp, e2 as u32, q);
            vm = scaled_down(mm, e2 as u32, q);
            if q != 0 && (vp - 1) / 10 <= vm / 10 {
                last_removed_digit = scaled_down(mv, e2 as u32, q - 1) % 10;
            }
            if q <= 9 {
                if mv % 5 == 0 {
                    vr_tz = multiple_of_pow5(mv, q);
                } else {
                    vp -= multiple_of_pow5(mp, q) as u64;
                }
            }
        } else {
            let q = log10_pow5(-e2);
            let i = (-e2) as u32 - q;
            e10 = q as i32 + e2;
            vr = scaled_up(mv, i, q);
            vp = scaled_up(mp, i, q);
            vm = scaled_up(mm, i, q);
            if q != 0 && (vp - 1) / 10 <= vm / 10 {
                last_removed_digit = scaled_up(mv, i + 1, q - 1) % 10;
            }
            if q <= 1 {
                vr_tz = true;
                vp -= 1;
            } else if q < 31 {
                vr_tz = multiple_of_pow2(mv, q - 1);
            }
        }
        let mut removed = 0;
        let output;
        if vr_tz {
            while vp / 10 > vm / 10 {
                vr_tz &= last_removed_digit == 0;
                last_removed_digit = vr % 10;
                vr /= 10;
                vp /= 10;
                vm /= 10;
                removed += 1;
            }
            if vr_tz && last_removed_digit == 5 && vr % 2 == 0 {
                last_removed_digit = 4;
            }
            output = vr + (vr == vm || last_removed_digit >= 5) as u64;
        } else {
            while vp / 10 > vm / 10 {
                last_removed_digit = vr % 10;
                vr /= 10;
                vp /= 10;
                vm /= 10;
                removed += 1;
            }
            output = vr + (vr == vm || last_removed_digit >= 5) as u64;
        }
        (output, e10 + removed)
    }
}

/// Postgres' float ordering: NaN equals NaN and sorts above everything; -0 = 0.
pub(crate) fn cmp_float(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}
