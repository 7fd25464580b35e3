//! Logging set up once: pretty for people, JSON for machines
//! (`ROSTER_LOG_FORMAT`), filtered by `RUST_LOG` (default `info`).

use crate::config::LogFormat;
use tracing_subscriber::{fmt, EnvFilter};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
