//! The gateway: one router in front of every module, with the layers every request passes:
//! tracing, panic safety, body limits, authentication, problem-details fallbacks.

pub mod auth;
pub mod extract;
pub mod health;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::modules::frontend::ApiClient;

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

/// Every operation can answer 400 (malformed query, path or body), every one that needs
/// sign-in 401, every one with a body 413 and 415. All errors are problem documents.
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
                let signed_in = op.security.is_some();
                let responses = &mut op.responses.responses;
                if signed_in {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| problem("Sign-in required").into());
                }
                responses
                    .entry("400".into())
                    .or_insert_with(|| problem("Malformed request").into());
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

/// Assembles the public router: the modules' API routers, and the pages, which `pages`
/// builds around a client of that same API.
pub fn router(
    api: Vec<OpenApiRouter>,
    pages: impl FnOnce(ApiClient) -> Router,
    auth: Arc<auth::Authenticator>,
    body_limit: usize,
) -> Router {
    let mut merged = OpenApiRouter::with_openapi(ApiDoc::openapi());
    for part in api {
        merged = merged.merge(part);
    }
    let (routes, mut openapi) = merged.split_for_parts();
    // After the merge, so that it sees every module's operations.
    ProblemResponses.modify(&mut openapi);
    let openapi = Arc::new(openapi);
    let authenticated = |router: Router| {
        router
            .layer(middleware::from_fn_with_state(
                auth.clone(),
                auth::authenticate,
            ))
            .layer(DefaultBodyLimit::max(body_limit))
    };
    let api = authenticated(routes.route(
        "/api/openapi.json",
        get(move || {
            let openapi = openapi.clone();
            async move { Json(openapi.as_ref().clone()) }
        }),
    ));
    let pages = authenticated(pages(ApiClient::new(api.clone().fallback(not_found))));
    api.merge(pages)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
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
