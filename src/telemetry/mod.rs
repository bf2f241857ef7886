//! Logging, set up once for the process. `RUST_LOG` overrides `[log] level`; without it the
//! level can change while the shop runs ([`set_log_level`], on a settings reload).

use std::sync::OnceLock;

pub use crate::config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter in force, when it came from the settings (not `RUST_LOG`).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

pub fn init(level: &str) {
    init_with(level, LogFormat::Text);
}

/// [`init`], writing each line as `format` says: text, or one JSON object a line (each with
/// the span it was written in, so every line of a request carries its trace id).
pub fn init_with(level: &str, format: LogFormat) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .is_ok();
    if installed && !fixed {
        let _ = LEVEL.set(handle);
    }
}

/// Whether `level` is a filter [`set_log_level`] would take; why not if not.
pub fn check_log_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| format!("log.level {level:?}: {e}"))
}

/// Puts the `[log] level` filter `level` in force, unless `RUST_LOG` set one. An invalid
/// filter is refused with why.
pub fn set_log_level(level: &str) -> Result<(), String> {
    check_log_level(level)?;
    let filter = EnvFilter::new(level);
    if let Some(handle) = LEVEL.get() {
        handle.reload(filter).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub mod metrics;
pub mod spans;
pub mod trace;
