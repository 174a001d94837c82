//! Dates, times, timestamps and intervals as Postgres stores them (days / microseconds since
//! 2000-01-01, with `i64::MIN`/`i64::MAX` as `-infinity`/`infinity`), their ISO text forms
//! (DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601 — the settings Ferrite's sessions use), and
//! the arithmetic Postgres defines between them.
//!
//! Input accepts the unambiguous ISO spellings plus `infinity`/`-infinity`/`epoch`; anything else
//! (named time zones, `now`, `today`, locale formats) is refused rather than guessed.

use super::EvalError;
use std::cmp::Ordering;

/// Microseconds per second (Postgres stores times in microseconds).
pub(crate) const USECS_PER_SEC: i64 = 1_000_000;
/// Microseconds per minute.
pub(crate) const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
/// Microseconds per hour.
pub(crate) const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
/// Microseconds per day.
pub(crate) const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

/// `-infinity` for dates and timestamps.
pub(crate) const NEG_INF: i64 = i64::MIN;
/// `infinity` for dates and timestamps.
pub(crate) const POS_INF: i64 = i64::MAX;

/// Days from 1970-01-01 to 2000-01-01 (Postgres' epoch).
const PG_EPOCH_DAYS: i64 = 10_957;
/// First valid date: 4714-11-24 BC (Julian day 0).
const MIN_DATE: i64 = -2_451_545;
/// First date past the valid range (5874898-01-01).
const END_DATE: i64 = 2_147_483_494 - 2_451_545;
/// First valid timestamp (4714-11-24 BC 00:00).
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// First timestamp past the valid range (294277-01-01 00:00).
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// An interval: months, days and microseconds are kept apart, as in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

fn invalid(type_name: &str, input: &str) -> EvalError {
    EvalError::InvalidInput(format!("invalid input syntax for type {type_name}: \"{input}\""))
}

fn out_of_range(what: &str) -> EvalError {
    EvalError::OutOfRange(format!("{what} out of range"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

/// Days since 2000-01-01 → (astronomical year, month, day).
pub(crate) fn date_parts(days: i64) -> (i64, u32, u32) {
    civil_from_days(days + PG_EPOCH_DAYS)
}

fn date_from_parts(y: i64, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) - PG_EPOCH_DAYS
}

/// Checks a finite date against Postgres' range.
pub(crate) fn check_date(days: i64) -> Result<i64, EvalError> {
    if (MIN_DATE..END_DATE).contains(&days) {
        Ok(days)
    } else {
        Err(out_of_range("date"))
    }
}

/// Checks a finite timestamp against Postgres' range.
pub(crate) fn check_timestamp(us: i64) -> Result<i64, EvalError> {
    if (MIN_TIMESTAMP..END_TIMESTAMP).contains(&us) {
        Ok(us)
    } else {
        Err(out_of_range("timestamp"))
    }
}

fn is_finite(v: i64) -> bool {
    v != NEG_INF && v != POS_INF
}

/// Words Postgres accepts that depend on the clock: refused, since shapes must be deterministic.
fn reject_clock_words(lower: &str, type_name: &str) -> Result<(), EvalError> {
    if matches!(lower, "now" | "today" | "tomorrow" | "yesterday") {
        return Err(EvalError::Unsupported(format!(
            "{type_name} input \"{lower}\" is not supported: it depends on the current time"
        )));
    }
    Ok(())
}

/// A parsed `YYYY-MM-DD[ (T| )HH:MM[:SS[.ffffff]]][zone][ BC|AD]`.
struct DateTimeText {
    days: i64,
    time_us: i64,
    has_time: bool,
    /// Seconds east of UTC, if a zone was given.
    offset_secs: Option<i64>,
}

/// Parses fixed-width-ish digits; returns (value, rest).
fn take_digits(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let n = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    if n < min || n > max {
        return None;
    }
    let v = s[..n].parse().ok()?;
    Some((v, &s[n..]))
}

/// `HH:MM[:SS[.ffffff]]` → microseconds since midnight (up to 24:00:00) and the rest.
fn parse_clock<'a>(s: &'a str, type_name: &str, input: &str) -> Result<(i64, &'a str), EvalError> {
    let bad = || invalid(type_name, input);
    let (h, rest) = take_digits(s, 1, 2).ok_or_else(bad)?;
    let rest = rest.strip_prefix(':').ok_or_else(bad)?;
    let (mi, mut rest) = take_digits(rest, 2, 2).ok_or_else(bad)?;
    let mut sec = 0;
    let mut frac_us = 0;
    if let Some(r) = rest.strip_prefix(':') {
        let (sv, r) = take_digits(r, 2, 2).ok_or_else(bad)?;
        sec = sv;
        rest = r;
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(|b| b.is_ascii_digit()).count();
            if n > 6 {
                return Err(EvalError::Unsupported(format!(
                    "{type_name} input \"{input}\" has more than 6 fractional second digits, which is not supported"
                )));
            }
            let digits = &r[..n];
            let mut v: i64 = if n == 0 { 0 } else { digits.parse().map_err(|_| bad())? };
            for _ in n..6 {
                v *= 10;
            }
            frac_us = v;
            rest = &r[n..];
        }
    }
    let field_range = || EvalError::OutOfRange(format!("date/time field value out of range: \"{input}\""));
    if h > 24 || mi > 59 || sec > 60 || (h == 24 && (mi > 0 || sec > 0 || frac_us > 0)) {
        return Err(field_range());
    }
    Ok((h * USECS_PER_HOUR + mi * USECS_PER_MINUTE + sec * USECS_PER_SEC + frac_us, rest))
}

/// `Z`, `UTC`, `GMT`, `+HH`, `+HH:MM`, `+HHMM`, `+HH:MM:SS` → seconds east of UTC.
fn parse_zone(s: &str, type_name: &str, input: &str) -> Result<i64, EvalError> {
    let lower = s.to_ascii_lowercase();
    if matches!(lower.as_str(), "z" | "utc" | "gmt" | "+00" | "-00") {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => {
            return Err(EvalError::Unsupported(format!(
                "time zone \"{s}\" in {type_name} input \"{input}\" is not supported (use Z or a numeric offset)"
            )))
        }
    };
    let bad = || invalid(type_name, input);
    let (h, m, sec) = if rest.contains(':') {
        let mut parts = rest.split(':');
        let h = parts.next().and_then(|p| take_digits(p, 1, 2)).filter(|(_, r)| r.is_empty()).ok_or_else(bad)?.0;
        let m = match parts.next() {
            Some(p) => take_digits(p, 2, 2).filter(|(_, r)| r.is_empty()).ok_or_else(bad)?.0,
            None => 0,
        };
        let sec = match parts.next() {
            Some(p) => take_digits(p, 2, 2).filter(|(_, r)| r.is_empty()).ok_or_else(bad)?.0,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        (h, m, sec)
    } else {
        match rest.len() {
            1 | 2 => (take_digits(rest, 1, 2).ok_or_else(bad)?.0, 0, 0),
            4 => {
                let (v, r) = take_digits(rest, 4, 4).ok_or_else(bad)?;
                if !r.is_empty() {
                    return Err(bad());
                }
                (v / 100, v % 100, 0)
            }
            _ => return Err(bad()),
        }
    };
    if h > 15 || m > 59 || sec > 59 {
        return Err(EvalError::OutOfRange(format!("time zone displacement out of range: \"{input}\"")));
    }
    Ok(sign * (h * 3600 + m * 60 + sec))
}

fn parse_date_time_text(input: &str, type_name: &str) -> Result<DateTimeText, EvalError> {
    let bad = || invalid(type_name, input);
    let mut s = input.trim_matches(|c: char| c.is_ascii_whitespace());
    let mut bc = false;
    {
        let lower = s.to_ascii_lowercase();
        if lower.ends_with(" bc") {
            bc = true;
            s = s[..s.len() - 3].trim_end();
        } else if lower.ends_with(" ad") {
            s = s[..s.len() - 3].trim_end();
        }
    }
    let (year, rest) = take_digits(s, 4, 9).ok_or_else(bad)?;
    let rest = rest.strip_prefix('-').ok_or_else(bad)?;
    let (month, rest) = take_digits(rest, 1, 2).ok_or_else(bad)?;
    let rest = rest.strip_prefix('-').ok_or_else(bad)?;
    let (day, rest) = take_digits(rest, 1, 2).ok_or_else(bad)?;
    if year == 0 {
        return Err(EvalError::OutOfRange(format!("date/time field value out of range: \"{input}\"")));
    }
    let astro = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(astro, month as u32) as i64 {
        return Err(EvalError::OutOfRange(format!("date/time field value out of range: \"{input}\"")));
    }
    let days = date_from_parts(astro, month as u32, day as u32);
    let mut out = DateTimeText { days, time_us: 0, has_time: false, offset_secs: None };
    let rest = if let Some(r) = rest.strip_prefix(['T', 't']) {
        r
    } else if rest.starts_with(' ') {
        rest.trim_start()
    } else if rest.is_empty() {
        return Ok(out);
    } else {
        return Err(bad());
    };
    if rest.is_empty() {
        return Ok(out);
    }
    let (time_us, rest) = parse_clock(rest, type_name, input)?;
    out.time_us = time_us;
    out.has_time = true;
    let zone = rest.trim();
    if !zone.is_empty() {
        out.offset_secs = Some(parse_zone(zone, type_name, input)?);
    }
    Ok(out)
}

/// Postgres' `date_in` for the supported spellings.
pub(crate) fn parse_date(input: &str) -> Result<i64, EvalError> {
    let lower = input.trim().to_ascii_lowercase();
    match lower.as_str() {
        "infinity" | "+infinity" => return Ok(POS_INF),
        "-infinity" => return Ok(NEG_INF),
        "epoch" => return Ok(-PG_EPOCH_DAYS),
        _ => {}
    }
    reject_clock_words(&lower, "date")?;
    let t = parse_date_time_text(input, "date")?;
    check_date(t.days)
}

/// Postgres' `timestamp_in` (`with_tz`: `timestamptz_in` in a UTC session). A zone on a plain
/// timestamp is ignored, as Postgres does.
pub(crate) fn parse_timestamp(input: &str, with_tz: bool) -> Result<i64, EvalError> {
    let type_name = if with_tz { "timestamp with time zone" } else { "timestamp without time zone" };
    let lower = input.trim().to_ascii_lowercase();
    match lower.as_str() {
        "infinity" | "+infinity" => return Ok(POS_INF),
        "-infinity" => return Ok(NEG_INF),
        "epoch" => return Ok(-PG_EPOCH_DAYS * USECS_PER_DAY),
        _ => {}
    }
    reject_clock_words(&lower, type_name)?;
    let t = parse_date_time_text(input, type_name)?;
    let mut us = t
        .days
        .checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(t.time_us))
        .ok_or_else(|| out_of_range("timestamp"))?;
    if with_tz {
        if let Some(off) = t.offset_secs {
            us = us.checked_sub(off * USECS_PER_SEC).ok_or_else(|| out_of_range("timestamp"))?;
        }
    }
    let _ = t.has_time;
    check_timestamp(us)
}

/// Postgres' `time_in` for `HH:MM[:SS[.ffffff]]` (`allballs` too).
pub(crate) fn parse_time(input: &str) -> Result<i64, EvalError> {
    let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.eq_ignore_ascii_case("allballs") {
        return Ok(0);
    }
    reject_clock_words(&s.to_ascii_lowercase(), "time")?;
    let (us, rest) = parse_clock(s, "time without time zone", input)?;
    if !rest.trim().is_empty() {
        return Err(invalid("time without time zone", input));
    }
    if us > USECS_PER_DAY {
        return Err(EvalError::OutOfRange(format!("date/time field value out of range: \"{input}\"")));
    }
    Ok(us)
}

fn push_clock(out: &mut String, us: i64) {
    let h = us / USECS_PER_HOUR;
    let m = (us % USECS_PER_HOUR) / USECS_PER_MINUTE;
    let s = (us % USECS_PER_MINUTE) / USECS_PER_SEC;
    let f = us % USECS_PER_SEC;
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    push_fraction(out, f);
}

fn push_fraction(out: &mut String, frac_us: i64) {
    if frac_us != 0 {
        let f = format!("{:06}", frac_us.abs());
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
}

fn push_date(out: &mut String, y: i64, m: u32, d: u32) {
    let shown = if y > 0 { y } else { 1 - y };
    out.push_str(&format!("{shown:04}-{m:02}-{d:02}"));
}

/// `date_out` in DateStyle ISO.
pub(crate) fn format_date(days: i64) -> String {
    match days {
        NEG_INF => "-infinity".into(),
        POS_INF => "infinity".into(),
        _ => {
            let (y, m, d) = date_parts(days);
            let mut out = String::with_capacity(13);
            push_date(&mut out, y, m, d);
            if y <= 0 {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// `timestamp_out` / `timestamptz_out` in DateStyle ISO, TimeZone UTC.
pub(crate) fn format_timestamp(us: i64, with_tz: bool) -> String {
    match us {
        NEG_INF => "-infinity".into(),
        POS_INF => "infinity".into(),
        _ => {
            let days = us.div_euclid(USECS_PER_DAY);
            let time = us.rem_euclid(USECS_PER_DAY);
            let (y, m, d) = date_parts(days);
            let mut out = String::with_capacity(32);
            push_date(&mut out, y, m, d);
            out.push(' ');
            push_clock(&mut out, time);
            if with_tz {
                out.push_str("+00");
            }
            if y <= 0 {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// `time_out`.
pub(crate) fn format_time(us: i64) -> String {
    let mut out = String::with_capacity(15);
    push_clock(&mut out, us);
    out
}

/// date → timestamp (midnight); infinities carry over.
pub(crate) fn date_to_timestamp(days: i64) -> Result<i64, EvalError> {
    if !is_finite(days) {
        return Ok(days);
    }
    let us = days.checked_mul(USECS_PER_DAY).ok_or_else(|| out_of_range("date"))?;
    check_timestamp(us).map_err(|_| EvalError::OutOfRange("date out of range for timestamp".into()))
}

/// timestamp → date (truncating the time of day).
pub(crate) fn timestamp_to_date(us: i64) -> i64 {
    if !is_finite(us) {
        return us;
    }
    us.div_euclid(USECS_PER_DAY)
}

/// timestamp → time of day; `None` (SQL NULL) for infinite timestamps, as in Postgres.
pub(crate) fn timestamp_to_time(us: i64) -> Option<i64> {
    if !is_finite(us) {
        return None;
    }
    Some(us.rem_euclid(USECS_PER_DAY))
}

/// `date + integer` / `date - integer`.
pub(crate) fn date_add_days(days: i64, n: i64) -> Result<i64, EvalError> {
    if !is_finite(days) {
        return Ok(days);
    }
    check_date(days.checked_add(n).ok_or_else(|| out_of_range("date"))?)
}

/// `date - date` → integer days.
pub(crate) fn date_diff(a: i64, b: i64) -> Result<i64, EvalError> {
    if !is_finite(a) || !is_finite(b) {
        return Err(EvalError::OutOfRange("cannot subtract infinite dates".into()));
    }
    Ok(a - b)
}

/// `timestamp + interval` (months first with end-of-month clamping, then days, then time).
pub(crate) fn timestamp_add_interval(us: i64, iv: Interval) -> Result<i64, EvalError> {
    if !is_finite(us) {
        return Ok(us);
    }
    let mut us = us;
    if iv.months != 0 {
        let days = us.div_euclid(USECS_PER_DAY);
        let time = us.rem_euclid(USECS_PER_DAY);
        let (y, m, d) = date_parts(days);
        let total = y * 12 + (m as i64 - 1) + iv.months as i64;
        let ny = total.div_euclid(12);
        let nm = (total.rem_euclid(12) + 1) as u32;
        let nd = d.min(days_in_month(ny, nm));
        let nd_days = date_from_parts(ny, nm, nd);
        us = nd_days
            .checked_mul(USECS_PER_DAY)
            .and_then(|v| v.checked_add(time))
            .ok_or_else(|| out_of_range("timestamp"))?;
        check_timestamp(us)?;
    }
    if iv.days != 0 {
        us = us
            .checked_add((iv.days as i64).checked_mul(USECS_PER_DAY).ok_or_else(|| out_of_range("timestamp"))?)
            .ok_or_else(|| out_of_range("timestamp"))?;
        check_timestamp(us)?;
    }
    us = us.checked_add(iv.micros).ok_or_else(|| out_of_range("timestamp"))?;
    check_timestamp(us)
}

/// `timestamp - timestamp` → interval, hours justified into days as Postgres does.
pub(crate) fn timestamp_diff(a: i64, b: i64) -> Result<Interval, EvalError> {
    if !is_finite(a) || !is_finite(b) {
        return Err(EvalError::OutOfRange("cannot subtract infinite timestamps".into()));
    }
    let diff = a.checked_sub(b).ok_or_else(|| out_of_range("interval"))?;
    let mut days = diff / USECS_PER_DAY;
    let mut time = diff - days * USECS_PER_DAY;
    if days > 0 && time < 0 {
        time += USECS_PER_DAY;
        days -= 1;
    } else if days < 0 && time > 0 {
        time -= USECS_PER_DAY;
        days += 1;
    }
    Ok(Interval { months: 0, days: i32::try_from(days).map_err(|_| out_of_range("interval"))?, micros: time })
}

impl Interval {
    /// Postgres' comparison key: months count as 30 days, days as 24 hours.
    fn span(&self) -> i128 {
        (self.months as i128 * 30 + self.days as i128) * USECS_PER_DAY as i128 + self.micros as i128
    }

    /// Postgres' interval ordering (by total span, so `1 mon` = `30 days`).
    pub(crate) fn cmp(&self, other: &Interval) -> Ordering {
        self.span().cmp(&other.span())
    }

    /// `interval + interval`, field by field, with overflow checks.
    pub(crate) fn add(&self, o: &Interval) -> Result<Interval, EvalError> {
        let e = || out_of_range("interval");
        Ok(Interval {
            months: self.months.checked_add(o.months).ok_or_else(e)?,
            days: self.days.checked_add(o.days).ok_or_else(e)?,
            micros: self.micros.checked_add(o.micros).ok_or_else(e)?,
        })
    }

    /// Unary minus, field by field, with overflow checks.
    pub(crate) fn neg(&self) -> Result<Interval, EvalError> {
        let e = || out_of_range("interval");
        Ok(Interval {
            months: self.months.checked_neg().ok_or_else(e)?,
            days: self.days.checked_neg().ok_or_else(e)?,
            micros: self.micros.checked_neg().ok_or_else(e)?,
        })
    }

    /// `interval_out` with IntervalStyle `iso_8601`.
    pub(crate) fn format(&self) -> String {
        let year = self.months / 12;
        let mon = self.months % 12;
        let mday = self.days;
        let hour = self.micros / USECS_PER_HOUR;
        let min = (self.micros % USECS_PER_HOUR) / USECS_PER_MINUTE;
        let sec = (self.micros % USECS_PER_MINUTE) / USECS_PER_SEC;
        let fsec = self.micros % USECS_PER_SEC;
        if year == 0 && mon == 0 && mday == 0 && hour == 0 && min == 0 && sec == 0 && fsec == 0 {
            return "PT0S".into();
        }
        let mut out = String::from("P");
        let part = |out: &mut String, v: i64, c: char| {
            if v != 0 {
                out.push_str(&format!("{v}{c}"));
            }
        };
        part(&mut out, year as i64, 'Y');
        part(&mut out, mon as i64, 'M');
        part(&mut out, mday as i64, 'D');
        if hour != 0 || min != 0 || sec != 0 || fsec != 0 {
            out.push('T');
        }
        part(&mut out, hour, 'H');
        part(&mut out, min, 'M');
        if sec != 0 || fsec != 0 {
            if sec < 0 || fsec < 0 {
                out.push('-');
            }
            out.push_str(&sec.abs().to_string());
            push_fraction(&mut out, fsec);
            out.push('S');
        }
        out
    }

    /// Postgres' `interval_in` for the postgres/verbose style (`1 year 2 mons 3 days 04:05:06`,
    /// `@ 1 day ago`, `-1 days +02:03:04`, `5 minutes`) and ISO 8601 designators (`P1Y2M3DT4H5M6S`).
    pub(crate) fn parse(input: &str) -> Result<Interval, EvalError> {
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        let mut acc = IntervalAcc::default();
        if s.starts_with(['P', 'p']) && s.len() > 1 {
            parse_iso8601_interval(&s[1..], input, &mut acc)?;
        } else {
            parse_verbose_interval(s, input, &mut acc)?;
        }
        acc.finish()
    }
}

/// Interval fields being accumulated while parsing, with Postgres' fraction spill rules.
#[derive(Default)]
struct IntervalAcc {
    months: i64,
    days: i64,
    micros: i64,
}

impl IntervalAcc {
    fn overflow() -> EvalError {
        out_of_range("interval")
    }
    fn add_months(&mut self, v: i64) -> Result<(), EvalError> {
        self.months = self.months.checked_add(v).ok_or_else(Self::overflow)?;
        Ok(())
    }
    fn add_days(&mut self, v: i64) -> Result<(), EvalError> {
        self.days = self.days.checked_add(v).ok_or_else(Self::overflow)?;
        Ok(())
    }
    fn add_micros(&mut self, v: i64, scale: i64) -> Result<(), EvalError> {
        let x = v.checked_mul(scale).ok_or_else(Self::overflow)?;
        self.micros = self.micros.checked_add(x).ok_or_else(Self::overflow)?;
        Ok(())
    }
    /// `AdjustFractMicroseconds`.
    fn fract_micros(&mut self, frac: f64, scale: i64) -> Result<(), EvalError> {
        if frac == 0.0 {
            return Ok(());
        }
        let f = frac * scale as f64;
        let mut usec = f as i64;
        let rest = f - usec as f64;
        usec += rest.round_ties_even() as i64;
        self.micros = self.micros.checked_add(usec).ok_or_else(Self::overflow)?;
        Ok(())
    }
    /// `AdjustFractDays`.
    fn fract_days(&mut self, frac: f64, scale: i64) -> Result<(), EvalError> {
        if frac == 0.0 {
            return Ok(());
        }
        let f = frac * scale as f64;
        let extra = f as i64;
        self.add_days(extra)?;
        self.fract_micros(f - extra as f64, USECS_PER_DAY)
    }
    /// Adds `ipart + fpart` of `unit`.
    fn add_unit(&mut self, unit: Unit, ipart: i64, fpart: f64) -> Result<(), EvalError> {
        match unit {
            Unit::Microsecond => {
                let v = (ipart as f64 + fpart).round_ties_even() as i64;
                self.add_micros(v, 1)
            }
            Unit::Millisecond => {
                self.add_micros(ipart, 1000)?;
                self.fract_micros(fpart, 1000)
            }
            Unit::Second => {
                self.add_micros(ipart, USECS_PER_SEC)?;
                self.fract_micros(fpart, USECS_PER_SEC)
            }
            Unit::Minute => {
                self.add_micros(ipart, USECS_PER_MINUTE)?;
                self.fract_micros(fpart, USECS_PER_MINUTE)
            }
            Unit::Hour => {
                self.add_micros(ipart, USECS_PER_HOUR)?;
                self.fract_micros(fpart, USECS_PER_HOUR)
            }
            Unit::Day => {
                self.add_days(ipart)?;
                self.fract_micros(fpart, USECS_PER_DAY)
            }
            Unit::Week => {
                self.add_days(ipart.checked_mul(7).ok_or_else(Self::overflow)?)?;
                self.fract_days(fpart, 7)
            }
            Unit::Month => {
                self.add_months(ipart)?;
                self.fract_days(fpart, 30)
            }
            Unit::Year(n) => {
                self.add_months(ipart.checked_mul(12 * n).ok_or_else(Self::overflow)?)?;
                self.add_months((fpart * 12.0 * n as f64).round_ties_even() as i64)
            }
        }
    }
    fn negate(&mut self) -> Result<(), EvalError> {
        self.months = self.months.checked_neg().ok_or_else(Self::overflow)?;
        self.days = self.days.checked_neg().ok_or_else(Self::overflow)?;
        self.micros = self.micros.checked_neg().ok_or_else(Self::overflow)?;
        Ok(())
    }
    fn finish(self) -> Result<Interval, EvalError> {
        Ok(Interval {
            months: i32::try_from(self.months).map_err(|_| Self::overflow())?,
            days: i32::try_from(self.days).map_err(|_| Self::overflow())?,
            micros: self.micros,
        })
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    /// Years, decades (10), centuries (100), millennia (1000).
    Year(i64),
}

fn unit_from_word(w: &str) -> Option<Unit> {
    Some(match w {
        "microsecond" | "microseconds" | "microsecon" | "us" | "usec" | "usecs" | "useconds" => Unit::Microsecond,
        "millisecond" | "milliseconds" | "millisecon" | "ms" | "msec" | "msecs" | "mseconds" => Unit::Millisecond,
        "second" | "seconds" | "s" | "sec" | "secs" => Unit::Second,
        "minute" | "minutes" | "m" | "min" | "mins" => Unit::Minute,
        "hour" | "hours" | "h" | "hr" | "hrs" => Unit::Hour,
        "day" | "days" | "d" => Unit::Day,
        "week" | "weeks" | "w" => Unit::Week,
        "month" | "months" | "mon" | "mons" => Unit::Month,
        "year" | "years" | "y" | "yr" | "yrs" => Unit::Year(1),
        "decade" | "decades" | "dec" | "decs" => Unit::Year(10),
        "century" | "centuries" | "c" | "cent" => Unit::Year(100),
        "millennium" | "millennia" | "mil" | "mils" => Unit::Year(1000),
        _ => return None,
    })
}

/// Splits a signed decimal into integer part and signed fraction.
fn split_number(tok: &str) -> Option<(i64, f64)> {
    let neg = tok.starts_with('-');
    let body = tok.trim_start_matches(['+', '-']);
    if body.is_empty() || tok.len() - body.len() > 1 {
        return None;
    }
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let i: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f: f64 = if frac.is_empty() { 0.0 } else { format!("0.{frac}").parse().ok()? };
    Some(if neg { (-i, -f) } else { (i, f) })
}

fn parse_verbose_interval(s: &str, input: &str, acc: &mut IntervalAcc) -> Result<(), EvalError> {
    let bad = || invalid("interval", input);
    let lower = s.to_ascii_lowercase();
    let mut rest = lower.trim_start_matches('@').trim_start();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut ago = false;
    let mut pending: Option<(i64, f64)> = None;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        // A token is a run of digits/sign/point/colon, or a run of letters.
        let first = rest.as_bytes()[0];
        if first.is_ascii_alphabetic() {
            let n = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            let word = &rest[..n];
            rest = &rest[n..];
            if word == "ago" {
                if !rest.trim().is_empty() {
                    return Err(bad());
                }
                ago = true;
                continue;
            }
            let unit = unit_from_word(word).ok_or_else(bad)?;
            let (i, f) = pending.take().ok_or_else(bad)?;
            acc.add_unit(unit, i, f)?;
        } else {
            let n = rest.bytes().take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b':')).count();
            if n == 0 {
                return Err(bad());
            }
            let tok = &rest[..n];
            rest = &rest[n..];
            if let Some((i, f)) = pending.take() {
                // A number without a unit before another number: seconds.
                acc.add_unit(Unit::Second, i, f)?;
            }
            if tok.contains(':') {
                let neg = tok.starts_with('-');
                let body = tok.trim_start_matches(['+', '-']);
                let parts: Vec<&str> = body.split(':').collect();
                if parts.len() < 2 || parts.len() > 3 {
                    return Err(bad());
                }
                let h: i64 = parts[0].parse().map_err(|_| bad())?;
                let m: i64 = parts[1].parse().map_err(|_| bad())?;
                if parts[1].len() != 2 || m > 59 {
                    return Err(bad());
                }
                let (si, sf) = match parts.get(2) {
                    Some(p) => split_number(p).ok_or_else(bad)?,
                    None => (0, 0.0),
                };
                if !(0..=60).contains(&si) {
                    return Err(bad());
                }
                let mut part = IntervalAcc::default();
                part.add_unit(Unit::Hour, h, 0.0)?;
                part.add_unit(Unit::Minute, m, 0.0)?;
                part.add_unit(Unit::Second, si, sf)?;
                let v = if neg { -part.micros } else { part.micros };
                acc.micros = acc.micros.checked_add(v).ok_or_else(IntervalAcc::overflow)?;
            } else {
                pending = Some(split_number(tok).ok_or_else(bad)?);
            }
        }
    }
    if let Some((i, f)) = pending {
        acc.add_unit(Unit::Second, i, f)?;
    }
    if ago {
        acc.negate()?;
    }
    Ok(())
}

fn parse_iso8601_interval(s: &str, input: &str, acc: &mut IntervalAcc) -> Result<(), EvalError> {
    let bad = || invalid("interval", input);
    let mut rest = s;
    let mut in_time = false;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(['T', 't']) {
            if in_time {
                return Err(bad());
            }
            in_time = true;
            rest = r;
            continue;
        }
        let n = rest.bytes().take_while(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')).count();
        if n == 0 {
            return Err(bad());
        }
        let (i, f) = split_number(&rest[..n]).ok_or_else(bad)?;
        rest = &rest[n..];
        let unit = rest.chars().next().ok_or_else(bad)?;
        rest = &rest[unit.len_utf8()..];
        let unit = unit.to_ascii_uppercase();
        let unit = match (in_time, unit) {
            (false, 'Y') => Unit::Year(1),
            (false, 'M') => Unit::Month,
            (false, 'W') => Unit::Week,
            (false, 'D') => Unit::Day,
            (true, 'H') => Unit::Hour,
            (true, 'M') => Unit::Minute,
            (true, 'S') => Unit::Second,
            _ => return Err(bad()),
        };
        acc.add_unit(unit, i, f)?;
    }
    Ok(())
}
