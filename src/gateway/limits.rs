//! Rate limits, on tower-governor's limiters (GCRA, keyed): every request per client, and
//! stricter ones for signing in (per address) and checking out (per client). A client is who
//! its credential proved it to be (the signed-in user), so shoppers behind one address do not
//! share a budget; a request with no valid credential is its address. What the client merely
//! sends is never the key: a new random cookie per request, or the same token spelled anew
//! (`bearer`, extra spaces), would each get a fresh budget. Over the limit → 429, a problem
//! document and `Retry-After`.
//!
//! Which limiter applies depends on the path, so a middleware picks them rather than a
//! `GovernorLayer` per route (the routes live in the modules' routers): [`per_address`] before
//! authentication, [`per_client`] after it.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::GovernorError;

use super::auth::Identity;
use crate::config::LimitSettings;
use crate::error::ApiError;

/// Where a shopper signs in: stricter, per address, against guessing and token farming.
const SIGN_IN: [&str; 4] = [
    "/signin",
    "/auth/dev/token",
    "/auth/login",
    "/auth/callback",
];
/// Where a shopper checks out: stricter, per client.
const CHECKOUT: [&str; 2] = ["/checkout", "/api/checkout"];

/// Who is asking, as far as limits go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A hash of the signed-in user's subject.
    User(u64),
    Address(IpAddr),
    /// Neither (a request that did not come through a socket).
    Unknown,
}

/// Marks a request the shop's own pages make of its API in-process: the page's request was
/// counted already.
#[derive(Debug, Clone, Copy)]
pub struct InProcess;

/// Keys requests by [`Client`]; by address only when `by_address`.
#[derive(Debug, Clone, Copy)]
pub struct ClientKey {
    by_address: bool,
}

impl KeyExtractor for ClientKey {
    type Key = Client;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Client, GovernorError> {
        if !self.by_address {
            if let Some(identity) = req.extensions().get::<Identity>() {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                identity.sub.hash(&mut hasher);
                return Ok(Client::User(hasher.finish()));
            }
        }
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Client::Unknown, |c| Client::Address(c.0.ip())))
    }
}

type Config = GovernorConfig<ClientKey, NoOpMiddleware>;

/// A limiter and the key it counts by.
struct Limiter {
    config: Config,
    key: ClientKey,
}

/// The limiters in force; replaced whole when the settings are reloaded ([`Limits::set`]).
pub struct Limits {
    now: std::sync::RwLock<Arc<Limiters>>,
}

struct Limiters {
    every: Limiter,
    sign_in: Limiter,
    checkout: Limiter,
}

impl Limiters {
    fn of(settings: &LimitSettings) -> anyhow::Result<Limiters> {
        let client = ClientKey { by_address: false };
        let minute = |n: u32| Duration::from_secs(60) / n.max(1);
        Ok(Limiters {
            every: limiter(
                Duration::from_secs(1) / settings.per_second.max(1),
                settings.burst,
                client,
            )?,
            sign_in: limiter(
                minute(settings.sign_in_per_minute),
                settings.sign_in_burst,
                ClientKey { by_address: true },
            )?,
            checkout: limiter(
                minute(settings.checkout_per_minute),
                settings.checkout_burst,
                client,
            )?,
        })
    }
}

fn limiter(per: Duration, burst: u32, key: ClientKey) -> anyhow::Result<Limiter> {
    let config = GovernorConfigBuilder::default()
        .period(per)
        .burst_size(burst)
        .key_extractor(key)
        .finish()
        .ok_or_else(|| anyhow::anyhow!("rate limits need a positive rate and burst"))?;
    Ok(Limiter { config, key })
}

impl Limits {
    /// The limiters `settings` describe, or none when limits are off. Forgets idle clients
    /// every minute, so the tables stay as small as the active clients.
    pub fn start(settings: &LimitSettings) -> anyhow::Result<Option<Arc<Limits>>> {
        if !settings.enabled {
            return Ok(None);
        }
        let limits = Arc::new(Limits {
            now: std::sync::RwLock::new(Arc::new(Limiters::of(settings)?)),
        });
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(limits) = weak.upgrade() else { return };
                let now = limits.now();
                for l in [&now.every, &now.sign_in, &now.checkout] {
                    l.config.limiter().retain_recent();
                }
            }
        });
        Ok(Some(limits))
    }

    /// Puts the rates and bursts of `settings` in force (a reload): new limiters, so every
    /// client starts with a full budget under the new rules.
    pub fn set(&self, settings: &LimitSettings) -> anyhow::Result<()> {
        let limiters = Arc::new(Limiters::of(settings)?);
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = limiters;
        Ok(())
    }

    fn now(&self) -> Arc<Limiters> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Middleware, before authentication: sign-in attempts, per address.
pub async fn per_address(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    let sign_in = request.method() == Method::POST && SIGN_IN.contains(&request.uri().path());
    if sign_in {
        if let Some(answer) = refused(&limits.now().sign_in, &request, "sign-in attempts") {
            return answer;
        }
    }
    next.run(request).await
}

/// Middleware, after authentication: every request and checkouts, per client (the signed-in
/// user, else the address). The pages' own calls to the API in-process are not counted again.
pub async fn per_client(
    State(limits): State<Arc<Limits>>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<InProcess>().is_none() {
        let limits = limits.now();
        let checkout = request.method() == Method::POST && CHECKOUT.contains(&request.uri().path());
        let strict = checkout.then_some((&limits.checkout, "checkouts"));
        for (limiter, what) in [Some((&limits.every, "requests")), strict]
            .into_iter()
            .flatten()
        {
            if let Some(answer) = refused(limiter, &request, what) {
                return answer;
            }
        }
    }
    next.run(request).await
}

/// Takes one request from the client's budget; the 429 to answer if it is spent.
fn refused(limiter: &Limiter, request: &Request, what: &str) -> Option<Response> {
    let client = limiter.key.extract(request).unwrap_or(Client::Unknown);
    let not_until = limiter.config.limiter().check_key(&client).err()?;
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    Some(too_many(what, wait, &client))
}

fn too_many(what: &str, wait: Duration, client: &Client) -> Response {
    // Whole seconds, rounded up: "0" would invite an immediate retry that fails again.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    tracing::info!(target: "audit", ?client, what, retry_after = secs, "rate limit reached");
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("too many {what} from you; try again in {secs} s"),
    )
    .with("retry_after", secs)
    .into_response()
}
