//! Notices carried over a redirect ("Added 2 to your cart"), shown once by the next page:
//! news, or a refusal ("only 3 are available"), which the page shows as an error.
//!
//! They travel in a short-lived cookie the shop signs, never in the address: a notice read
//! from `?notice=` would let a link from anywhere make the shop's own page say anything
//! ("Your account is locked; call …").

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};

use crate::gateway::auth::Authenticator;

const NOTICE_COOKIE: &str = "ekart_notice";
/// Long enough for a redirect to be followed, short enough that a stale one never shows.
const NOTICE_TTL_SECS: i64 = 60;
/// Longest notice shown; a longer one is cut.
const NOTICE_CHARS: usize = 200;

/// The notice this request's page shows (put in the request by [`shown_once`]).
#[derive(Debug, Clone)]
pub struct Notice {
    pub text: String,
    /// Something was refused: the page shows it as an error, not as news.
    pub error: bool,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    text: String,
    #[serde(default)]
    error: bool,
    exp: i64,
}

/// `303 See Other` to `to`, whose page will show `notice` (an error if `error`).
pub fn see_other_with(auth: &Authenticator, to: &str, notice: &str, error: bool) -> Response {
    let sealed = auth.seal(&Sealed {
        text: notice.chars().take(NOTICE_CHARS).collect(),
        error,
        exp: chrono::Utc::now().timestamp() + NOTICE_TTL_SECS,
    });
    let cookie = Cookie::build((NOTICE_COOKIE, sealed))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(NOTICE_TTL_SECS))
        .build();
    (CookieJar::new().add(cookie), super::pages::see_other(to)).into_response()
}

/// Middleware: hands a page the notice its cookie carries (if the shop sealed it and it is
/// fresh), and forgets the cookie with that page's answer, unless the answer leaves a new one.
/// The embedded assets neither show nor spend it.
pub async fn shown_once(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let carried = CookieJar::from_headers(request.headers())
        .get(NOTICE_COOKIE)
        .map(|c| c.value().to_string());
    let Some(sealed) = carried.filter(|_| !request.uri().path().starts_with("/static/")) else {
        return next.run(request).await;
    };
    let now = chrono::Utc::now().timestamp();
    if let Some(notice) = auth.open::<Sealed>(&sealed).filter(|n| n.exp > now) {
        request.extensions_mut().insert(Notice {
            text: notice.text,
            error: notice.error,
        });
    }
    let mut response = next.run(request).await;
    let leaves_one = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| {
            v.as_bytes()
                .starts_with(format!("{NOTICE_COOKIE}=").as_bytes())
        });
    if !leaves_one {
        let gone = Cookie::build(NOTICE_COOKIE).path("/").removal().build();
        if let Ok(value) = HeaderValue::from_str(&gone.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}
