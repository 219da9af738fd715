//! The signed-in console's frame: who is asking ([`Person`], from the console cookie; anyone
//! else is sent to sign in), the page layout with its navigation by role, and small HTML
//! helpers. Pages are rendered on the server; `/assets/console.js` adds the live parts and
//! sends every action to the API with the session's CSRF token.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;

use super::pages::{page_with, redirect};
use crate::api::AppState;
use crate::api::auth::{CONSOLE_COOKIE, cookie};
use crate::config::{Role, UserConfig};
use crate::https::pages::esc;
use crate::store::{SignIn, SignInKind};

/// A signed-in person looking at a console page.
pub struct Person {
    pub user: UserConfig,
    pub sign_in: SignIn,
    /// The identity provider's origins: "Sign out" continues there.
    form_targets: Vec<String>,
}

impl Person {
    pub fn has(&self, role: Role) -> bool {
        self.user.has_role(role)
    }

    /// Approvers, reviewers and admins see everyone's requests and sessions.
    pub fn sees_all(&self) -> bool {
        crate::grant::can_see_all(&self.user)
    }
}

impl FromRequestParts<AppState> for Person {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let here = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |u| u.0.clone());
        let back = here
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let login = format!(
            "/login?return_to={}",
            crate::identity::http::url_encode(&back)
        );
        let Some(handle) = cookie(&parts.headers, CONSOLE_COOKIE) else {
            return Err(redirect(&login));
        };
        match state
            .identity
            .authenticate(&handle, SignInKind::Browser)
            .await
        {
            Ok(a) => Ok(Person {
                user: a.user,
                sign_in: a.sign_in,
                form_targets: state.identity.provider_origins().await,
            }),
            Err(_) => Err(redirect(&login)),
        }
    }
}

/// One navigation entry: path, label, who sees it.
const NAV: &[(&str, &str, &[Role])] = &[
    ("/", "Home", &[]),
    ("/requests/new", "Request access", &[Role::Technician]),
    ("/approvals", "Approvals", &[Role::Approver]),
    ("/sessions", "Sessions", &[]),
    ("/reviews", "Reviews", &[Role::Reviewer, Role::Admin]),
    ("/audit", "Audit", &[Role::Reviewer, Role::Admin]),
];

/// A signed-in page: navigation for `who`, the CSRF token for console.js, and `body`.
pub fn frame(status: StatusCode, title: &str, who: &Person, here: &str, body: &str) -> Response {
    let nav: String = NAV
        .iter()
        .filter(|(_, _, roles)| roles.is_empty() || roles.iter().any(|r| who.has(*r)))
        .map(|(path, label, _)| {
            let current = if *path == here {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{path}\"{current}>{label}</a>")
        })
        .collect();
    let roles: Vec<&str> = who.user.roles.iter().map(|r| r.as_str()).collect();
    let head = format!(
        "<meta name=\"csrf-token\" content=\"{}\"><script src=\"/assets/console.js\" defer></script>",
        esc(who.sign_in.csrf.as_deref().unwrap_or(""))
    );
    let header = format!(
        "<nav aria-label=\"Console\">{nav}</nav><span class=\"who\"><span id=\"me\">{}</span> <span class=\"hint\">({})</span>\
<form class=\"inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
<button class=\"quiet small\" id=\"sign-out\" type=\"submit\">Sign out</button></form></span>",
        esc(who.user.name.as_str()),
        esc(&roles.join(", ")),
        esc(who.sign_in.csrf.as_deref().unwrap_or(""))
    );
    let mut r = page_with(status, title, &head, &header, body);
    super::pages::secure_headers(r.headers_mut(), &who.form_targets);
    r
}

/// `<dl>` rows from label/HTML pairs (values are already escaped).
pub fn rows(items: &[(&str, String)]) -> String {
    let inner: String = items
        .iter()
        .map(|(k, v)| format!("<dt>{}</dt><dd>{v}</dd>", esc(k)))
        .collect();
    format!("<dl>{inner}</dl>")
}

/// A `<span class="tag">` per item, or "none".
pub fn tags<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "<span class=\"hint\">none</span>".into();
    }
    items
        .iter()
        .map(|i| format!("<span class=\"tag\">{}</span>", esc(i.as_ref())))
        .collect()
}

/// A state as a badge (`state-pending`, `state-approved`, ...).
pub fn badge(state: &str) -> String {
    let cls: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("<span class=\"badge state-{cls}\">{}</span>", esc(state))
}

/// A time for people (UTC, RFC 3339 without fractions).
pub fn when(t: i64) -> String {
    format!(
        "<time datetime=\"{0}\">{0}</time>",
        crate::types::rfc3339(t)
    )
}

/// A page that says the caller may not see this.
pub fn forbidden(who: &Person, why: &str) -> Response {
    frame(
        StatusCode::FORBIDDEN,
        "Not allowed",
        who,
        "",
        &format!(
            "<div class=\"card\"><h1>Not allowed</h1><p class=\"why\" id=\"why\">{}</p></div>",
            esc(why)
        ),
    )
}

/// A page for a failed read (not found, or the store is busy).
pub fn failed(who: &Person, e: crate::grant::GrantError) -> Response {
    let status = crate::api::error::ApiError::from(e);
    frame(
        status.status,
        "Cannot show this",
        who,
        "",
        &format!(
            "<div class=\"card\"><h1>Cannot show this</h1><p class=\"why\" id=\"why\">{}</p></div>",
            esc(&status.message)
        ),
    )
}

/// Percent-encode a query value.
pub fn q(s: &str) -> String {
    crate::identity::http::url_encode(s)
}
