//! Timestamps with one text form everywhere: RFC 3339, UTC, microseconds.

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An instant truncated to microseconds, so that what a write returns, what
/// the read models store (Postgres keeps microseconds) and what a replay
/// rebuilds are the same instant and the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// The text, written digit by digit: chrono's `format` parses its
    /// pattern on every call, which was 7 % of a replay's client CPU.
    /// `None` for what the fixed width cannot hold (years outside
    /// 0000–9999, a leap second), which takes chrono's path.
    fn text(&self) -> Option<[u8; 27]> {
        let t = self.0;
        let micros = t.nanosecond() / 1_000;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        if micros >= 1_000_000 {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        for (at, value) in [
            (0..4, year),
            (5..7, t.month()),
            (8..10, t.day()),
            (11..13, t.hour()),
            (14..16, t.minute()),
            (17..19, t.second()),
            (20..26, micros),
        ] {
            let mut value = value;
            for digit in text[at].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        Some(text)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value.trunc_subsecs(6))
    }
}

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => write!(f, "{}", self.0.format(FORMAT)),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Self::from(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_microseconds_in_utc_and_round_trips() {
        let t: Timestamp = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789+02:00")
            .map(|t| t.with_timezone(&Utc))
            .map(Timestamp::from)
            .expect("valid");
        assert_eq!(t.to_string(), "2026-01-02T01:04:05.123456Z");
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).expect("parse"), t);
    }

    #[test]
    fn the_digit_by_digit_text_is_chronos() {
        let instants = [
            "0000-01-01T00:00:00Z",
            "0999-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00.000001Z",
            "2026-02-28T09:05:07.010203Z",
            "9999-12-31T23:59:59.999999Z",
        ];
        let mut all: Vec<DateTime<Utc>> = instants
            .iter()
            .map(|t| DateTime::parse_from_rfc3339(t).expect("valid").with_timezone(&Utc))
            .collect();
        // Every field's every digit position, over 40 years in odd steps.
        let start = all[2];
        all.extend((0..10_000).map(|i| start + chrono::Duration::microseconds(i * 123_456_789_013 + i)));
        all.push(DateTime::<Utc>::MAX_UTC);
        all.push(DateTime::<Utc>::MIN_UTC);
        for t in all {
            let t = Timestamp::from(t);
            assert_eq!(t.to_string(), t.0.format(FORMAT).to_string());
            assert_eq!(
                serde_json::to_string(&t).expect("serialize"),
                format!("\"{}\"", t.0.format(FORMAT))
            );
        }
    }
}
