//! The application: every module wired to its database and the bus, behind the gateway,
//! listening on a socket. Tests start one on a random port with [`Application::build`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::bus::inbox::spawn_consumer;
use crate::bus::kafka::KafkaBus;
use crate::bus::memory::MemoryBus;
use crate::bus::outbox::run_relay;
use crate::bus::{topics, Bus};
use crate::config::{AuthMode, BusKind, Settings};
use crate::db::Db;
use crate::gateway::auth::Authenticator;
use crate::gateway::{self, health};
use crate::modules::frontend::{self, Frontend, Recorder};
use crate::modules::order::{self, OrderState, OrderStore, Waiters};
use crate::modules::payment::{self, provider::Simulator, PaymentStore};
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
            stock: Db::open(d, "stock", &stock::MIGRATIONS).await?,
            orders: Db::open(d, "orders", &order::MIGRATIONS).await?,
            payment: Db::open(d, "payment", &payment::MIGRATIONS).await?,
            users: Db::open(d, "users", &user::MIGRATIONS).await?,
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
    databases: Databases,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        let databases = Databases::open(&settings).await?;
        let bus: Arc<dyn Bus> = match settings.bus.kind {
            BusKind::Memory => MemoryBus::new(),
            BusKind::Kafka => KafkaBus::new(settings.bus.kafka.clone()),
        };

        let stock_store = StockStore::new(databases.stock.clone());
        if settings.catalog.seed_demo {
            let seeded = stock::seed_demo_catalog(&stock_store).await?;
            if seeded > 0 {
                tracing::info!(products = seeded, "seeded the demo catalog");
            }
        }
        let order_store = OrderStore::new(databases.orders.clone());
        let payment_store = PaymentStore::new(databases.payment.clone());
        let user_store = UserStore::new(databases.users.clone());
        let waiters = Arc::new(Waiters::default());

        // Consumers subscribe before any relay runs, so no event finds the bus empty.
        spawn_consumer(
            &bus,
            databases.stock.clone(),
            stock::CONSUMER,
            topics::ORDER,
            stock::order_events_handler(),
        )
        .await?;
        spawn_consumer(
            &bus,
            databases.payment.clone(),
            payment::CONSUMER,
            topics::ORDER,
            payment::order_events_handler(Arc::new(Simulator)),
        )
        .await?;
        let saga = order::saga_handler(waiters.clone());
        spawn_consumer(
            &bus,
            databases.orders.clone(),
            order::CONSUMER,
            topics::STOCK,
            saga.clone(),
        )
        .await?;
        spawn_consumer(
            &bus,
            databases.orders.clone(),
            order::CONSUMER,
            topics::PAYMENT,
            saga,
        )
        .await?;
        user::spawn_journey_consumer(&bus, databases.users.clone()).await?;
        spawn_consumer(
            &bus,
            databases.users.clone(),
            user::CONSUMER,
            topics::ORDER,
            user::order_events_handler(),
        )
        .await?;

        let sweep = Duration::from_millis(settings.bus.relay_sweep_ms);
        let tasks = [&databases.stock, &databases.orders, &databases.payment]
            .into_iter()
            .map(|db| {
                tokio::spawn(run_relay(
                    db.clone(),
                    bus.clone(),
                    sweep,
                    settings.bus.relay_batch,
                ))
            })
            .collect();

        let auth = Authenticator::new(&settings.auth);
        let mut api = vec![
            stock::router(stock_store.clone()),
            order::router(OrderState {
                store: order_store,
                catalog: Arc::new(stock_store.clone()),
                waiters,
                checkout_wait: Duration::from_millis(settings.checkout.wait_ms),
            }),
            payment::router(payment_store),
            user::router(JourneyStore::new(databases.users.clone())),
            gateway::auth::session_router(user_store.clone()),
            health::router(health::Probes {
                databases: databases.all(),
                bus: bus.clone(),
            }),
        ];
        if settings.auth.mode == AuthMode::Dev {
            tracing::warn!(
                "dev sign-in is ON: anyone can get a token for any name and role at \
                 POST /auth/dev/token. Never expose this shop to the internet like this."
            );
            api.push(gateway::auth::dev_router(auth.clone(), user_store));
        }
        let recorder = Recorder::start(bus.clone());
        let router = gateway::router(
            api,
            |api| frontend::router(Frontend { api, recorder }),
            auth,
            settings.server.body_limit_bytes,
        );

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {}:{}: {e}",
                    settings.server.host,
                    settings.server.port
                )
            })?;
        Ok(Application {
            listener,
            router,
            databases,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        for task in &self.tasks {
            task.abort();
        }
        for db in self.databases.all() {
            db.close().await;
        }
        result
    }
}
