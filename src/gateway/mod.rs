//! The gateway: one router in front of every module, with the layers every request passes:
//! tracing, panic safety, body limits, authentication, problem-details fallbacks.

pub mod auth;
pub mod extract;
pub mod health;
pub mod limits;
pub mod oidc;
pub mod remote;
pub mod security;
pub mod sessions;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Ekart", description = "An online shop: catalog, cart, checkout, orders, payments."),
    modifiers(&BearerAuth),
    tags((name = "catalog"), (name = "cart"), (name = "checkout"), (name = "orders"),
        (name = "payments"), (name = "journeys"), (name = "auth"), (name = "health"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every operation can answer 400 (malformed query, path or body) and 429 (rate limits),
/// every one that needs sign-in 401, every one with a body 413 and 415. All errors are
/// problem documents.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                // Public operations too: a bearer token that is sent is checked, and an invalid
                // or ended one is refused whatever the route.
                let responses = &mut op.responses.responses;
                responses.entry("401".into()).or_insert_with(|| {
                    problem("Sign-in required, or the credential sent is not valid").into()
                });
                responses
                    .entry("400".into())
                    .or_insert_with(|| problem("Malformed request").into());
                responses
                    .entry("429".into())
                    .or_insert_with(|| problem("Too many requests; see Retry-After").into());
                if op.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| problem("Body too large").into());
                    responses
                        .entry("415".into())
                        .or_insert_with(|| problem("Body is not JSON").into());
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "Problem".into(),
            <Problem as utoipa::PartialSchema>::schema(),
        );
    }
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes ApiError's JSON for the spec
struct Problem {
    /// Stable identifier, e.g. `/problems/out-of-stock`.
    r#type: String,
    title: String,
    status: u16,
    detail: String,
}

/// What every request passes on its way in.
pub struct Door {
    pub gate: Arc<auth::Gate>,
    pub body_limit: usize,
    /// `None` when rate limits are off.
    pub limits: Option<Arc<limits::Limits>>,
    /// The shop is served over https (HSTS).
    pub https: bool,
    /// The sign-in provider's origin, where signing out leads (CSP `form-action`).
    pub provider_origin: Option<String>,
    /// What a scraper of `/metrics` must send (empty: no `/metrics` here).
    pub metrics_token: String,
}

/// Assembles the public router: the local modules' API routers, other routes with their
/// OpenAPI descriptions (modules in other processes, so the spec shows the whole shop; sign-in
/// flows), and the pages (if this process serves them), which `pages` builds around that same
/// API's router (the frontend calls it in-process), so that their calls take the same routes.
pub fn router(
    api: Vec<OpenApiRouter>,
    routed: Vec<(Router, utoipa::openapi::OpenApi)>,
    pages: Option<impl FnOnce(Router) -> Router>,
    door: Door,
) -> Router {
    let Door {
        gate,
        body_limit,
        limits,
        https,
        provider_origin,
        metrics_token,
    } = door;
    let csp = security::content_security_policy(provider_origin.as_deref());
    let mut merged = OpenApiRouter::with_openapi(ApiDoc::openapi());
    for part in api {
        merged = merged.merge(part);
    }
    let (routes, mut openapi) = merged.split_for_parts();
    let mut remote_routes = Vec::new();
    for (routes, doc) in routed {
        openapi.merge(doc);
        remote_routes.push(routes);
    }
    // After the merge, so that it sees every module's operations.
    ProblemResponses.modify(&mut openapi);
    let openapi = Arc::new(openapi);
    let authenticated = |router: Router| {
        let router = match &limits {
            Some(limits) => router.layer(middleware::from_fn_with_state(
                limits.clone(),
                limits::per_client,
            )),
            None => router,
        };
        router
            .layer(middleware::from_fn_with_state(
                gate.clone(),
                auth::authenticate,
            ))
            .layer(DefaultBodyLimit::max(body_limit))
    };
    let routes = remote_routes.into_iter().fold(routes, Router::merge);
    let api = authenticated(routes.route(
        "/api/openapi.json",
        get(move || {
            let openapi = openapi.clone();
            async move { Json(openapi.as_ref().clone()) }
        }),
    ));
    let api = match metrics_token.as_str() {
        "" => api,
        _ => api.merge(crate::telemetry::metrics::router(metrics_token)),
    };
    let site = match pages {
        Some(pages) => {
            let in_process = api
                .clone()
                .fallback(not_found)
                .layer(middleware::map_request(
                    |mut req: axum::extract::Request| async {
                        req.extensions_mut().insert(limits::InProcess);
                        req
                    },
                ));
            api.clone().merge(authenticated(pages(in_process)))
        }
        None => api,
    };
    let site = site
        .route_layer(middleware::from_fn(crate::telemetry::trace::record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(security::same_origin))
        .layer(middleware::from_fn(security::private_answers_not_stored))
        .layer(middleware::from_fn(security::plain_refusals_as_problems))
        .layer(middleware::from_fn(security::no_nul_in_address));
    let site = match limits {
        Some(limits) => site.layer(middleware::from_fn_with_state(limits, limits::per_address)),
        None => site,
    };
    site.layer(middleware::from_fn(move |req, next| {
        security::headers(csp.clone(), https, req, next)
    }))
    .layer(CatchPanicLayer::custom(|_| {
        ApiError::internal("a request handler panicked").into_response()
    }))
    .layer(middleware::from_fn(crate::telemetry::metrics::record))
    .layer(middleware::from_fn(crate::telemetry::trace::propagate))
    .layer(TraceLayer::new_for_http())
}

async fn not_found() -> ApiError {
    ApiError::not_found("this address")
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this address does not accept that method",
    )
    .into_response()
}
