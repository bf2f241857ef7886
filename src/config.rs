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
    pub features: FeatureSettings,
    pub payment: PaymentSettings,
    pub catalog: CatalogSettings,
    pub journey: JourneySettings,
    pub telemetry: TelemetrySettings,
    pub log: LogSettings,
    pub modules: ModulesSettings,
    pub gateway: GatewaySettings,
    pub limits: LimitSettings,
}

/// Rate limits: every request per client, and stricter ones for signing in and checking out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub enabled: bool,
    /// Requests per second per client (its token or session, else its address).
    pub per_second: u32,
    /// Requests a client may make at once beyond the steady rate.
    pub burst: u32,
    /// Sign-in attempts per minute per address.
    pub sign_in_per_minute: u32,
    pub sign_in_burst: u32,
    /// Checkouts per minute per client.
    pub checkout_per_minute: u32,
    pub checkout_burst: u32,
}

/// The parts of the shop one process can run. Every process also serves `/healthz`,
/// `/readyz` and the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    /// Routes the API of every module this process does not run to that module's instances.
    Gateway,
    /// The web pages and the click-stream.
    Frontend,
    Stock,
    Order,
    Payment,
    User,
}

impl Module {
    pub const ALL: [Module; 6] = [
        Module::Gateway,
        Module::Frontend,
        Module::Stock,
        Module::Order,
        Module::Payment,
        Module::User,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Module::Gateway => "gateway",
            Module::Frontend => "frontend",
            Module::Stock => "stock",
            Module::Order => "order",
            Module::Payment => "payment",
            Module::User => "user",
        }
    }
}

/// Which modules run here, and where the others are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesSettings {
    /// The modules this process runs (`ekart serve --modules` overrides it).
    pub run: Vec<Module>,
    pub stock: Placement,
    pub order: Placement,
    pub payment: Placement,
    pub user: Placement,
}

impl ModulesSettings {
    /// What this process is called in traces: `ekart`, or `ekart-` and the modules it runs
    /// when it runs only some (`ekart-stock-payment`).
    pub fn service_name(&self) -> String {
        if Module::ALL.iter().all(|m| self.run.contains(m)) {
            return "ekart".into();
        }
        let names: Vec<&str> = self.run.iter().map(|m| m.name()).collect();
        format!("ekart-{}", names.join("-"))
    }

    pub fn runs(&self, module: Module) -> bool {
        self.run.contains(&module)
    }

    /// Where `module`'s instances are, for a module this process does not run.
    pub fn instances(&self, module: Module) -> &[String] {
        match module {
            Module::Stock => &self.stock.instances,
            Module::Order => &self.order.instances,
            Module::Payment => &self.payment.instances,
            Module::User => &self.user.instances,
            Module::Gateway | Module::Frontend => &[],
        }
    }
}

/// Where a module runs when it is not in this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Base URLs of its instances, e.g. `http://10.0.0.5:8081`. A host name that resolves to
    /// several addresses counts as one instance per address.
    pub instances: Vec<String>,
}

/// How the gateway calls modules in other processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Longest wait for one attempt of a call, in milliseconds.
    pub timeout_ms: u64,
    /// Further attempts, on another instance, for a call that may safely be repeated.
    pub retries: u32,
    /// How often every instance's `/healthz` is checked, in milliseconds.
    pub health_interval_ms: u64,
    pub breaker: BreakerSettings,
}

/// The circuit breaker each remote module gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Share of failed calls (0 to 1) in the window that opens the breaker.
    pub failure_rate: f64,
    /// How many of the latest calls the failure rate is taken over.
    pub window: usize,
    /// Fewest calls in the window before the rate counts.
    pub minimum_calls: usize,
    /// How long an open breaker answers 503 before it lets trial calls through, in milliseconds.
    pub open_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted; larger ones answer 413.
    pub body_limit_bytes: usize,
    /// The address shoppers use, e.g. `https://shop.example.com`, if it differs from
    /// `http://host:port` (behind a proxy). An `https://` one turns on HSTS.
    pub public_url: String,
    /// Bearer token a Prometheus scraper sends for `/metrics` on the shop's address. Empty:
    /// the shop's address serves no metrics (a proxy in front cannot be told from a local
    /// client, so nothing is guessed from headers).
    pub metrics_token: String,
    /// A second address, e.g. `127.0.0.1:9464` or a private interface's, that serves only
    /// `/metrics` (with `metrics_token` too, if one is set). Empty: no second listener.
    pub metrics_addr: String,
    /// Seconds a connection may take to send a request's headers, and may sit idle waiting
    /// for its next request; then it is closed (slow or idle clients hold no socket for long).
    pub header_timeout_secs: u64,
    /// Seconds a request's body may take to arrive; a slower one is refused.
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://DIR/` (a file per module) or `postgres://…` (a schema per module).
    pub url: String,
    /// Read connections per module (SQLite writes always go through one connection).
    pub max_connections: u32,
    /// PostgreSQL: writers per module, each committing the writes queued while it was busy as
    /// one transaction on a connection of its own.
    pub postgres_writers: u32,
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
    /// With `instances` above 1, this process's number among the processes running the same
    /// modules, from 0: it reads the partitions `p` with `p % instances == instance`.
    pub instance: i32,
    /// 1 (the default): processes running the same module share its partitions by lease on
    /// PostgreSQL (`bus::lease`). Above 1: how many processes split them by hand.
    pub instances: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// Key that signs the shop's session tokens and cookies. Empty: a random key per start
    /// (sessions end with the process). Its old name `dev_secret` still reads.
    #[serde(alias = "dev_secret")]
    pub session_secret: String,
    /// A session's absolute lifetime: its token expires then, however busy it is.
    pub token_ttl_secs: u64,
    /// A session unused this long has ended (idle expiry), checked against the user module.
    pub session_idle_secs: u64,
    /// Let dev sign-in listen on an address other computers can reach. Off: dev mode refuses
    /// to start on anything but loopback.
    pub dev_on_network: bool,
    pub oidc: OidcSettings,
}

/// Sign-in through an OpenID Connect provider (Okta, or any other).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The provider's issuer, e.g. `https://dev-123456.okta.com/oauth2/default`; its
    /// `/.well-known/openid-configuration` is read at the first sign-in.
    pub issuer: String,
    pub client_id: String,
    /// From the environment (`EKART_AUTH__OIDC__CLIENT_SECRET`), never this file.
    pub client_secret: String,
    /// Where the provider sends the browser back: this shop's `/auth/callback`.
    pub redirect_url: String,
    pub scopes: Vec<String>,
    /// The audience of the provider's access tokens for this shop's API: a dedicated one (an
    /// Okta custom authorization server's, e.g. `api://ekart`), never one that every app of the
    /// organisation gets (Okta's `api://default`). Empty: the API takes no provider tokens.
    pub audience: String,
    /// Client ids (Okta's `cid`, RFC 9068's `client_id`) whose access tokens the API takes,
    /// besides this shop's own `client_id`.
    pub api_clients: Vec<String>,
    /// Scopes (Okta's `scp`, RFC 9068's `scope`) every API access token must carry.
    pub api_scopes: Vec<String>,
    /// The token claim listing the user's groups.
    pub groups_claim: String,
    /// Members of this group are admins.
    pub admin_group: String,
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

/// Switches an operator turns while the shop runs; each reloads live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSettings {
    /// Shoppers can check out. `false` pauses checkout (a stock-take, a payment incident):
    /// carts are kept, and checkout answers 503 `checkout-paused` until it is `true` again.
    pub checkout: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// Who moves the money (`modules::payment::provider`).
    pub provider: PaymentProviderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentProviderKind {
    /// The built-in simulator, whose declines are chosen by the card number, UPI id or bank.
    Simulator,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where spans go, a Zipkin collector's v2 endpoint, e.g.
    /// `http://127.0.0.1:9411/api/v2/spans`. Empty: no spans are recorded.
    pub zipkin_endpoint: String,
    /// The share of new traces recorded, 0.0 to 1.0; a trace begun elsewhere keeps its
    /// caller's choice (the `traceparent`'s sampled flag).
    pub sample_ratio: f64,
    /// The service the spans name. Empty: `ekart`, or `ekart-` and the modules this process
    /// runs when it runs only some (`ekart-order`).
    pub service_name: String,
    /// How log lines are written: `text`, or `json` (one object a line, with its span's
    /// fields, the trace id among them). Needs a restart.
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneySettings {
    /// Most click-stream steps recorded per sign-in session; later page views and clicks are
    /// dropped (and counted in `/metrics`), so no session grows its journey, page and PDF
    /// without bound. Order outcomes are always recorded.
    pub max_steps_per_session: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Seed the demo catalog when the product table is empty.
    pub seed_demo: bool,
    /// Search pages kept until a product's SKU, name, description or price changes (0:
    /// none); their products' stock is read afresh every time.
    pub search_cache_pages: u64,
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
                public_url: String::new(),
                metrics_token: String::new(),
                metrics_addr: String::new(),
                header_timeout_secs: 10,
                body_timeout_secs: 30,
            },
            database: DatabaseSettings {
                url: "sqlite://data/".into(),
                max_connections: 8,
                postgres_writers: 4,
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
                    instance: 0,
                    instances: 1,
                },
            },
            auth: AuthSettings {
                mode: AuthMode::Oidc,
                session_secret: String::new(),
                token_ttl_secs: 24 * 3600,
                session_idle_secs: 2 * 3600,
                dev_on_network: false,
                oidc: OidcSettings {
                    scopes: vec!["openid".into(), "profile".into(), "email".into()],
                    groups_claim: "groups".into(),
                    admin_group: "ekart-admins".into(),
                    ..OidcSettings::default()
                },
            },
            checkout: CheckoutSettings { wait_ms: 5000 },
            features: FeatureSettings { checkout: true },
            payment: PaymentSettings {
                provider: PaymentProviderKind::Simulator,
            },
            catalog: CatalogSettings {
                seed_demo: true,
                search_cache_pages: 10_000,
            },
            journey: JourneySettings {
                max_steps_per_session: 2000,
            },
            telemetry: TelemetrySettings {
                zipkin_endpoint: String::new(),
                sample_ratio: 1.0,
                service_name: String::new(),
                log_format: LogFormat::Text,
            },
            log: LogSettings {
                level: "info,sqlx=warn".into(),
            },
            modules: ModulesSettings {
                run: Module::ALL.to_vec(),
                stock: Placement::default(),
                order: Placement::default(),
                payment: Placement::default(),
                user: Placement::default(),
            },
            limits: LimitSettings {
                enabled: true,
                per_second: 50,
                burst: 100,
                sign_in_per_minute: 20,
                sign_in_burst: 10,
                checkout_per_minute: 60,
                checkout_burst: 20,
            },
            gateway: GatewaySettings {
                timeout_ms: 5000,
                retries: 2,
                health_interval_ms: 2000,
                breaker: BreakerSettings {
                    failure_rate: 0.5,
                    window: 20,
                    minimum_calls: 5,
                    open_ms: 5000,
                },
            },
        }
    }
}

/// A number a running shop reads each time it needs it, so that a reload of the settings
/// (`reload.rs`) can change it: a checkout's wait, a session's idle limit.
#[derive(Debug, Clone)]
pub struct Knob(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Knob {
    pub fn new(value: u64) -> Knob {
        Knob(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            value,
        )))
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, value: u64) {
        self.0.store(value, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A switch a running shop reads each time it needs it, so that a reload of the settings
/// (`reload.rs`) can turn it: a feature flag.
#[derive(Debug, Clone)]
pub struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Flag {
    pub fn new(on: bool) -> Flag {
        Flag(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(on)))
    }

    pub fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What `ekart serve`'s flags override.
#[derive(Debug, Default, Clone)]
pub struct ServeFlags {
    /// `--modules`
    pub modules: Option<Vec<Module>>,
    /// `--insecure-dev-sign-in`
    pub insecure_dev_sign_in: bool,
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
        Settings::load_with(file, ServeFlags::default())
    }

    /// As [`Settings::load`], with what `ekart serve`'s flags override.
    pub fn load_with(file: &Path, flags: ServeFlags) -> Result<Settings, ConfigError> {
        let mut settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("EKART_").split("__"))
            .extract()
            .map_err(Box::new)?;
        if let Some(modules) = flags.modules {
            settings.modules.run = modules;
        }
        if flags.insecure_dev_sign_in {
            settings.auth.dev_on_network = true;
        }
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
        if !(1..=64).contains(&self.database.postgres_writers) {
            return invalid("database.postgres_writers must be between 1 and 64");
        }
        let l = &self.limits;
        if l.enabled
            && [l.per_second, l.burst, l.sign_in_per_minute, l.sign_in_burst]
                .into_iter()
                .chain([l.checkout_per_minute, l.checkout_burst])
                .any(|n| n == 0)
        {
            return invalid("every rate and burst in [limits] must be positive");
        }
        if !(self.server.public_url.is_empty()
            || self.server.public_url.starts_with("http://")
            || self.server.public_url.starts_with("https://"))
        {
            return invalid("server.public_url must be empty or start with http:// or https://");
        }
        if !self.server.metrics_addr.is_empty()
            && self
                .server
                .metrics_addr
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return invalid("server.metrics_addr must be empty or an address like 127.0.0.1:9464");
        }
        let t = &self.telemetry;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return invalid("telemetry.sample_ratio must be from 0.0 to 1.0");
        }
        if !(t.zipkin_endpoint.is_empty()
            || t.zipkin_endpoint.starts_with("http://")
            || t.zipkin_endpoint.starts_with("https://"))
        {
            return invalid("telemetry.zipkin_endpoint must be empty or an http(s):// address");
        }
        if self.journey.max_steps_per_session == 0 {
            return invalid("journey.max_steps_per_session must be at least 1");
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
        if kafka.instances < 1 || !(0..kafka.instances).contains(&kafka.instance) {
            return invalid("bus.kafka.instance must be from 0 to bus.kafka.instances - 1");
        }
        self.validate_modules()?;
        if self.auth.mode == AuthMode::Oidc {
            let o = &self.auth.oidc;
            if [&o.issuer, &o.client_id, &o.client_secret, &o.redirect_url]
                .iter()
                .any(|v| v.is_empty())
            {
                return invalid(
                    "auth.mode = \"oidc\" needs auth.oidc.issuer, client_id, client_secret \
                     (EKART_AUTH__OIDC__CLIENT_SECRET) and redirect_url; or set \
                     auth.mode = \"dev\" (as the shipped ekart.toml does) to try the shop",
                );
            }
            if !o.redirect_url.ends_with("/auth/callback") {
                return invalid("auth.oidc.redirect_url must be this shop's /auth/callback");
            }
            // The client secret, the code and the tokens cross these: in clear only on this
            // machine.
            for (key, url) in [("issuer", &o.issuer), ("redirect_url", &o.redirect_url)] {
                if !secure_or_local(url) {
                    return invalid(&format!(
                        "auth.oidc.{key} must be https:// (plain http only on loopback): {url}"
                    ));
                }
            }
            if !o.scopes.iter().any(|s| s == "openid") {
                return invalid("auth.oidc.scopes must include openid");
            }
        }
        if self.auth.mode == AuthMode::Dev
            && !self.auth.dev_on_network
            && !is_loopback(&self.server.host)
        {
            return invalid(&format!(
                "dev sign-in lets anyone in as anyone, so it listens only on this machine \
                 (127.0.0.1, ::1, localhost), not on {:?}. Use auth.mode = \"oidc\", or, if \
                 you really mean to expose it, `ekart serve --insecure-dev-sign-in` \
                 (auth.dev_on_network = true)",
                self.server.host
            ));
        }
        if !self.auth.session_secret.is_empty() && self.auth.session_secret.len() < 32 {
            return invalid("auth.session_secret must be empty (random) or at least 32 characters");
        }
        if self.auth.token_ttl_secs == 0 || self.auth.session_idle_secs == 0 {
            return invalid("auth.token_ttl_secs and auth.session_idle_secs must be positive");
        }
        Ok(())
    }

    /// A process that does not run every module needs the Kafka bus, a shared signing key, and
    /// an address for each module that it (or its pages, or its order module) must call.
    fn validate_modules(&self) -> Result<(), ConfigError> {
        let m = &self.modules;
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if m.run.is_empty() {
            return invalid("modules.run must name at least one module".into());
        }
        let b = &self.gateway.breaker;
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) || b.window == 0 {
            return invalid(
                "gateway.breaker.failure_rate must be in (0, 1] and window positive".into(),
            );
        }
        if self.gateway.timeout_ms == 0 || self.gateway.health_interval_ms == 0 {
            return invalid("gateway.timeout_ms and health_interval_ms must be positive".into());
        }
        let split = Module::ALL.iter().any(|module| !m.runs(*module));
        if !split {
            return Ok(());
        }
        if self.bus.kind != BusKind::Kafka {
            return invalid(format!(
                "this process runs only {:?}: modules in several processes talk through Kafka; \
                 set bus.kind = \"kafka\"",
                m.run
            ));
        }
        // Whatever the sign-in, the shop's own session tokens are signed with this key, and
        // every process must check them.
        if self.auth.session_secret.is_empty() {
            return invalid(
                "processes that each run some modules must check the same session tokens: \
                 set auth.session_secret (EKART_AUTH__SESSION_SECRET) to the same value on every one"
                    .into(),
            );
        }
        let needs_all = m.runs(Module::Gateway) || m.runs(Module::Frontend);
        for module in [Module::Stock, Module::Order, Module::Payment, Module::User] {
            let needed = needs_all || (module == Module::Stock && m.runs(Module::Order));
            if needed && !m.runs(module) && m.instances(module).is_empty() {
                return invalid(format!(
                    "this process calls the {0} module but does not run it: \
                     list its instances in modules.{0}.instances",
                    module.name()
                ));
            }
            for url in m.instances(module) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return invalid(format!(
                        "modules.{}.instances: {url:?} must be an http:// or https:// URL",
                        module.name()
                    ));
                }
            }
        }
        if m.runs(Module::Frontend) && !m.runs(Module::Gateway) {
            return invalid(
                "the frontend's pages call every module's API through the gateway: \
                 run gateway in the same process"
                    .into(),
            );
        }
        Ok(())
    }

    /// The configuration as TOML with secrets replaced, for `ekart config check`.
    pub fn redacted_toml(&self) -> String {
        toml_string(&self.redacted())
    }

    /// These settings with every secret replaced: what may be shown.
    pub fn redacted(&self) -> Settings {
        let mut shown = self.clone();
        shown.database.url = redact_url_password(&shown.database.url);
        if !shown.auth.session_secret.is_empty() {
            shown.auth.session_secret = "<redacted>".into();
        }
        if !shown.auth.oidc.client_secret.is_empty() {
            shown.auth.oidc.client_secret = "<redacted>".into();
        }
        if !shown.server.metrics_token.is_empty() {
            shown.server.metrics_token = "<redacted>".into();
        }
        shown
    }
}

fn toml_string(settings: &Settings) -> String {
    // figment already depends on `toml`; going through serde_json keeps us off a direct dependency.
    let value = serde_json::to_value(settings).expect("settings serialize");
    let mut out = String::new();
    write_table(&mut out, "", &value);
    out
}

/// Writes `table`'s plain keys under `[path]`, then each nested table as its own section.
fn write_table(out: &mut String, path: &str, table: &serde_json::Value) {
    let serde_json::Value::Object(fields) = table else {
        return;
    };
    if !path.is_empty() {
        out.push_str(&format!("[{path}]\n"));
    }
    for (key, v) in fields.iter().filter(|(_, v)| !v.is_object()) {
        out.push_str(&format!("{key} = {v}\n"));
    }
    if !path.is_empty() {
        out.push('\n');
    }
    for (key, v) in fields.iter().filter(|(_, v)| v.is_object()) {
        let path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        write_table(out, &path, v);
    }
}

/// An `https://` URL, or an `http://` one to this machine.
fn secure_or_local(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => u.host_str().is_some_and(is_loopback),
        _ => false,
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
            jail.set_env("EKART_SERVER__HOST", "::1");
            let s = Settings::load(Path::new("ekart.toml")).expect("valid");
            assert_eq!(s.server.port, 9001);
            assert_eq!(s.server.host, "::1");
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

    #[test]
    fn a_split_process_needs_kafka_a_shared_key_and_the_addresses_it_calls() {
        let mut s = Settings::default();
        s.auth.mode = AuthMode::Dev;
        s.modules.run = vec![Module::Gateway, Module::Frontend, Module::User];
        let refused = |s: &Settings| s.validate().unwrap_err().to_string();
        assert!(refused(&s).contains("kafka"));
        s.bus.kind = BusKind::Kafka;
        assert!(refused(&s).contains("session_secret"));
        s.auth.session_secret = "x".repeat(32);
        assert!(refused(&s).contains("modules.stock.instances"));
        for placement in [
            &mut s.modules.stock,
            &mut s.modules.order,
            &mut s.modules.payment,
        ] {
            placement.instances = vec!["http://10.0.0.5:8081".into()];
        }
        s.validate().expect("every module it calls has an address");
        s.modules.order.instances = vec!["10.0.0.5:8081".into()];
        assert!(refused(&s).contains("http://"));
        s.modules.order.instances = vec!["http://10.0.0.5:8081".into()];
        s.modules.run = vec![Module::Frontend, Module::User];
        assert!(refused(&s).contains("gateway"));
        s.modules.run = vec![Module::Stock, Module::Payment];
        s.validate().expect("stock and payment call nobody");
        s.bus.kafka.instances = 2;
        s.bus.kafka.instance = 2;
        assert!(refused(&s).contains("instance"));
    }

    #[test]
    fn the_provider_is_reached_over_https_unless_on_this_machine() {
        let mut s = Settings::default();
        s.auth.oidc.client_id = "shop".into();
        s.auth.oidc.client_secret = "secret".into();
        let ok = [
            (
                "https://id.example.com/oauth2/default",
                "https://shop.example.com/auth/callback",
            ),
            (
                "http://127.0.0.1:19300",
                "http://localhost:8080/auth/callback",
            ),
            (
                "http://[::1]:9000",
                "https://shop.example.com/auth/callback",
            ),
        ];
        for (issuer, redirect) in ok {
            s.auth.oidc.issuer = issuer.into();
            s.auth.oidc.redirect_url = redirect.into();
            s.validate().expect(issuer);
        }
        let refused = [
            (
                "http://id.example.com/oauth2/default",
                "https://shop.example.com/auth/callback",
            ),
            (
                "https://id.example.com",
                "http://shop.example.com/auth/callback",
            ),
            (
                "http://10.0.0.5:8080",
                "https://shop.example.com/auth/callback",
            ),
            (
                "ftp://id.example.com",
                "https://shop.example.com/auth/callback",
            ),
        ];
        for (issuer, redirect) in refused {
            s.auth.oidc.issuer = issuer.into();
            s.auth.oidc.redirect_url = redirect.into();
            let why = s.validate().unwrap_err().to_string();
            assert!(
                why.contains("must be https://"),
                "{issuer} {redirect}: {why}"
            );
        }
    }

    #[test]
    fn dev_sign_in_stays_on_loopback_unless_forced() {
        let mut s = Settings::default();
        s.auth.mode = AuthMode::Dev;
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            s.server.host = host.into();
            s.validate().expect(host);
        }
        for host in ["0.0.0.0", "10.0.0.5", "shop.example.com", "::"] {
            s.server.host = host.into();
            let refused = s.validate().unwrap_err().to_string();
            assert!(
                refused.contains("--insecure-dev-sign-in"),
                "{host}: {refused}"
            );
        }
        s.auth.dev_on_network = true;
        s.validate().expect("forced");
    }
}
