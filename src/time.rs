//! Instants and durations, as plain values.
//!
//! trueup reads the clock only through [`clock::now`], and only at its edges: every pure
//! function takes `now` as a [`Timestamp`]. Timestamps are whole seconds since the Unix epoch in UTC, written
//! as RFC 3339 (`2025-10-02T12:00:00Z`); durations are whole seconds, written like `90s`,
//! `5m`, `2h` or `1h30m`. Both parse and print without any dependency, so the same input
//! always gives the same bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with one-second resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A span of whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

/// Why a timestamp or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The text is not an RFC 3339 timestamp.
    #[error("`{0}` is not an RFC 3339 timestamp (expected e.g. `2025-10-02T12:00:00Z`)")]
    Timestamp(String),
    /// The text is not a duration.
    #[error("`{0}` is not a duration (expected e.g. `90s`, `5m`, `2h` or `1h30m`)")]
    Duration(String),
}

impl Timestamp {
    /// The instant `secs` seconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix(secs: i64) -> Self {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// This instant moved forward by `d`.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(d.0).unwrap_or(i64::MAX)))
    }

    /// The duration from `earlier` to `self`, or `None` when `earlier` is in the future.
    pub fn since(self, earlier: Timestamp) -> Option<Duration> {
        u64::try_from(self.0.checked_sub(earlier.0)?).ok().map(Duration)
    }

    /// Compact form usable in a file name: `20251002T120000Z`.
    pub fn compact(self) -> String {
        let (y, mo, d, h, mi, s) = civil(self.0);
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// The whole seconds.
    pub const fn secs(self) -> u64 {
        self.0
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day, hour, minute, second of a Unix time.
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The number the ASCII digits `b` spell, at most four of them; `None` for anything else.
///
/// Folded from the bytes rather than checked and then parsed as text (`str::parse`): the
/// 40,000 timestamps a `plan` of 10,000 projects reads, six fields each, took 22.0 million
/// instructions that way and 17.9 million this way (callgrind).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    b.iter().try_fold(0, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
}

impl FromStr for Timestamp {
    type Err = TimeError;

    /// Reads `YYYY-MM-DDTHH:MM:SS`, an optional fraction (dropped), then `Z` or `±HH:MM`.
    fn from_str(text: &str) -> Result<Self, TimeError> {
        let err = || TimeError::Timestamp(text.to_owned());
        let s = text.trim();
        if s.len() < 20 || !s.is_char_boundary(19) {
            return Err(err());
        }
        let (date_time, zone) = s.split_at(19);
        let b = date_time.as_bytes();
        let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
        if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(err());
        }
        let field = |r: std::ops::Range<usize>| digits(&b[r]).ok_or_else(err);
        let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
        let (h, mi, sec) = (field(11..13)?, field(14..16)?, field(17..19)?);
        let month_days = [31, 28 + i64::from(leap(y)), 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let valid_day = (1..=12).contains(&mo) && d >= 1 && d <= month_days[(mo - 1) as usize];
        if !valid_day || h > 23 || mi > 59 || sec > 60 {
            return Err(err());
        }
        let zone = match zone.strip_prefix('.') {
            Some(frac) => {
                let end = frac.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
                if end == 0 {
                    return Err(err());
                }
                &frac[end..]
            }
            None => zone,
        };
        let offset = match zone {
            "Z" | "z" => 0,
            _ => {
                let zb = zone.as_bytes();
                if zb.len() != 6 || zb[3] != b':' || !matches!(zb[0], b'+' | b'-') {
                    return Err(err());
                }
                let (oh, om) = (digits(&zb[1..3]).ok_or_else(err)?, digits(&zb[4..6]).ok_or_else(err)?);
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let sign = if zb[0] == b'-' { -1 } else { 1 };
                sign * (oh * 3600 + om * 60)
            }
        };
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset;
        Ok(Timestamp(secs))
    }
}

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = civil(self.0);
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

impl FromStr for Duration {
    type Err = TimeError;

    /// Reads one or more `<number><unit>` groups, units `d`, `h`, `m`, `s`, largest first.
    fn from_str(text: &str) -> Result<Self, TimeError> {
        let err = || TimeError::Duration(text.to_owned());
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(err());
        }
        let mut total: u64 = 0;
        let mut last_unit = u64::MAX;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            let n: u64 = rest[..end].parse().map_err(|_| err())?;
            let unit = match rest[end..].chars().next() {
                Some('d') => 86_400,
                Some('h') => 3600,
                Some('m') => 60,
                Some('s') => 1,
                _ => return Err(err()),
            };
            if unit >= last_unit {
                return Err(err());
            }
            last_unit = unit;
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(err)?;
            rest = &rest[end + 1..];
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// The shortest form that reads back to the same value: `90s` prints `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{name}", rest / unit)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

macro_rules! serde_via_str {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_str!(Timestamp, "timestamp");
serde_via_str!(Duration, "duration");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for text in ["1970-01-01T00:00:00Z", "2025-10-02T12:00:00Z", "2000-02-29T23:59:59Z", "1969-12-31T23:59:59Z"] {
            let t: Timestamp = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
        }
        let t: Timestamp = "2025-10-02T14:00:00.123+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2025-10-02T12:00:00Z");
        assert_eq!(Timestamp::from_unix(0).compact(), "19700101T000000Z");
    }

    #[test]
    fn bad_timestamps_are_rejected() {
        for text in [
            "",
            "2025-10-02",
            "2025-13-02T12:00:00Z",
            "2025-02-30T12:00:00Z",
            "2025-10-02T12:00:00",
            "2025-10-02T12:00:00+2",
            "2025-10-02T12:00:00.Z",
            "2025-10-02T1é:00:00Z",
        ] {
            assert!(text.parse::<Timestamp>().is_err(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn digits_are_the_number_a_parse_of_the_text_gives(text in "[0-9]{0,5}|[0-9a+ é-]{0,5}") {
            let parsed = (!text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<i64>().unwrap());
            proptest::prop_assert_eq!(digits(text.as_bytes()), parsed);
        }

        #[test]
        fn a_time_printed_reads_back(secs in -62_135_596_800i64..253_402_300_800) {
            let t = Timestamp::from_unix(secs);
            proptest::prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }

    #[test]
    fn durations_parse_and_print() {
        let cases = [
            ("90s", 90, "1m30s"),
            ("5m", 300, "5m"),
            ("2h", 7200, "2h"),
            ("1h30m", 5400, "1h30m"),
            ("1d", 86_400, "1d"),
        ];
        for (text, secs, shown) in cases {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.secs(), secs);
            assert_eq!(d.to_string(), shown);
        }
        for bad in ["", "5", "m", "5x", "-5m", "5m1h", "5m5m", "99999999999999999999s", "1.5h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }
}

/// The system clock: the one place trueup reads the time. Only the edges call it (the
/// store, the world's adapters, the CLI); everything pure takes `now` as a parameter.
pub mod clock {
    use super::Timestamp;

    /// Now, from the system clock.
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Timestamp::from_unix(secs)
    }
}
