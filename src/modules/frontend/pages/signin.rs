//! Sign-in (dev mode: a name, an email and a role) and sign-out. The session's token lives
//! in an HttpOnly, SameSite cookie that scripts cannot read.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{field_of, local_path, render, see_other, FormError, PageError, PageResult};
use crate::gateway::auth::SESSION_COOKIE;
use crate::modules::frontend::visitor::{Chrome, Visitor};
use crate::modules::frontend::Frontend;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SignInForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub role: String,
    #[serde(default, skip_serializing)]
    pub next: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    chrome: Chrome,
    form: SignInForm,
    error: FormError,
}

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

pub async fn sign_in_page(
    State(fe): State<Frontend>,
    visitor: Visitor,
    Query(next): Query<Next>,
) -> PageResult {
    if fe.oidc {
        return Ok(provider_sign_in(next.next.as_deref()));
    }
    let form = SignInForm {
        role: "customer".into(),
        next: local_path(next.next.as_deref()),
        ..SignInForm::default()
    };
    render(
        StatusCode::OK,
        &SignInPage {
            chrome: visitor.chrome(),
            form,
            error: FormError::default(),
        },
    )
}

/// With OIDC, signing in happens at the provider: off to `/auth/login`, back to `next`.
fn provider_sign_in(next: Option<&str>) -> axum::response::Response {
    let next = local_path(next);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", &next)
        .finish();
    see_other(&format!("/auth/login?{query}")).into_response()
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    expires_in: i64,
}

pub async fn sign_in(
    State(fe): State<Frontend>,
    visitor: Visitor,
    jar: CookieJar,
    Form(form): Form<SignInForm>,
) -> PageResult {
    if fe.oidc {
        return Ok(provider_sign_in(Some(&form.next)));
    }
    let role = if form.role == "admin" {
        "admin"
    } else {
        "customer"
    };
    let body = serde_json::json!({ "name": form.name, "email": form.email, "role": role });
    let token: Result<Token, _> = fe
        .api
        .json(None, Method::POST, "/auth/dev/token", Some(&body))
        .await;
    match token {
        Ok(token) => {
            // A new session at every sign-in; the one this browser had ends (session ids
            // never carry over a sign-in).
            end_session(&fe, &visitor).await;
            let cookie = Cookie::build((SESSION_COOKIE, token.access_token))
                .path("/")
                .http_only(true)
                .same_site(SameSite::Lax)
                .secure(fe.https)
                .max_age(time::Duration::seconds(token.expires_in))
                .build();
            let next = local_path(Some(&form.next));
            Ok((jar.add(cookie), see_other(&next)).into_response())
        }
        Err(p) if p.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let field = field_of(&p.detail, &[("name", "name"), ("email", "email")]);
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &SignInPage {
                    chrome: visitor.chrome(),
                    form,
                    error: FormError::new(field, p.detail),
                },
            )
        }
        Err(p) if p.status == StatusCode::NOT_FOUND => render(
            StatusCode::SERVICE_UNAVAILABLE,
            &SignInPage {
                chrome: visitor.chrome(),
                form,
                error: FormError::new(None, "sign-in is not available on this shop yet"),
            },
        ),
        Err(p) => Err(PageError::problem(p, visitor.chrome(), &visitor.here)),
    }
}

/// Ends the visitor's session, if they have one. Whatever the API says, the caller goes on:
/// a shopper must always be able to sign out (their cookie goes) or in again.
async fn end_session(fe: &Frontend, visitor: &Visitor) {
    if visitor.token.is_some() {
        let _ = fe
            .api
            .send(
                visitor.token(),
                Method::POST,
                "/auth/signout",
                None::<&Value>,
                &[],
            )
            .await;
    }
}

/// Ends the session (its journey ends here) and forgets the cookie. Signed in through OIDC,
/// the user module's `POST /auth/logout` does that and ends the provider's session too: a 307
/// sends the browser there with the same POST (from the same page, so the door's same-origin
/// check holds).
pub async fn sign_out(State(fe): State<Frontend>, visitor: Visitor, jar: CookieJar) -> PageResult {
    if fe.oidc {
        return Ok(Redirect::temporary("/auth/logout").into_response());
    }
    end_session(&fe, &visitor).await;
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    Ok((jar, fe.see_other_with("/", "You are signed out")).into_response())
}
