//! The few pages the HTTPS gateway serves itself: the login form and refusals that say why.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{RespBody, full};
use crate::config::TaskConfig;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{t} — jitgate</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
h1{{font-size:1.4rem}}input[type=password]{{width:100%;font:inherit;padding:.4rem}}button{{font:inherit;padding:.4rem 1rem;margin-top:.6rem}}\
.why{{background:#fee;border-left:4px solid #c33;padding:.5rem .8rem}}code{{background:#eee;padding:0 .2rem}}</style></head><body>{body}</body></html>",
        t = esc(title)
    )
}

/// After "Open console": move on to the target's start page (a same-site navigation, so the
/// session cookie goes with it).
pub fn continue_page() -> String {
    page(
        "Opening the console",
        "<meta http-equiv=\"refresh\" content=\"0;url=/\"><h1>jitgate</h1><p>Opening the console… <a id=\"continue\" href=\"/\">Continue</a></p>",
    )
}

/// The login form, with a message when there is one (why the last attempt failed, or that
/// the browser logged out).
pub fn login_form(message: Option<&str>) -> Response<RespBody> {
    let msg = message
        .map(|m| format!("<p class=\"why\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>jitgate</h1>{msg}<form method=\"post\" action=\"/_jitgate/login\">\
<label for=\"token\">Grant token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" \
placeholder=\"jgt_…\" required autofocus><input type=\"hidden\" name=\"next\" value=\"/\"><button type=\"submit\">Open console</button></form>\
<p>Fetch the token with <code>jitgate token REQUEST</code>. It is checked once; the browser keeps only a random session handle.</p>"
    );
    let mut r = full(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page("Log in", &body),
    );
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    r
}

/// A refusal: HTML for browsers, plain text otherwise.
pub fn refused(status: StatusCode, why: &str, task: Option<&TaskConfig>) -> Response<RespBody> {
    let allowed = task
        .map(|t| {
            let rules: Vec<String> = t
                .http_allow
                .iter()
                .map(|r| format!("<li><code>{}</code></li>", esc(r)))
                .collect();
            format!(
                "<p>Task <code>{}</code> allows:</p><ul>{}</ul>",
                esc(t.name.as_str()),
                rules.join("")
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>jitgate refused this request</h1><p class=\"why\">{}</p>{allowed}",
        esc(why)
    );
    let mut r = full(status, "text/html; charset=utf-8", page("Refused", &body));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "jitgate: {}",
        why.chars()
            .filter(|c| c.is_ascii() && !c.is_control())
            .take(300)
            .collect::<String>()
    )) {
        r.headers_mut().insert("x-jitgate-refused", v);
    }
    r
}

/// No credential: browsers go to the login page, other clients get 401 saying what to send.
pub fn login_needed(req: &Request<Incoming>, why: &str) -> Response<RespBody> {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        let mut r = full(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            String::new(),
        );
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_static("/_jitgate/login"),
        );
        return r;
    }
    let mut r = full(
        StatusCode::UNAUTHORIZED,
        "text/plain; charset=utf-8",
        format!(
            "jitgate: {why}; send Authorization: Bearer jgt_... (from `jitgate token REQUEST`) or log in at /_jitgate/login\n"
        ),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"jitgate\""),
    );
    r
}
