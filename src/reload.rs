//! Settings that change while the shop runs, the way the original's config server changed
//! them without a redeploy; here every process reads the same file (a mounted ConfigMap is
//! the config server, `docs/deploy.md`). The file is watched (its size and modification time,
//! twice a second) and read again on SIGHUP.
//!
//! A reload applies the keys in [`LIVE`] and nothing else: an edit that does not parse or
//! does not validate is refused whole, with one log line, and the settings in force stay; an
//! edit to a key that needs a restart (the listen address, the database, the bus…) is named
//! in the log and left out, never half-applied. `ekart_config_reloads_total{trigger, outcome}`
//! counts them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{Flag, Knob, ServeFlags, Settings};
use crate::gateway::auth::Admin;
use crate::gateway::limits::Limits;
use crate::gateway::remote::{CallKnobs, Remote};

/// The keys that reload live.
pub const LIVE: [&str; 19] = [
    "limits.per_second",
    "limits.burst",
    "limits.sign_in_per_minute",
    "limits.sign_in_burst",
    "limits.checkout_per_minute",
    "limits.checkout_burst",
    "telemetry.sample_ratio",
    "log.level",
    "checkout.wait_ms",
    "features.checkout",
    "auth.session_idle_secs",
    "journey.max_steps_per_session",
    "gateway.timeout_ms",
    "gateway.retries",
    "gateway.health_interval_ms",
    "gateway.breaker.failure_rate",
    "gateway.breaker.window",
    "gateway.breaker.minimum_calls",
    "gateway.breaker.open_ms",
];

/// `toml` (settings as `ekart config check` prints them) with each key that reloads live
/// marked `# live`.
pub fn mark_live(toml: &str) -> String {
    let mut table = String::new();
    let mut out = String::with_capacity(toml.len() + 256);
    for line in toml.lines() {
        out.push_str(line);
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = header.to_string();
        } else if let Some((key, _)) = trimmed.split_once(" = ") {
            let dotted = match table.is_empty() {
                true => key.to_string(),
                false => format!("{table}.{key}"),
            };
            if LIVE.contains(&dotted.as_str()) {
                out.push_str("  # live");
            }
        }
        out.push('\n');
    }
    out
}

/// How often the file is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What a reload puts new settings into.
#[derive(Clone)]
pub struct Appliers {
    /// The rate limiters, when limits are on (turning them on or off needs a restart).
    pub limits: Option<Arc<Limits>>,
    pub knobs: Knobs,
    /// The modules this process calls in other processes (their breakers are rebuilt when
    /// `gateway.breaker.*` changes).
    pub remotes: Vec<Arc<Remote>>,
}

/// The numbers the modules and the door read each time they need them.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// `checkout.wait_ms`.
    pub checkout_wait_ms: Knob,
    /// `features.checkout`.
    pub checkout_open: Flag,
    /// `auth.session_idle_secs`, in milliseconds.
    pub session_idle_ms: Knob,
    /// `journey.max_steps_per_session`.
    pub journey_max_steps: Knob,
    /// `gateway.timeout_ms`, `retries` and `health_interval_ms`.
    pub calls: CallKnobs,
}

impl Knobs {
    pub fn of(settings: &Settings) -> Knobs {
        Knobs {
            checkout_wait_ms: Knob::new(settings.checkout.wait_ms),
            checkout_open: Flag::new(settings.features.checkout),
            session_idle_ms: Knob::new(idle_ms(settings)),
            journey_max_steps: Knob::new(settings.journey.max_steps_per_session.into()),
            calls: CallKnobs::of(&settings.gateway),
        }
    }
}

fn idle_ms(settings: &Settings) -> u64 {
    settings.auth.session_idle_secs.saturating_mul(1000)
}

/// The settings in force, and when a reload last changed them: what `GET /admin/config` shows.
pub struct InForce {
    now: std::sync::RwLock<(Settings, Option<chrono::DateTime<chrono::Utc>>)>,
}

impl InForce {
    pub fn new(settings: Settings) -> Arc<InForce> {
        Arc::new(InForce {
            now: std::sync::RwLock::new((settings, None)),
        })
    }

    fn settings(&self) -> Settings {
        self.now.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    fn set(&self, settings: Settings) {
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = (settings, Some(chrono::Utc::now()));
    }
}

/// `GET /admin/config` (admins): the settings in force, secrets redacted, which keys reload
/// live, and when they were last reloaded.
pub fn router(in_force: Arc<InForce>) -> axum::Router {
    use axum::extract::State;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/admin/config",
            get(
                |State(in_force): State<Arc<InForce>>, _: Admin| async move {
                    let (settings, reloaded_at) = in_force
                        .now
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    axum::Json(serde_json::json!({
                        "settings": settings.redacted(),
                        "live": LIVE,
                        "reloaded_at": reloaded_at,
                    }))
                },
            ),
        )
        .with_state(in_force)
}

/// Watches `path` (and SIGHUP) for the life of the process, applying what changed to
/// `appliers` and recording it in `in_force`; `flags` are the command line's.
pub fn watch(
    path: PathBuf,
    flags: ServeFlags,
    in_force: Arc<InForce>,
    appliers: Appliers,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let reloader = Reloader {
            path,
            flags,
            in_force,
            appliers,
        };
        let mut seen = stamp(&reloader.path);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            let trigger = tokio::select! {
                _ = hangup.recv() => "signal",
                _ = tick.tick() => {
                    let now = stamp(&reloader.path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "file"
                }
            };
            let outcome = reloader.reload();
            metrics::counter!("ekart_config_reloads_total", "trigger" => trigger,
                "outcome" => outcome)
            .increment(1);
        }
    }))
}

/// The file's size and modification time: a change to either is an edit.
fn stamp(path: &std::path::Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

struct Reloader {
    path: PathBuf,
    flags: ServeFlags,
    in_force: Arc<InForce>,
    appliers: Appliers,
}

impl Reloader {
    /// Reads the settings again and applies what changed live; answers the outcome.
    fn reload(&self) -> &'static str {
        let read = match Settings::load_with(&self.path, self.flags.clone()) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(file = %self.path.display(),
                    "configuration reload refused, the settings in force stay: {e}");
                return "refused";
            }
        };
        let old = tree(&self.in_force.settings());
        let new = tree(&read);
        let mut changed = vec![];
        differences(&old, &new, "", &mut changed);
        let (live, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|key| LIVE.contains(&key.as_str()));
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart,
                "configuration reload: these keys need a restart and were not applied");
        }
        if live.is_empty() {
            return if restart.is_empty() {
                "unchanged"
            } else {
                "restart-needed"
            };
        }
        // The settings in force from now: the old ones with the live keys that changed.
        let mut merged = old;
        for key in &live {
            let pointer = format!("/{}", key.replace('.', "/"));
            if let (Some(to), Some(from)) = (merged.pointer_mut(&pointer), new.pointer(&pointer)) {
                *to = from.clone();
            }
        }
        let in_force: Settings = serde_json::from_value(merged).expect("settings deserialize");
        // Whole or not at all: check everything before anything changes.
        if let Err(e) = crate::telemetry::check_log_level(&in_force.log.level) {
            tracing::error!("configuration reload refused, the settings in force stay: {e}");
            return "refused";
        }
        if live.iter().any(|k| k.starts_with("limits.")) {
            match &self.appliers.limits {
                Some(limits) => {
                    if let Err(e) = limits.set(&in_force.limits) {
                        tracing::error!(
                            "configuration reload refused, the settings in force stay: {e}"
                        );
                        return "refused";
                    }
                }
                None => tracing::warn!(
                    "configuration reload: rate limits are off in this process; turning them \
                     on needs a restart"
                ),
            }
        }
        let breakers = match live.iter().any(|k| k.starts_with("gateway.breaker.")) {
            false => vec![],
            true => {
                let built: anyhow::Result<Vec<_>> = self
                    .appliers
                    .remotes
                    .iter()
                    .map(|remote| remote.breaker_with(&in_force.gateway.breaker))
                    .collect();
                match built {
                    Ok(breakers) => breakers,
                    Err(e) => {
                        tracing::error!(
                            "configuration reload refused, the settings in force stay: {e:#}"
                        );
                        return "refused";
                    }
                }
            }
        };
        // Checked; from here on everything applies.
        for (remote, breaker) in self.appliers.remotes.iter().zip(breakers) {
            remote.set_breaker(breaker);
        }
        crate::telemetry::trace::set_sample_ratio(in_force.telemetry.sample_ratio);
        let _ = crate::telemetry::set_log_level(&in_force.log.level);
        let knobs = &self.appliers.knobs;
        knobs.checkout_wait_ms.set(in_force.checkout.wait_ms);
        knobs.checkout_open.set(in_force.features.checkout);
        knobs.session_idle_ms.set(idle_ms(&in_force));
        knobs
            .journey_max_steps
            .set(in_force.journey.max_steps_per_session.into());
        knobs.calls.set(&in_force.gateway);
        self.in_force.set(in_force);
        tracing::info!(keys = ?live, "configuration reloaded");
        "applied"
    }
}

fn tree(settings: &Settings) -> Value {
    serde_json::to_value(settings).expect("settings serialize")
}

/// The dotted keys whose values differ between `old` and `new`.
fn differences(old: &Value, new: &Value, at: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                differences(value, b.get(key).unwrap_or(&Value::Null), &path, out);
            }
        }
        (a, b) if a != b => out.push(at.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_marks_each_live_key() {
        let text = "[limits]\nenabled = true\nburst = 100\n\n[gateway.breaker]\nwindow = 20\n";
        assert_eq!(
            mark_live(text),
            "[limits]\nenabled = true\nburst = 100  # live\n\n[gateway.breaker]\nwindow = 20  # live\n"
        );
    }

    #[test]
    fn differences_name_each_changed_key() {
        let mut a = Settings::default();
        let b = Settings::default();
        a.limits.burst = 7;
        a.server.port = 1;
        let mut out = vec![];
        differences(&tree(&a), &tree(&b), "", &mut out);
        out.sort();
        assert_eq!(out, ["limits.burst", "server.port"]);
    }
}
