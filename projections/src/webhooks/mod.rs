//! Webhooks (CONTRACT §9): HTTPS callbacks signed to the Standard Webhooks
//! specification, ordered per (endpoint, aggregate), replayable.
//!
//! - [`endpoints`]: the company's endpoints and their deliveries (the
//!   store the API manages);
//! - [`address`]: which URLs may be called (no loopback, private, …), at
//!   creation and at every connection;
//! - [`sign`]: secrets and signatures;
//! - [`deliver`]: the deliverer, one more reader of the log: it records a
//!   delivery per (endpoint, event) with its own checkpoint, then sends what
//!   is due, each aggregate's events in order.

pub mod address;
pub mod deliver;
pub mod endpoints;
pub mod sign;

use std::time::Duration;

/// How the deliverer behaves (`ROSTER_WEBHOOK_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The waits before each retry of a failed attempt; after the last one
    /// a delivery is `failed`.
    pub schedule: Vec<Duration>,
    /// URLs may use `http` and loopback or private addresses.
    pub allow_private: bool,
}

/// `ROSTER_WEBHOOK_RETRY_SCHEDULE`'s default.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            schedule: parse_schedule(DEFAULT_SCHEDULE).expect("the default schedule parses"),
            allow_private: false,
        }
    }
}

/// `5s,5m,30m,2h`: comma-separated waits, each a whole number of `ms`,
/// `s`, `m`, `h` or `d`. An empty text: no retry.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            let digits = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
            let (n, unit) = w.split_at(digits);
            let n: u64 = n.parse().map_err(|_| format!("{w:?}: a wait is a number and a unit"))?;
            let unit = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("{w:?}: the unit is one of ms, s, m, h, d")),
            };
            Ok(Duration::from_millis(n.saturating_mul(unit)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_garbage_is_refused() {
        assert_eq!(
            parse_schedule("5s, 5m,2h,1d,250ms"),
            Ok(vec![
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(7200),
                Duration::from_secs(86400),
                Duration::from_millis(250)
            ])
        );
        assert_eq!(parse_schedule(""), Ok(vec![]));
        assert!(parse_schedule("5").is_err());
        assert!(parse_schedule("s").is_err());
        assert!(parse_schedule("5w").is_err());
        assert_eq!(WebhookConfig::default().schedule.len(), 7);
    }
}
