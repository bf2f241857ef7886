//! The door's hardware: security headers on every answer, and a same-origin check on every
//! state-changing request a browser could be tricked into sending.
//!
//! Cross-site request forgery needs ambient credentials: the session cookie. A request that
//! changes something and either carries that cookie or targets a page (a form post) must come
//! from the shop's own pages: modern browsers say where a request comes from in `Origin` (or
//! `Sec-Fetch-Site`), and neither can be set by another site's page. That is OWASP's "verify
//! origin with standard headers", as strong as a token for browsers that send them, and it
//! needs no state. API clients that authenticate with a bearer token are not affected: a
//! browser never attaches one by itself.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::auth::SESSION_COOKIE;
use crate::error::ApiError;

/// Pages may load only the shop's own script, styles and images; nothing may frame them.
/// Forms post to the shop, and (`also_form_action`: the sign-in provider's origin) to where
/// a form's redirects lead: browsers hold the whole redirect chain of a form submission to
/// `form-action`, and signing out ends at the provider.
pub fn content_security_policy(also_form_action: Option<&str>) -> HeaderValue {
    let form_action = match also_form_action {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".into(),
    };
    HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action {form_action}; frame-ancestors 'none'; \
         base-uri 'none'; object-src 'none'"
    ))
    .expect("a header value")
}

/// Middleware: sets the security headers on every response: `csp` from
/// [`content_security_policy`]; `https` (the shop's public address is https) adds HSTS.
pub async fn headers(csp: HeaderValue, https: bool, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    let mut set = |name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "same-origin");
    if https {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    response
}

/// Middleware: refuses (403) a state-changing request that a browser may have sent on
/// another site's behalf.
pub async fn same_origin(request: Request, next: Next) -> Response {
    if needs_check(&request) && !from_this_origin(request.headers()) {
        tracing::warn!(target: "audit", path = %request.uri().path(),
            origin = ?request.headers().get(header::ORIGIN), "cross-site request refused");
        return ApiError::forbidden(
            "this form must be sent from the shop's own pages (the request's Origin is \
             missing or another site's)",
        )
        .into_response();
    }
    next.run(request).await
}

fn needs_check(request: &Request) -> bool {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if safe || request.headers().contains_key(header::AUTHORIZATION) {
        return false;
    }
    let path = request.uri().path();
    let page = !(path.starts_with("/api/") || path.starts_with("/auth/"));
    page || CookieJar::from_headers(request.headers())
        .get(SESSION_COOKIE)
        .is_some()
}

/// Whether the browser says the request comes from a page of this very origin.
fn from_this_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = text(header::HOST) else {
        return false;
    };
    if let Some(origin) = text(header::ORIGIN) {
        return authority(origin) == Some(host);
    }
    match text(HeaderName::from_static("sec-fetch-site")) {
        Some(site) => site == "same-origin",
        // Neither header: an old browser or not a browser; a same-site Referer will do.
        None => text(header::REFERER).and_then(authority) == Some(host),
    }
}

/// `https://shop.example:8080/path` → `shop.example:8080`.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// A path on this shop to send a browser to, or `/`: the one judge of every redirect a request
/// can steer (sign-in's `next`, the cart forms' `back`, OIDC's `return_to`). Refused: anything
/// not starting with one `/`, backslashes (browsers read `/\host` as `//host`), control
/// characters (browsers drop tabs and newlines, so `/<TAB>/host` is `//host`; CR and LF would
/// also break the `Location` header), and anything that, resolved as a browser does, leaves
/// the shop's origin.
pub fn local_path(path: Option<&str>) -> String {
    const HOME: &str = "/";
    let Some(path) = path else {
        return HOME.into();
    };
    let plain = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 2048
        && !path.chars().any(|c| c == '\\' || c.is_control());
    if !plain {
        return HOME.into();
    }
    static SHOP: std::sync::LazyLock<reqwest::Url> = std::sync::LazyLock::new(|| {
        reqwest::Url::parse("https://shop.invalid/").expect("a valid base")
    });
    match SHOP.join(path) {
        Ok(there) if there.origin() == SHOP.origin() => path.to_string(),
        _ => HOME.into(),
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: an answer to a request that carries credentials (a session cookie, a bearer
/// token) is someone's own (their cart, orders, journeys, session), and so is one that sets a
/// cookie or answers a sign-in step (`/auth/…`), so no cache on the way or in the browser may
/// keep it: `Cache-Control: no-store`, unless the route said otherwise (the embedded assets
/// are immutable for everyone).
pub async fn private_answers_not_stored(request: Request, next: Next) -> Response {
    let personal = request.headers().contains_key(header::COOKIE)
        || request.headers().contains_key(header::AUTHORIZATION)
        || request.uri().path().starts_with("/auth/");
    let mut response = next.run(request).await;
    let sets_cookie = response.headers().contains_key(header::SET_COOKIE);
    if (personal || sets_cookie) && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// Middleware: a refusal axum or a layer wrote as plain text (a body over the limit, a form or
/// query that does not parse) is answered as problem details like every other error, its
/// words kept as the detail.
pub async fn plain_refusals_as_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !status.is_client_error() {
        return response;
    }
    let (kind, title) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported body"),
        StatusCode::UNPROCESSABLE_ENTITY => ("validation", "Invalid request"),
        _ => ("bad-request", "Bad request"),
    };
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&bytes).trim().to_string();
    ApiError::new(status, kind, title, detail).into_response()
}

/// Middleware: refuses an address carrying a NUL character (`%00`) with 400. No text of the
/// shop may hold one (PostgreSQL's text cannot), so it is never a real request; refusing it
/// at the door keeps every handler from meeting it as a database error.
pub async fn no_nul_in_address(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let has_nul = |part: &str| part.contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("the address contains a NUL character (%00)").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::local_path;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn only_this_origin_passes() {
        let host = ("host", "shop.example:8080");
        for ok in [
            vec![host, ("origin", "http://shop.example:8080")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("referer", "http://shop.example:8080/cart")],
        ] {
            assert!(super::from_this_origin(&headers(&ok)), "{ok:?}");
        }
        for bad in [
            vec![host],
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://shop.example:8080.evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("referer", "http://evil.example/shop.example:8080")],
            vec![("origin", "http://shop.example:8080")],
        ] {
            assert!(!super::from_this_origin(&headers(&bad)), "{bad:?}");
        }
    }

    #[test]
    fn only_paths_on_this_shop_are_followed() {
        for (asked, got) in [
            (Some("/cart?x=1"), "/cart?x=1"),
            (
                Some("/orders?status=failed#top"),
                "/orders?status=failed#top",
            ),
            (Some("/%09/evil.example"), "/%09/evil.example"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/\t/evil.example"), "/"),
            (Some("/\n/evil.example"), "/"),
            (Some("/ok\r\nSet-Cookie: x=y"), "/"),
            (Some("/\u{0}x"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some(" /x"), "/"),
            (Some(""), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(asked), got, "{asked:?}");
        }
        assert_eq!(local_path(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }
}
