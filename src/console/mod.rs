//! The console on the API listener: sign-in (`/login`, `/auth/callback`, one-time links),
//! sign-out (`/logout`) and the signed-in home page (`/`). The pages call nothing but the
//! same identity service the API authenticates with.

mod layout;
pub mod pages;
mod requests;
mod review;
mod sessions;

use pages::redirect;

use axum::Router;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Deserialize;

use crate::api::AppState;
use crate::api::auth::{CONSOLE_COOKIE, cookie, source};
use crate::https::admission::form_value;
use crate::identity::{Begin, Callback, CliReturn, Finished, loopback_redirect, safe_return};
use crate::store::SignInKind;

/// Ties a sign-in's round trip through the provider to the browser that started it.
const LOGIN_COOKIE: &str = "__Host-jitgate-login";

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");
/// asciinema-player, from web/dist (built from web/package-lock.json by scripts/web-assets.sh).
const PLAYER_JS: &[u8] = include_bytes!("../../web/dist/asciinema-player.min.js");
const PLAYER_CSS: &[u8] = include_bytes!("../../web/dist/asciinema-player.css");

/// The console's routes (merged into the API router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(review::home))
        .route("/requests/new", get(requests::new_request))
        .route("/requests/{id}", get(requests::one_request))
        .route("/approvals", get(requests::approvals))
        .route("/sessions", get(sessions::index))
        .route("/sessions/{id}", get(sessions::one))
        .route("/reviews", get(review::reviews))
        .route("/audit", get(review::audit))
        .route("/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/link", get(link_page).post(link_use))
        .route("/logout", post(logout))
        .route(
            "/assets/console.css",
            get(|| asset(CSS.as_bytes(), "text/css; charset=utf-8")),
        )
        .route(
            "/assets/console.js",
            get(|| asset(JS.as_bytes(), "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/asciinema-player.min.js",
            get(|| asset(PLAYER_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/asciinema-player.css",
            get(|| asset(PLAYER_CSS, "text/css; charset=utf-8")),
        )
}

/// An asset embedded in the binary.
async fn asset(bytes: &'static [u8], kind: &'static str) -> Response {
    let mut r = bytes.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn set_cookie(r: &mut Response, name: &str, value: &str, max_age: Option<u64>) {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax{age}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookie(r: &mut Response, name: &str) {
    set_cookie(r, name, "", Some(0));
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    return_to: Option<String>,
    step_up: Option<String>,
    signed_out: Option<String>,
    cli_redirect: Option<String>,
    cli_challenge: Option<String>,
    cli_state: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad_start("the sign-in address has malformed parameters");
    };
    if !state.identity.oidc() {
        return pages::no_provider(q.signed_out.is_some());
    }
    let return_to = q.return_to.unwrap_or_else(|| "/".into());
    if !safe_return(&return_to) {
        return bad_start("return_to must be a path on this console, such as /requests/new");
    }
    let cli = match (q.cli_redirect, q.cli_challenge, q.cli_state) {
        (None, None, None) => None,
        (Some(redirect), Some(challenge), Some(st)) => {
            if !loopback_redirect(&redirect) {
                return bad_start(
                    "cli_redirect must be http://127.0.0.1:PORT/... (jitgate login listens on this machine's loopback only)",
                );
            }
            let b64url = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if challenge.len() != 43
                || !b64url(&challenge)
                || st.is_empty()
                || st.len() > 128
                || !b64url(&st)
            {
                return bad_start(
                    "cli_challenge must be a PKCE S256 challenge and cli_state a short token",
                );
            }
            Some(CliReturn {
                redirect,
                challenge,
                state: st,
            })
        }
        _ => {
            return bad_start(
                "cli_redirect, cli_challenge and cli_state go together; run jitgate login again",
            );
        }
    };
    let begin = Begin {
        return_to,
        cli,
        step_up: q.step_up.is_some(),
    };
    match state.identity.begin(begin).await {
        Ok((url, binding)) => {
            let mut r = redirect(&url);
            set_cookie(&mut r, LOGIN_COOKIE, &binding, Some(600));
            r
        }
        Err(why) => pages::error(
            StatusCode::BAD_GATEWAY,
            "Sign-in is not available",
            &why.0,
            "Try again in a moment. If it keeps failing, an admin should check <code>[oidc] issuer</code> and <code>ca</code> (<code>jitgate check</code>).",
        ),
    }
}

fn bad_start(why: &str) -> Response {
    pages::error(
        StatusCode::BAD_REQUEST,
        "Cannot start sign-in",
        why,
        "<a class=\"button\" href=\"/login\">Sign in</a>",
    )
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(state): State<AppState>, parts: Parts) -> Response {
    let q = Query::<CallbackQuery>::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let cb = Callback {
        code: q.code,
        state: q.state,
        error: q.error,
        error_description: q.error_description,
    };
    let binding = cookie(&parts.headers, LOGIN_COOKIE);
    let previous = cookie(&parts.headers, CONSOLE_COOKIE);
    match state
        .identity
        .finish(cb, binding.as_deref(), source(&parts))
        .await
    {
        Ok(Finished::Browser { handle, return_to }) => {
            // A sign-in replaces the one this browser had.
            if let Some(old) = previous
                && let Ok(a) = state.identity.authenticate(&old, SignInKind::Browser).await
                && let Err(e) = state
                    .identity
                    .sign_out(&a.sign_in, "replaced by a new sign-in")
                    .await
            {
                tracing::error!(error = %e, "cannot end the replaced sign-in");
            }
            let mut r = redirect(&return_to);
            set_cookie(&mut r, CONSOLE_COOKIE, &handle, None);
            clear_cookie(&mut r, LOGIN_COOKIE);
            r
        }
        Ok(Finished::Cli { redirect: to }) => {
            let mut r = redirect(&to);
            clear_cookie(&mut r, LOGIN_COOKIE);
            r
        }
        Err(why) => {
            let mut r = pages::error(
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &why.0,
                "<a class=\"button\" href=\"/login\">Sign in again</a>",
            );
            clear_cookie(&mut r, LOGIN_COOKIE);
            r
        }
    }
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
}

async fn link_page(q: Result<Query<LinkQuery>, QueryRejection>) -> Response {
    match q.ok().and_then(|Query(q)| q.token) {
        Some(t) if t.len() <= 100 => pages::link_confirm(&t),
        _ => pages::error(
            StatusCode::BAD_REQUEST,
            "Not a sign-in link",
            "this address lacks its token",
            "Open the whole link you were given, or ask an admin for a new one.",
        ),
    }
}

/// Whether a form post came from this console's own page.
fn same_origin(parts: &Parts) -> bool {
    crate::api::auth::origin_matches(parts).is_ok()
}

async fn link_use(
    State(state): State<AppState>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&parts) {
        return forbidden_cross_site();
    }
    let token = body
        .ok()
        .and_then(|b| form_value(&b, "token"))
        .unwrap_or_default();
    match state.identity.use_link(&token, source(&parts)).await {
        Ok(handle) => {
            let mut r = redirect("/");
            set_cookie(&mut r, CONSOLE_COOKIE, &handle, None);
            r
        }
        Err(why) => pages::error(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &why.0,
            "Ask an admin for a new link (<code>jitgate sign-in-link USER</code>).",
        ),
    }
}

fn forbidden_cross_site() -> Response {
    pages::error(
        StatusCode::FORBIDDEN,
        "Refused",
        "this form was sent from another site; the console acts only on its own pages",
        "<a class=\"button\" href=\"/\">Go to the console</a>",
    )
}

async fn logout(
    State(state): State<AppState>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !same_origin(&parts) {
        return forbidden_cross_site();
    }
    let Some(handle) = cookie(&parts.headers, CONSOLE_COOKIE) else {
        return pages::signed_out();
    };
    let a = match state
        .identity
        .authenticate(&handle, SignInKind::Browser)
        .await
    {
        Ok(a) => a,
        Err(_) => {
            let mut r = pages::signed_out();
            clear_cookie(&mut r, CONSOLE_COOKIE);
            return r;
        }
    };
    let sent = body
        .ok()
        .and_then(|b| form_value(&b, "csrf_token"))
        .unwrap_or_default();
    let expected = a.sign_in.csrf.as_deref().unwrap_or("");
    if expected.is_empty() || !crate::crypto::ct_eq(sent.as_bytes(), expected.as_bytes()) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Refused",
            "missing or wrong CSRF token",
            "<a class=\"button\" href=\"/\">Reload the console</a> and sign out from there.",
        );
    }
    if let Err(e) = state.identity.sign_out(&a.sign_in, "signed out").await {
        tracing::error!(error = %e, "cannot record a sign-out");
        return pages::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-out failed",
            "the gateway could not record the sign-out",
            "Try again; if it keeps failing, ask an admin.",
        );
    }
    let mut r = match state.identity.end_session_url().await {
        Some(url) => {
            let mut r = redirect(&url);
            pages::secure_headers(r.headers_mut(), &state.identity.provider_origins().await);
            r
        }
        None => pages::signed_out(),
    };
    clear_cookie(&mut r, CONSOLE_COOKIE);
    r
}
