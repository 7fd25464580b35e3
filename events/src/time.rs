//! Timestamps with one text form everywhere: RFC 3339, UTC, microseconds.

use chrono::{DateTime, SubsecRound, Utc};
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
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value.trunc_subsecs(6))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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
}
