//! The storefront's pages. Every page works with JavaScript off: forms post, the server
//! answers with a redirect (303) or the same page with the error next to its field.

pub mod admin;
pub mod cart;
pub mod catalog;
pub mod journeys;
pub mod orders;
pub mod signin;

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::api::Problem;
use super::visitor::Chrome;

/// Why a page could not be shown as asked.
pub enum PageError {
    /// Go there instead (sign in first, say).
    Redirect(String),
    /// Show this page with this status.
    Page(StatusCode, String),
}

impl PageError {
    pub fn sign_in(next: &str) -> PageError {
        PageError::Redirect(format!("/signin?next={}", encode(next)))
    }

    /// An API problem the page cannot put next to a field: an error page in plain words, or
    /// the sign-in page when the session has expired.
    pub fn problem(problem: Problem, chrome: Chrome, here: &str) -> PageError {
        if problem.status == StatusCode::UNAUTHORIZED {
            return PageError::sign_in(here);
        }
        if problem.status.is_server_error() {
            tracing::error!(detail = ?problem.detail, "a page's API call failed");
        }
        let page = ErrorPage {
            chrome,
            status: problem.status.as_u16(),
            title: problem.title,
            detail: problem.detail,
        };
        match page.render() {
            Ok(html) => PageError::Page(problem.status, html),
            Err(err) => PageError::Page(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Redirect(to) => see_other(&to),
            PageError::Page(status, html) => (status, Html(html)).into_response(),
        }
    }
}

pub type PageResult = Result<Response, PageError>;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    title: String,
    detail: String,
}

/// Renders a page with a status.
pub fn render(status: StatusCode, page: &impl Template) -> PageResult {
    match page.render() {
        Ok(html) => Ok((status, Html(html)).into_response()),
        Err(err) => {
            tracing::error!(error = %err, "a template failed to render");
            Err(PageError::Page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page could not be drawn".into(),
            ))
        }
    }
}

/// Renders a page with 200.
pub fn ok(page: &impl Template) -> PageResult {
    render(StatusCode::OK, page)
}

/// `303 See Other`: after a form post, the browser fetches the next page with GET.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub use crate::gateway::security::local_path;

/// Which form field an API error is about, judged by the words of its detail; None puts it
/// at the top of the form.
pub fn field_of(detail: &str, fields: &[(&str, &'static str)]) -> Option<&'static str> {
    fields
        .iter()
        .find(|(word, _)| detail.contains(word))
        .map(|(_, field)| *field)
}

/// A form's errors: each with the field it belongs to (None: the whole form) and what to say;
/// a form shows every one of them at once.
#[derive(Debug, Clone, Default)]
pub struct FormError {
    errors: Vec<(Option<&'static str>, String)>,
}

impl FormError {
    pub fn new(field: Option<&'static str>, message: impl Into<String>) -> FormError {
        FormError {
            errors: vec![(field, message.into())],
        }
    }

    /// One more error.
    pub fn push(&mut self, field: Option<&'static str>, message: impl Into<String>) {
        self.errors.push((field, message.into()));
    }

    /// The message for `field`, if it has one.
    pub fn at(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == Some(field))
            .map(|(_, message)| message.as_str())
    }

    /// The message if it belongs to no field.
    pub fn general(&self) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, message)| f.is_none() && !message.is_empty())
            .map(|(_, message)| message.as_str())
    }
}
