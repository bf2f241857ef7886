//! Configuration: built-in defaults < `ekart.toml` < `EKART_*` environment variables.
//!
//! Nested keys are split by `__`, so `EKART_SERVER__PORT=9000` sets `server.port`. Unknown keys
//! are refused, so a typo in `ekart.toml` is an error rather than a silently ignored setting.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub bus: BusSettings,
    pub auth: AuthSettings,
    pub checkout: CheckoutSettings,
    pub catalog: CatalogSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted; larger ones answer 413.
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://DIR/` (a file per module) or `postgres://…` (a schema per module).
    pub url: String,
    /// Read connections per module (SQLite writes always go through one connection).
    pub max_connections: u32,
    /// SQLite `synchronous` in WAL mode: FULL survives a power cut, NORMAL only a crash.
    pub sqlite_synchronous: SqliteSynchronous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SqliteSynchronous {
    Full,
    Normal,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    pub kind: BusKind,
    /// How often each outbox relay sweeps for events that a wake-up missed.
    pub relay_sweep_ms: u64,
    /// Most events a relay publishes in one batch.
    pub relay_batch: u32,
    pub kafka: KafkaSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Memory,
    Kafka,
}

/// Where the Kafka backend finds its brokers, and the topics it creates if missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Put before every topic name, so two shops can share one cluster.
    pub topic_prefix: String,
    /// Partitions of each topic the shop creates.
    pub partitions: i32,
    /// Replication factor of each topic the shop creates.
    pub replication: i16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// Key that signs dev tokens. Empty: a random key per start (tokens die with the process).
    pub dev_secret: String,
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may mint a token for any name and role: for trying the shop, never for production.
    Dev,
    /// OpenID Connect sign-in (Okta or any provider).
    Oidc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutSettings {
    /// How long `POST /api/checkout` waits for the saga before answering 202.
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Seed the demo catalog when the product table is empty.
    pub seed_demo: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `ekart=debug,sqlx=warn`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Settings {
    /// Built-in defaults. Sign-in defaults to OIDC: dev mode is switched on only by the shipped
    /// `ekart.toml`, so a deployment that drops that file does not silently allow anyone in.
    fn default() -> Self {
        Settings {
            server: ServerSettings {
                host: "127.0.0.1".into(),
                port: 8080,
                body_limit_bytes: 64 * 1024,
            },
            database: DatabaseSettings {
                url: "sqlite://data/".into(),
                max_connections: 8,
                sqlite_synchronous: SqliteSynchronous::Full,
            },
            bus: BusSettings {
                kind: BusKind::Memory,
                relay_sweep_ms: 1000,
                relay_batch: 512,
                kafka: KafkaSettings {
                    brokers: vec!["127.0.0.1:9092".into()],
                    topic_prefix: String::new(),
                    partitions: 4,
                    replication: 1,
                },
            },
            auth: AuthSettings {
                mode: AuthMode::Oidc,
                dev_secret: String::new(),
                token_ttl_secs: 24 * 3600,
            },
            checkout: CheckoutSettings { wait_ms: 5000 },
            catalog: CatalogSettings { seed_demo: true },
            log: LogSettings {
                level: "info,sqlx=warn".into(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file` if it exists, then the environment, and validates the result.
    pub fn load(file: &Path) -> Result<Settings, ConfigError> {
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("EKART_").split("__"))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres:")
            || self.database.url.starts_with("postgresql:"))
        {
            return invalid("database.url must start with sqlite:// or postgres://");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1");
        }
        if self.server.body_limit_bytes < 1024 {
            return invalid("server.body_limit_bytes must be at least 1024");
        }
        if self.bus.relay_sweep_ms == 0 || self.bus.relay_batch == 0 {
            return invalid("bus.relay_sweep_ms and bus.relay_batch must be positive");
        }
        let kafka = &self.bus.kafka;
        if self.bus.kind == BusKind::Kafka
            && (kafka.brokers.is_empty() || kafka.partitions < 1 || kafka.replication < 1)
        {
            return invalid(
                "bus.kafka needs at least one broker, and partitions and replication of 1 or more",
            );
        }
        if self.auth.mode == AuthMode::Oidc {
            return invalid(
                "auth.mode = \"oidc\" is not available in this build yet; \
                 set auth.mode = \"dev\" (as the shipped ekart.toml does) to try the shop",
            );
        }
        if !self.auth.dev_secret.is_empty() && self.auth.dev_secret.len() < 32 {
            return invalid("auth.dev_secret must be empty (random) or at least 32 characters");
        }
        if self.auth.token_ttl_secs == 0 {
            return invalid("auth.token_ttl_secs must be positive");
        }
        Ok(())
    }

    /// The configuration as TOML with secrets replaced, for `ekart config check`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url_password(&shown.database.url);
        if !shown.auth.dev_secret.is_empty() {
            shown.auth.dev_secret = "<redacted>".into();
        }
        toml_string(&shown)
    }
}

fn toml_string(settings: &Settings) -> String {
    // figment already depends on `toml`; going through serde_json keeps us off a direct dependency.
    let value = serde_json::to_value(settings).expect("settings serialize");
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, fields) in sections {
            out.push_str(&format!("[{section}]\n"));
            if let serde_json::Value::Object(fields) = fields {
                for (key, v) in fields {
                    out.push_str(&format!("{key} = {v}\n"));
                }
            }
            out.push('\n');
        }
    }
    out
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted() {
        assert_eq!(
            redact_url_password("postgres://shop:s3cret@db:5432/ekart"),
            "postgres://shop:<redacted>@db:5432/ekart"
        );
        assert_eq!(redact_url_password("sqlite://data/"), "sqlite://data/");
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ekart.toml",
                "[server]\nport = 9001\n[auth]\nmode = \"dev\"\n",
            )?;
            jail.set_env("EKART_SERVER__HOST", "0.0.0.0");
            let s = Settings::load(Path::new("ekart.toml")).expect("valid");
            assert_eq!(s.server.port, 9001);
            assert_eq!(s.server.host, "0.0.0.0");
            assert_eq!(s.checkout.wait_ms, 5000);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("ekart.toml", "[server]\nprot = 9001\n")?;
            assert!(Settings::load(Path::new("ekart.toml")).is_err());
            jail.create_file(
                "ekart.toml",
                "[auth]\nmode = \"dev\"\n[database]\nurl = \"mysql://x\"\n",
            )?;
            assert!(Settings::load(Path::new("ekart.toml")).is_err());
            Ok(())
        });
    }
}
