//! The pages talk to the modules through the shop's own JSON API, exactly as a browser or a
//! remote client would, so the frontend needs nothing of the modules but their API. Today the
//! API router is called in-process (a tower service, no socket); the gateway can later route
//! the same requests to a module running elsewhere.

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

/// The API's answer when it is not a success: its problem document, read for the pages.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub body: Value,
}

impl Problem {
    fn from_answer(status: StatusCode, body: &[u8]) -> Problem {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |key: &str, default: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        Problem {
            status,
            title: text("title", "Something went wrong"),
            detail: text("detail", "please try again"),
            body,
        }
    }

    fn internal(detail: impl std::fmt::Display) -> Problem {
        Problem {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error".into(),
            detail: detail.to_string(),
            body: Value::Null,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    router: Router,
}

impl ApiClient {
    pub fn new(router: Router) -> ApiClient {
        ApiClient { router }
    }

    /// Sends one request as the holder of `token`. Any status below 400 answers the body, any
    /// other a [`Problem`].
    pub async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
    ) -> Result<Bytes, Problem> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(body).map_err(Problem::internal)?)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(Problem::internal)?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(Problem::internal)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(Problem::internal)?.to_bytes();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            return Err(Problem::from_answer(parts.status, &body));
        }
        Ok(body)
    }

    /// Sends a request and reads the JSON answer as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Problem> {
        let answer = self.send(token, method, path, body, &[]).await?;
        serde_json::from_slice(&answer).map_err(Problem::internal)
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        path: &str,
    ) -> Result<T, Problem> {
        self.json(token, Method::GET, path, None::<&Value>).await
    }
}
