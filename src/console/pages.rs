//! The console's HTML: one layout, the signed-in home page, sign-in pages and error pages that
//! say what went wrong and what to do. Every value is escaped; pages load only
//! `/assets/console.css` and run no script.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::https::pages::esc;

/// A whole page of the signed-out console: `title` and `body` (HTML).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with(status, title, "", "", body)
}

/// A page with extra `<head>` content and header content (both HTML).
pub fn page_with(
    status: StatusCode,
    title: &str,
    head: &str,
    header: &str,
    body: &str,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · jitgate</title><link rel=\"stylesheet\" href=\"/assets/console.css\">{head}</head>\
<body><header><a class=\"brand\" href=\"/\">jitgate</a>{header}</header><main>{body}</main></body></html>",
        t = esc(title)
    );
    let mut r = (status, html).into_response();
    secure_headers(r.headers_mut(), &[]);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// `303 See Other` to `to`, with the console's headers.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut(), &[]);
    r
}

/// Headers every console answer carries: no framing, no referrer (callback URLs carry codes;
/// the console's own posts then carry `Origin: null`, and `Sec-Fetch-Site` vouches for them),
/// no caching, and a policy that allows only the console's own style sheet.
pub fn secure_headers(h: &mut HeaderMap, form_targets: &[String]) {
    let mut forms = String::from("'self'");
    for t in form_targets {
        // Origins only: scheme://host[:port], nothing that could end the directive.
        if t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
        {
            forms.push(' ');
            forms.push_str(t);
        }
    }
    let csp = format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action {forms}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An error page: what went wrong and what to do.
pub fn error(status: StatusCode, title: &str, why: &str, next: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<div class=\"card\"><h1>{}</h1><p class=\"why\" id=\"why\">{}</p><p>{next}</p></div>",
            esc(title),
            esc(why)
        ),
    )
}

/// Without an identity provider: how people sign in here.
pub fn no_provider(signed_out: bool) -> Response {
    let note = if signed_out {
        "<p id=\"signed-out\">You are signed out.</p>"
    } else {
        ""
    };
    page(
        StatusCode::OK,
        "Sign in",
        &format!(
            "<div class=\"card\"><h1>Sign in</h1>{note}<p>This gateway has no identity provider configured, \
so people sign in with a one-time link: an admin makes one with <code>jitgate sign-in-link USER</code> \
(<code>jitgate demo</code> prints one for each demo user). Each link works once, for 30 minutes.</p>\
<p class=\"hint\">Admins: configure <code>[oidc]</code> so that people sign in with the company's identity provider.</p></div>"
        ),
    )
}

/// After sign-out where there is no provider page to send the browser to.
pub fn signed_out() -> Response {
    page(
        StatusCode::OK,
        "Signed out",
        "<div class=\"card\"><h1 id=\"signed-out\">You are signed out</h1><p><a class=\"button\" href=\"/login\">Sign in again</a></p></div>",
    )
}

/// The page a sign-in link opens: a button, so that a link scanner fetching the URL does not
/// use the link up.
pub fn link_confirm(token: &str) -> Response {
    page(
        StatusCode::OK,
        "Sign in",
        &format!(
            "<div class=\"card\"><h1>Sign in to jitgate</h1><p>This one-time link signs you in once.</p>\
<form method=\"post\" action=\"/auth/link\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
<button id=\"continue\" type=\"submit\">Continue</button></form></div>",
            esc(token)
        ),
    )
}

/// What `jitgate login`'s browser tab shows after the gateway sent it back to the CLI.
pub fn cli_done_html(ok: bool, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>jitgate login</title></head>\
<body style=\"font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto\"><h1>{}</h1><p>{}</p></body></html>",
        if ok { "Signed in" } else { "Sign-in failed" },
        esc(message)
    )
}
