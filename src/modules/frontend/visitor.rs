//! Who is looking at a page, and what every page's frame (header, notices) needs to know.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;

use super::flash::Notice;
use super::pages::PageError;
use crate::gateway::auth::{Identity, SESSION_COOKIE};

/// Anyone: signed in through the session cookie, or not.
pub struct Visitor {
    pub identity: Option<Identity>,
    /// The session's token, sent on the visitor's behalf to the API.
    pub token: Option<String>,
    /// The page's path and query, to come back to after signing in.
    pub here: String,
    /// A one-line message carried over a redirect ([`super::flash`]).
    pub notice: Option<Notice>,
}

impl Visitor {
    pub fn chrome(&self) -> Chrome {
        Chrome {
            user_name: self.identity.as_ref().map(|i| i.name.clone()),
            is_admin: self.identity.as_ref().is_some_and(Identity::is_admin),
            session_started_at: self.identity.as_ref().and_then(|i| i.session_started_at),
            notice: self.notice.clone(),
            asset_version: super::assets::version(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let identity = parts.extensions.get::<Identity>().cloned();
        let token = identity.as_ref().and_then(|_| {
            CookieJar::from_headers(&parts.headers)
                .get(SESSION_COOKIE)
                .map(|c| c.value().to_string())
        });
        let notice = parts.extensions.get::<Notice>().cloned();
        let here = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        Ok(Visitor {
            identity: identity.filter(|_| token.is_some()),
            token,
            here,
            notice,
        })
    }
}

/// A signed-in visitor; anyone else is sent to sign in and brought back.
pub struct Shopper(pub Visitor);

impl Shopper {
    pub fn identity(&self) -> &Identity {
        self.0.identity.as_ref().expect("a shopper is signed in")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Shopper {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(visitor) = Visitor::from_request_parts(parts, state).await;
        if visitor.identity.is_none() {
            return Err(PageError::sign_in(&visitor.here));
        }
        Ok(Shopper(visitor))
    }
}

/// What the layout shows around every page.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub user_name: Option<String>,
    pub is_admin: bool,
    /// When the session started, milliseconds since the Unix epoch.
    pub session_started_at: Option<i64>,
    /// The notice carried over a redirect: news, or a refusal shown as an error.
    pub notice: Option<Notice>,
    pub asset_version: &'static str,
}

impl Chrome {
    /// "started 3 min ago", as first drawn; the page's script keeps it current.
    pub fn session_age(&self) -> String {
        match self.session_started_at {
            Some(start) => format!(
                "started {} ago",
                super::views::duration_text(crate::db::now_ms() - start)
            ),
            None => String::new(),
        }
    }

    pub fn started_ms(&self) -> i64 {
        self.session_started_at.unwrap_or(0)
    }
}
