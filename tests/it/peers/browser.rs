//! The browser peer: `tests/peers/browser.mjs` drives Debian's headless Chromium through
//! playwright-core, one JSON line per command. Started once per run of the test binary and shared
//! by every test thread: each request has its own id, and one reader thread hands each answer to
//! the caller waiting for that id.
//!
//! Contexts ignore certificate errors, so the gateway's and the IdP's throwaway CAs need no
//! trusting; Chromium still treats those pages as secure and keeps `Secure` and `__Host-`
//! cookies. Cookies are per host, not per port: the IdP and a gateway, both on 127.0.0.1, see
//! each other's cookies.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{log_tail, start_node};

/// How long Chromium may take to launch (about a second here).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The driver's own limit for one command, unless the command says `timeout_ms`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How much longer than a command's own limit to wait for its answer before calling the driver
/// stuck.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);

static BROWSER: OnceLock<Browser> = OnceLock::new();

/// The run's browser driver, started on first use.
pub fn browser() -> &'static Browser {
    BROWSER.get_or_init(Browser::start)
}

type Answer = Result<Value, String>;

#[derive(Default)]
struct Waiting {
    /// The callers waiting for an answer, by request id.
    by_id: HashMap<u64, mpsc::Sender<Answer>>,
    /// Set once the driver's stdout ended: why no answer will come.
    gone: Option<String>,
}

/// A running `browser.mjs`. Never dropped (it lives in a static): the driver closes Chromium and
/// exits when the test binary does, because its stdin, held here, closes then.
pub struct Browser {
    stdin: Mutex<ChildStdin>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl Browser {
    fn start() -> Self {
        assert!(
            Path::new("/usr/bin/chromium").exists(),
            "the browser tests need Debian's chromium (/usr/bin/chromium): \
             apt-get install --no-install-recommends chromium (scripts/test.sh does)"
        );
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-browser-")
            .tempdir()
            .expect("temp dir for the browser driver");
        let log = dir.path().join("browser.log");
        let node = start_node("browser.mjs", &[], dir.path(), &log, START_TIMEOUT);
        assert_eq!(
            node.ready,
            json!({"ready": true}),
            "browser.mjs: unexpected ready line"
        );
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let reader_waiting = Arc::clone(&waiting);
        let mut stdout = node.stdout;
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("peers: browser.mjs wrote a line that is not JSON: {line}");
                    continue;
                };
                let Some(id) = msg["id"].as_u64() else {
                    eprintln!("peers: browser.mjs answered without an id: {line}");
                    continue;
                };
                let answer = if msg["ok"] == Value::Bool(true) {
                    Ok(msg["result"].clone())
                } else {
                    Err(msg["error"].as_str().unwrap_or("(no message)").to_string())
                };
                let tx = reader_waiting.lock().unwrap().by_id.remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(answer);
                }
            }
            // Dropping the senders wakes every caller still waiting.
            let mut w = reader_waiting.lock().unwrap();
            w.gone = Some("the browser driver exited".to_string());
            w.by_id.clear();
        });
        eprintln!("peers: Chromium is up ({:?} to start)", started.elapsed());
        Browser {
            stdin: Mutex::new(node.stdin),
            waiting,
            next_id: AtomicU64::new(1),
            log,
            _dir: dir,
            _child: node.child,
        }
    }

    /// What the driver and Chromium wrote on stderr so far.
    #[allow(dead_code, reason = "for a failing test to show")]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new browser context (its own cookies and storage), closed when dropped.
    pub fn context(&'static self) -> Context {
        let id = self
            .try_cmd("newContext", json!({}))
            .unwrap_or_else(|e| panic!("browser newContext: {e}"));
        Context {
            browser: self,
            id: id.as_str().expect("a context id").to_string(),
        }
    }

    /// Send one command (`args` is an object: the command's fields, and optionally `timeout_ms`)
    /// and wait for its answer: the result, or the driver's error message.
    pub fn try_cmd(&self, cmd: &str, args: Value) -> Result<Value, String> {
        let mut msg = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("{cmd}: arguments must be an object, not {other}")),
        };
        let limit = msg
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        msg.insert("id".into(), id.into());
        msg.insert("cmd".into(), cmd.into());
        let (tx, rx) = mpsc::channel();
        {
            let mut w = self.waiting.lock().unwrap();
            if let Some(why) = &w.gone {
                return Err(format!("{cmd}: {why}; its log:\n{}", log_tail(&self.log)));
            }
            w.by_id.insert(id, tx);
        }
        let line = format!("{}\n", Value::Object(msg));
        let sent = {
            let mut stdin = self.stdin.lock().unwrap();
            stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
        };
        if let Err(e) = sent {
            self.waiting.lock().unwrap().by_id.remove(&id);
            return Err(format!("{cmd}: writing to the browser driver: {e}"));
        }
        match rx.recv_timeout(limit + ANSWER_MARGIN) {
            Ok(answer) => answer.map_err(|e| format!("{cmd}: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.waiting.lock().unwrap().by_id.remove(&id);
                Err(format!(
                    "{cmd}: no answer from the browser driver within {:?}; its log:\n{}",
                    limit + ANSWER_MARGIN,
                    log_tail(&self.log)
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "{cmd}: the browser driver exited; its log:\n{}",
                log_tail(&self.log)
            )),
        }
    }
}

/// A browser context: its own cookie jar. Closed (with its pages) when dropped.
pub struct Context {
    browser: &'static Browser,
    id: String,
}

impl Context {
    /// The driver's id for this context.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new tab in this context.
    pub fn page(&self) -> Page {
        let id = self
            .try_cmd("newPage", json!({}))
            .unwrap_or_else(|e| panic!("browser newPage: {e}"));
        Page {
            browser: self.browser,
            id: id.as_str().expect("a page id").to_string(),
        }
    }

    /// The context's cookies, as Playwright gives them: objects with name, value, domain, path,
    /// expires (-1 for a session cookie), httpOnly, secure, sameSite.
    pub fn cookies(&self) -> Vec<Value> {
        match self.try_cmd("cookies", json!({})) {
            Ok(Value::Array(cookies)) => cookies,
            Ok(other) => panic!("browser cookies: not an array: {other}"),
            Err(e) => panic!("browser cookies: {e}"),
        }
    }

    /// The cookie named `name`, if the context has one (the first, when several paths do).
    pub fn cookie(&self, name: &str) -> Option<Value> {
        self.cookies().into_iter().find(|c| c["name"] == name)
    }

    /// Add cookies (Playwright's shape: name, value, and url or domain+path; optionally
    /// expires, httpOnly, secure, sameSite).
    pub fn add_cookies(&self, cookies: Value) {
        self.try_cmd("addCookies", json!({ "cookies": cookies }))
            .unwrap_or_else(|e| panic!("browser addCookies: {e}"));
    }

    /// Any command about this context (`ctx` is filled in).
    pub fn try_cmd(&self, cmd: &str, mut args: Value) -> Result<Value, String> {
        args["ctx"] = self.id.clone().into();
        self.browser.try_cmd(cmd, args)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = self
            .browser
            .try_cmd("closeContext", json!({ "ctx": self.id }));
    }
}

/// A tab. Its commands fail once its context is closed.
pub struct Page {
    browser: &'static Browser,
    id: String,
}

impl Page {
    /// Any command about this page (`page` is filled in); the error is the driver's message.
    pub fn try_cmd(&self, cmd: &str, mut args: Value) -> Result<Value, String> {
        args["page"] = self.id.clone().into();
        self.browser.try_cmd(cmd, args)
    }

    /// [`Page::try_cmd`], panicking on an error with where the page is.
    fn must(&self, cmd: &str, args: Value) -> Value {
        let shown = args.to_string();
        self.try_cmd(cmd, args).unwrap_or_else(|e| {
            let at = self.try_cmd("url", json!({})).unwrap_or_default();
            panic!("browser {shown}: {e}\n(the page is at {at})")
        })
    }

    /// Navigate and wait for the load; the status of the final response (after redirects), or
    /// an error (a network error, or the timeout).
    pub fn try_goto(&self, url: &str) -> Result<Option<u16>, String> {
        let r = self.try_cmd("goto", json!({ "url": url }))?;
        Ok(r["status"].as_u64().map(|s| s as u16))
    }

    /// Navigate and wait for the load; the final response's status (None when there was none).
    pub fn goto(&self, url: &str) -> Option<u16> {
        let r = self.must("goto", json!({ "url": url }));
        r["status"].as_u64().map(|s| s as u16)
    }

    /// Type `value` into the field `selector` (replacing what it holds).
    pub fn fill(&self, selector: &str, value: &str) {
        self.must("fill", json!({ "selector": selector, "value": value }));
    }

    /// Click `selector`; when that starts a navigation, wait until it loaded. Returns the URL
    /// after, or the driver's error.
    #[allow(dead_code, reason = "for tests that expect a click to fail")]
    pub fn try_click(&self, selector: &str) -> Result<String, String> {
        let r = self.try_cmd("click", json!({ "selector": selector }))?;
        Ok(r["url"].as_str().unwrap_or_default().to_string())
    }

    /// Click `selector` (see [`Page::try_click`]); the URL after.
    pub fn click(&self, selector: &str) -> String {
        let r = self.must("click", json!({ "selector": selector }));
        r["url"].as_str().unwrap_or_default().to_string()
    }

    /// Wait until the text of `selector` contains `want` (the page may still be changing).
    pub fn wait_until_text(&self, selector: &str, want: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self
                .try_cmd("text", json!({ "selector": selector, "timeout_ms": 1000 }))
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if got.contains(want) {
                return got;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{selector} never contained {want:?} within {timeout:?}; it says {got:?} (the page is at {})",
                    self.url()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Wait until `expression` evaluates to `true`.
    pub fn wait_until_eval(&self, expression: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.try_eval(expression).ok() != Some(Value::Bool(true)) {
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{expression} never became true within {timeout:?} (the page is at {})",
                    self.url()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Every main-frame navigation this page made, redirects included, oldest first.
    pub fn navigations(&self) -> Vec<String> {
        self.must("navigations", json!({}))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        let r = self.must("url", json!({}));
        r.as_str().unwrap_or_default().to_string()
    }

    /// The innerText of the first element matching `selector` (waits for it, up to 20 s).
    pub fn text(&self, selector: &str) -> String {
        let r = self.must("text", json!({ "selector": selector }));
        r.as_str().unwrap_or_default().to_string()
    }

    /// The page's HTML as the DOM now has it.
    pub fn content(&self) -> String {
        let r = self.must("content", json!({}));
        r.as_str().unwrap_or_default().to_string()
    }

    /// A full-page PNG at `path`.
    pub fn screenshot(&self, path: &Path) {
        self.must("screenshot", json!({ "path": path }));
    }

    /// Evaluate a JavaScript expression in the page; a function (`async () => { ... }`) is
    /// called; a promise is awaited. The JSON of the value (undefined is null), or the error.
    pub fn try_eval(&self, expression: &str) -> Result<Value, String> {
        self.try_cmd("eval", json!({ "expression": expression }))
    }

    /// [`Page::try_eval`], panicking on an error.
    pub fn eval(&self, expression: &str) -> Value {
        self.must("eval", json!({ "expression": expression }))
    }

    /// Wait until the page's URL starts with `prefix` (and that page loaded); the URL, or an
    /// error naming where the page is.
    pub fn try_wait_url(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let r = self.try_cmd(
            "waitForUrl",
            json!({ "prefix": prefix, "timeout_ms": timeout.as_millis() as u64 }),
        )?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// [`Page::try_wait_url`], panicking on a timeout.
    pub fn wait_url(&self, prefix: &str, timeout: Duration) -> String {
        self.try_wait_url(prefix, timeout)
            .unwrap_or_else(|e| panic!("browser waitForUrl {prefix}: {e}"))
    }
}
