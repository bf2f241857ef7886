//! Liveness and readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bus::Bus;
use crate::db::Db;

#[derive(Clone)]
pub struct Probes {
    pub databases: Vec<Db>,
    pub bus: Arc<dyn Bus>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    /// Each dependency and whether it answers.
    pub checks: Vec<Check>,
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
}

pub fn router(probes: Probes) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .with_state(probes)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: vec![],
    })
}

/// Every database and the bus answer: the process can take traffic.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(probes): State<Probes>) -> (StatusCode, Json<Health>) {
    let mut checks = Vec::new();
    for db in &probes.databases {
        checks.push(Check {
            name: format!("database:{}", db.name),
            ok: db.ping().await.is_ok(),
        });
    }
    checks.push(Check {
        name: "bus".into(),
        ok: probes.bus.ready().await,
    });
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if ready { "ready" } else { "not ready" },
            checks,
        }),
    )
}
