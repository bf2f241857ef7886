//! The application: every module wired to its database and the bus, behind the gateway,
//! listening on a socket. Tests start one on a random port with [`Application::build`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

use crate::bus::inbox::spawn_consumer;
use crate::bus::kafka::KafkaBus;
use crate::bus::memory::MemoryBus;
use crate::bus::outbox::{open_database, run_relay};
use crate::bus::{topics, Bus};
use crate::config::{AuthMode, BusKind, Module, Settings};
use crate::db::{Backend, Db};
use crate::error::ApiResult;
use crate::gateway::auth::{Authenticator, Gate};
use crate::gateway::limits::Limits;
use crate::gateway::oidc::Provider;
use crate::gateway::remote::Remote;
use crate::gateway::sessions::Sessions;
use crate::gateway::{self, health};
use crate::modules::frontend::{self, ApiClient, Frontend, Recorder};
use crate::modules::order::catalog::{Catalog, ProductInfo, RemoteCatalog};
use crate::modules::order::{self, OrderState, OrderStore, Waiters};
use crate::modules::payment::{self, PaymentStore, Settler};
use crate::modules::stock::{self, StockStore};
use crate::modules::user::{self, JourneyStore, UserStore};

/// Each module's database, opened and migrated.
pub struct Databases {
    pub stock: Db,
    pub orders: Db,
    pub payment: Db,
    pub users: Db,
}

impl Databases {
    /// Opens every module's database and applies its migrations.
    pub async fn open(settings: &Settings) -> anyhow::Result<Databases> {
        let d = &settings.database;
        Ok(Databases {
            stock: open_database(d, "stock", &stock::MIGRATIONS).await?,
            orders: open_database(d, "orders", &order::MIGRATIONS).await?,
            payment: open_database(d, "payment", &payment::MIGRATIONS).await?,
            users: open_database(d, "users", &user::MIGRATIONS).await?,
        })
    }

    pub fn all(&self) -> Vec<Db> {
        vec![
            self.stock.clone(),
            self.orders.clone(),
            self.payment.clone(),
            self.users.clone(),
        ]
    }
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// `server.metrics_addr`'s listener and its router (only `/metrics`).
    metrics: Option<(TcpListener, axum::Router)>,
    /// The settings in force, and what a reload changes, for [`Application::watch_config`].
    in_force: Arc<crate::reload::InForce>,
    appliers: crate::reload::Appliers,
    databases: Vec<Db>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// How long a connection may take over a request's headers, or idle between requests.
    header_timeout: Duration,
}

impl Application {
    /// Builds the modules `settings.modules.run` names, each on its database and the bus, and
    /// the routes to the modules that run elsewhere.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        // Before anything records: a handle taken before the recorder exists records nowhere.
        crate::telemetry::metrics::install();
        let telemetry = &settings.telemetry;
        crate::telemetry::trace::set_sample_ratio(telemetry.sample_ratio);
        if !telemetry.zipkin_endpoint.is_empty() {
            let service = match telemetry.service_name.as_str() {
                "" => settings.modules.service_name(),
                named => named.to_string(),
            };
            crate::telemetry::spans::install(&telemetry.zipkin_endpoint, &service)?;
        }
        let runs = |m: Module| settings.modules.runs(m);
        let body_limit = settings.server.body_limit_bytes;
        let bus: Arc<dyn Bus> = match settings.bus.kind {
            BusKind::Memory => MemoryBus::new(),
            BusKind::Kafka => KafkaBus::new(settings.bus.kafka.clone()),
        };
        let auth = Authenticator::new(&settings.auth);
        let provider = match settings.auth.mode {
            AuthMode::Oidc => Some(Provider::new(settings.auth.oidc.clone())?),
            AuthMode::Dev => None,
        };
        let https = settings.server.public_url.starts_with("https://");
        let oidc_mode = settings.auth.mode == AuthMode::Oidc;
        // Routes beside the local modules' documented API: modules in other processes (with
        // their OpenAPI descriptions) and browser-only flows.
        let mut routed = Vec::new();

        // The numbers a reload may change, read where they are used.
        let knobs = crate::reload::Knobs::of(&settings);
        // The modules this process calls but does not run.
        let mut remotes = HashMap::new();
        for module in [Module::Stock, Module::Order, Module::Payment, Module::User] {
            let instances = settings.modules.instances(module);
            if !runs(module) && !instances.is_empty() {
                let remote = Remote::start(
                    module,
                    instances,
                    &settings.gateway,
                    &knobs.calls,
                    body_limit,
                )?;
                remotes.insert(module, remote);
            }
        }

        // Each module: its database, its consumers (subscribed before any relay runs, so no
        // event finds the bus empty), its routes, its tasks.
        let wiring = Wiring {
            settings: &settings,
            knobs: &knobs,
            bus: &bus,
            auth: &auth,
            provider: provider.as_ref(),
            https,
        };
        let mut mounted = Mounted::default();
        let mut catalog: Option<Arc<dyn Catalog>> = None;
        if runs(Module::Stock) {
            catalog = Some(Arc::new(mount_stock(&wiring, &mut mounted).await?));
        } else if let Some(remote) = remotes.get(&Module::Stock) {
            catalog = Some(Arc::new(RemoteCatalog(remote.clone())));
        }
        if runs(Module::Payment) {
            mount_payment(&wiring, &mut mounted).await?;
        }
        if runs(Module::Order) {
            let catalog = catalog.expect("validated: order runs with a stock module to ask");
            mount_order(&wiring, &mut mounted, catalog).await?;
        }
        let mut users = None;
        if runs(Module::User) {
            users = Some(mount_user(&wiring, &mut mounted).await?);
        }
        let Mounted {
            databases,
            mut api,
            routed: browser_flows,
            tasks: housekeeping,
        } = mounted;
        routed.extend(browser_flows);
        api.push(health::router(health::Probes {
            databases: databases.clone(),
            bus: bus.clone(),
        }));

        if runs(Module::Gateway) {
            for (module, remote) in &remotes {
                tracing::info!(module = module.name(), instances = ?settings.modules.instances(*module),
                    "routing a module to its instances");
                let dev_sign_in = settings.auth.mode == AuthMode::Dev;
                routed.push((remote.router(&module.paths()), module.openapi(dev_sign_in)));
            }
        }
        let pages = runs(Module::Frontend).then(|| {
            let recorder = Recorder::start(bus.clone());
            let auth = auth.clone();
            move |api| {
                frontend::router(Frontend {
                    api: ApiClient::new(api),
                    recorder,
                    https,
                    oidc: oidc_mode,
                    auth,
                })
            }
        });
        // Who answers whether a session is live: the user module, here or elsewhere.
        let sessions = match (users, remotes.get(&Module::User)) {
            (Some(users), _) => Sessions::local(
                Arc::new(users),
                &settings.auth,
                knobs.session_idle_ms.clone(),
            ),
            (None, Some(user)) => Sessions::remote(user.clone()),
            (None, None) => {
                tracing::warn!(
                    "no address for the user module (modules.user.instances): this process \
                     checks session tokens by signature and expiry only, so sign-out and idle \
                     expiry do not reach it"
                );
                Sessions::Unchecked
            }
        };
        let limits = Limits::start(&settings.limits)?;
        let door = gateway::Door {
            gate: Arc::new(Gate {
                auth,
                provider,
                sessions,
            }),
            body_limit,
            limits: limits.clone(),
            https,
            provider_origin: oidc_mode
                .then(|| reqwest::Url::parse(&settings.auth.oidc.issuer).ok())
                .flatten()
                .map(|issuer| issuer.origin().ascii_serialization()),
            metrics_token: settings.server.metrics_token.clone(),
        };
        // The settings in force, shown to admins and kept by a reload.
        let in_force = crate::reload::InForce::new(settings.clone());
        routed.push((
            crate::reload::router(in_force.clone()),
            utoipa::openapi::OpenApi::default(),
        ));
        let router = gateway::router(api, routed, pages, door).layer(
            tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_secs(
                settings.server.body_timeout_secs,
            )),
        );

        let sweep = Duration::from_millis(settings.bus.relay_sweep_ms);
        let tasks = databases
            .iter()
            .filter(|db| db.name != "users") // the user module publishes nothing
            .map(|db| {
                tokio::spawn(run_relay(
                    db.clone(),
                    bus.clone(),
                    sweep,
                    settings.bus.relay_batch,
                ))
            })
            .chain(housekeeping)
            .collect();

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {}:{}: {e}",
                    settings.server.host,
                    settings.server.port
                )
            })?;
        let metrics = match settings.server.metrics_addr.as_str() {
            "" => None,
            addr => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
                let router =
                    crate::telemetry::metrics::router(settings.server.metrics_token.clone());
                Some((listener, router))
            }
        };
        Ok(Application {
            listener,
            router,
            metrics,
            appliers: crate::reload::Appliers {
                limits,
                knobs,
                remotes: remotes.into_values().collect(),
            },
            databases,
            tasks,
            header_timeout: Duration::from_secs(settings.server.header_timeout_secs),
            in_force,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Applies the live keys of the configuration at `path` (with `flags`, as at start)
    /// whenever the file changes or the process gets SIGHUP (`reload.rs`).
    pub fn watch_config(
        &mut self,
        path: std::path::PathBuf,
        flags: crate::config::ServeFlags,
    ) -> anyhow::Result<()> {
        let appliers = self.appliers.clone();
        let task = crate::reload::watch(path, flags, self.in_force.clone(), appliers)?;
        self.tasks.push(task);
        Ok(())
    }

    /// Where `server.metrics_addr` listens, if it is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let (listener, _) = self.metrics.as_ref()?;
        Some(listener.local_addr().expect("bound listener"))
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (for at most
    /// [`DRAIN`]).
    ///
    /// The accept loop is hyper's own rather than `axum::serve`, which sets no timer: a
    /// connection gets `header_timeout` to send a request's headers, counted from when it
    /// starts waiting for one, so a client dribbling headers (slowloris) and a connection
    /// sitting idle between requests are both closed then.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use tower::ServiceExt;

        let Application {
            listener,
            router,
            metrics,
            databases,
            tasks,
            header_timeout,
            ..
        } = self;
        // HTTP/1.1 alone (TLS and HTTP/2 end at the proxy in front): a server that also
        // listened for HTTP/2's preface would wait for a client's first bytes with no timer.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            // The metrics address, if any, is served by the same loop with the same timers.
            let metrics_accept = async {
                match &metrics {
                    Some((listener, router)) => (listener.accept().await, router),
                    None => std::future::pending().await,
                }
            };
            let (accepted, router) = tokio::select! {
                accepted = listener.accept() => (accepted, &router),
                accepted = metrics_accept => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            // Rate limits key anonymous clients by their address.
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request)
            });
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        drop(listener);
        drop(metrics);
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {DRAIN:?}; closing them");
        }
        for task in &tasks {
            task.abort();
        }
        for db in &databases {
            db.close().await;
        }
        let _ = tokio::task::spawn_blocking(crate::telemetry::spans::flush).await;
        Ok(())
    }
}

/// How long a stopping shop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// What every module is mounted with.
struct Wiring<'a> {
    settings: &'a Settings,
    /// The settings that reload live, as the modules read them.
    knobs: &'a crate::reload::Knobs,
    bus: &'a Arc<dyn Bus>,
    auth: &'a Arc<Authenticator>,
    /// OIDC mode's provider.
    provider: Option<&'a Arc<Provider>>,
    https: bool,
}

/// What the modules running in this process add to it.
#[derive(Default)]
struct Mounted {
    databases: Vec<Db>,
    /// Their documented HTTP API.
    api: Vec<OpenApiRouter>,
    /// Routes outside the API's description (the browser's sign-in flow).
    routed: Vec<(axum::Router, utoipa::openapi::OpenApi)>,
    /// Tasks of their own, stopped with the application.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The stock module: the catalog (seeded with the demo products if asked and empty), the
/// reservations the order saga asks for, and on SQLite the search index's upkeep. Answers
/// the store, which is the order module's catalog in this process.
async fn mount_stock(w: &Wiring<'_>, m: &mut Mounted) -> anyhow::Result<StockStore> {
    let db = open_database(&w.settings.database, "stock", &stock::MIGRATIONS).await?;
    let store = StockStore::new(db.clone()).keeping_searches(w.settings.catalog.search_cache_pages);
    if w.settings.catalog.seed_demo {
        let seeded = stock::seed_demo_catalog(&store).await?;
        if seeded > 0 {
            tracing::info!(products = seeded, "seeded the demo catalog");
        }
    }
    let handler = stock::order_events_handler();
    spawn_consumer(w.bus, db.clone(), stock::CONSUMER, topics::ORDER, handler);
    if db.backend == Backend::Sqlite {
        m.tasks
            .push(tokio::spawn(stock::upkeep::run(store.clone())));
    }
    m.api.push(stock::router(store.clone()));
    m.databases.push(db);
    Ok(store)
}

/// The payment module: charges and refunds through the configured provider.
async fn mount_payment(w: &Wiring<'_>, m: &mut Mounted) -> anyhow::Result<()> {
    let db = open_database(&w.settings.database, "payment", &payment::MIGRATIONS).await?;
    let store = PaymentStore::new(db.clone());
    let provider = payment::provider::named(w.settings.payment.provider);
    let handler = payment::order_events_handler(Settler::start(store.clone(), provider));
    spawn_consumer(w.bus, db.clone(), payment::CONSUMER, topics::ORDER, handler);
    m.api.push(payment::router(store));
    m.databases.push(db);
    Ok(())
}

/// The order module: carts, checkout and the saga, asking `catalog` about products.
async fn mount_order(
    w: &Wiring<'_>,
    m: &mut Mounted,
    catalog: Arc<dyn Catalog>,
) -> anyhow::Result<()> {
    let db = open_database(&w.settings.database, "orders", &order::MIGRATIONS).await?;
    let waiters = Arc::new(Waiters::default());
    let saga = order::saga_handler(waiters.clone());
    for topic in [topics::STOCK, topics::PAYMENT] {
        spawn_consumer(w.bus, db.clone(), order::CONSUMER, topic, saga.clone());
    }
    m.api.push(order::router(OrderState {
        store: OrderStore::new(db.clone()),
        catalog,
        waiters,
        checkout_wait_ms: w.knobs.checkout_wait_ms.clone(),
        checkout_open: w.knobs.checkout_open.clone(),
        // Over Kafka another instance of the module may read the order's partition.
        poll_outcome: (w.settings.bus.kind == BusKind::Kafka).then(|| Duration::from_millis(250)),
    }));
    m.databases.push(db);
    Ok(())
}

/// The user module: journeys, and sign-in (its sessions, the `/auth/*` routes). Answers the
/// store, which keeps the sessions the door checks.
async fn mount_user(w: &Wiring<'_>, m: &mut Mounted) -> anyhow::Result<UserStore> {
    let settings = w.settings;
    let db = open_database(&settings.database, "users", &user::MIGRATIONS).await?;
    let users = UserStore::new(db.clone());
    user::spawn_journey_consumer(w.bus, db.clone(), w.knobs.journey_max_steps.clone());
    let handler = user::order_events_handler();
    spawn_consumer(w.bus, db.clone(), user::CONSUMER, topics::ORDER, handler);
    m.api.push(user::router(JourneyStore::new(db.clone())));
    m.api.push(user::signin::session_router(users.clone()));
    if let Some(provider) = w.provider {
        let oidc = user::oidc::Oidc::new(provider.clone(), w.auth.clone(), users.clone(), w.https);
        m.routed
            .push((oidc.router(), utoipa::openapi::OpenApi::default()));
    }
    if settings.auth.mode == AuthMode::Dev {
        if settings.auth.dev_on_network {
            tracing::error!(
                host = %settings.server.host,
                "DEV SIGN-IN IS OPEN TO THE NETWORK (--insecure-dev-sign-in): anyone who \
                 can reach this address can sign in as anyone, admin included"
            );
        } else {
            tracing::warn!(
                "dev sign-in is ON: anyone can get a token for any name and role at \
                 POST /auth/dev/token. Never expose this shop to the internet like this."
            );
        }
        m.api
            .push(user::signin::dev_router(w.auth.clone(), users.clone()));
    }
    m.databases.push(db);
    Ok(users)
}

/// Order's catalog port answered by the stock module in the same process.
#[async_trait::async_trait]
impl Catalog for StockStore {
    async fn product(&self, id: &str) -> ApiResult<Option<ProductInfo>> {
        Ok(self.get(id).await?.map(|p| ProductInfo {
            name: p.name,
            price_minor: p.price_minor,
            currency: p.currency,
            available: p.available,
        }))
    }
}
