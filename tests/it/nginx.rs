//! A real nginx as the HTTPS target, the way an admin console would be set up behind jitgate:
//! its own CA and server certificate (made with `openssl`), `ssl_verify_client on` with
//! `ssl_client_certificate` = the gateway's `certs/ca.pem`, static files, a few scripted
//! answers, and a WebSocket echo service (run here on loopback) proxied under `/ws`.
//!
//! nginx needs the gateway's CA, which `jitgate init` makes, so a test prepares nginx (port,
//! certificates, web root) first, writes the gateway's config with [`Nginx::target_toml`], runs
//! `init`, then [`Nginx::start`]s nginx and finally `serve`s the gateway.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

/// The page nginx serves at `/`.
pub const HOME: &str = "jitgate-it console home\n";

/// What `POST /users/<name>/unlock` (any method under `/users/`) answers.
pub const UNLOCKED: &str = "unlocked\n";

/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The access log: what the target saw of each request, jitgate's headers included, and the
/// credentials the gateway must have stripped (`auth`, `cookie`).
const LOG_FORMAT: &str = "'$request_method $request_uri $status bytes=$body_bytes_sent \
dn=\"$ssl_client_s_dn\" serial=$ssl_client_serial auth=\"$http_authorization\" \
cookie=\"$http_cookie\" user=\"$http_x_jitgate_user\" grant=\"$http_x_jitgate_grant\" \
ticket=\"$http_x_jitgate_ticket\" xff=\"$http_x_forwarded_for\" \
xproto=\"$http_x_forwarded_proto\" xhost=\"$http_x_forwarded_host\"'";

/// Next port to try: below the kernel's ephemeral range (32768+), so no socket bound to port 0
/// elsewhere can take it between choosing it and nginx binding it.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn pick_port() -> u16 {
    let _ = NEXT_PORT.compare_exchange(
        0,
        20_000 + (std::process::id() % 500) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let p = 20_000 + (p - 20_000) % 12_000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// Run `openssl args`; panics with its stderr unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One nginx in its own temp directory.
pub struct Nginx {
    dir: tempfile::TempDir,
    pub port: u16,
    echo: Echo,
    /// Accepts connections and never answers: `/stall` proxies to it.
    silent: std::net::TcpListener,
    child: Option<Child>,
}

impl Nginx {
    /// Choose a port, make the console CA and a server certificate for 127.0.0.1, the web root
    /// and the echo service; nginx itself starts with [`Nginx::start`].
    pub fn prepare() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jitgate-it-nginx-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "console-ca.key",
            "-out",
            "console-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=jitgate-it console CA",
        ]);
        openssl(root, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(root, &csr);
        fs::write(
            root.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
             basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .expect("write server.ext");
        openssl(
            root,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "console-ca.pem",
                "-CAkey",
                "console-ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        for d in ["www", "tmp"] {
            fs::create_dir_all(root.join(d)).expect("nginx dirs");
        }
        fs::write(root.join("www/index.html"), HOME).expect("index.html");
        Self {
            dir,
            port: pick_port(),
            echo: Echo::start(),
            silent: std::net::TcpListener::bind("127.0.0.1:0").expect("bind the silent service"),
            child: None,
        }
    }

    /// Start nginx demanding client certificates from `client_ca` (the gateway's `ca.pem`).
    pub fn start(&mut self, client_ca: &Path) {
        assert!(self.child.is_none(), "nginx is already running");
        let root = self.dir.path().to_path_buf();
        let p = |rel: &str| root.join(rel).display().to_string();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\n\
             error_log {err} info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  log_format it {LOG_FORMAT};\n  access_log {access} it;\n\
             default_type application/octet-stream;\n\
             client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
             fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
             ssl_client_certificate {client_ca};\n    ssl_verify_client on;\n    root {www};\n\
             location / {{ add_header X-Client-DN $ssl_client_s_dn always; \
             add_header X-Client-Cert $ssl_client_escaped_cert always; }}\n\
             location /slow/ {{ limit_rate 1m; }}\n\
             location /users/ {{ default_type text/plain; return 200 \"{unlocked}\"; }}\n\
             location = /moved {{ return 302 https://127.0.0.1:{port}/landing?from=moved; }}\n\
             location = /set-cookie {{ add_header Set-Cookie \"console_sid=s3; Domain=127.0.0.1; Path=/; Secure; HttpOnly\"; \
             default_type text/plain; return 200 \"cookie set\\n\"; }}\n\
             location /stall {{ proxy_pass http://127.0.0.1:{silent}; proxy_read_timeout 300s; }}\n\
             location /ws {{ proxy_pass http://127.0.0.1:{echo}; proxy_http_version 1.1; \
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; }}\n\
             }}\n}}\n",
            pid = p("nginx.pid"),
            err = p("error.log"),
            access = p("access.log"),
            tmp = p("tmp"),
            port = self.port,
            cert = p("server.pem"),
            key = p("server.key"),
            client_ca = client_ca.display(),
            www = p("www"),
            unlocked = UNLOCKED.replace('\n', "\\n"),
            echo = self.echo.port,
            silent = self.silent.local_addr().expect("silent address").port(),
        );
        let conf_path = root.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let bin = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(&root)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (install the Debian package nginx)");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited ({status}); its log:\n{}", self.error_log());
            }
            // The pid file is written once the listening socket is bound.
            if root.join("nginx.pid").exists()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nginx did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// A path inside nginx's temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The CA that signed nginx's server certificate (the target's `server_ca`).
    pub fn server_ca(&self) -> PathBuf {
        self.path("console-ca.pem")
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A `[[targets]]` entry for this nginx.
    pub fn target_toml(&self, name: &str) -> String {
        format!(
            "[[targets]]\nname = \"{name}\"\nkind = \"https\"\nurl = \"{}\"\nserver_ca = \"{}\"\n",
            self.url(),
            self.server_ca().display()
        )
    }

    /// nginx's access log (format [`LOG_FORMAT`]).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.path("access.log")).unwrap_or_default()
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    /// Serve `mib` MiB of deterministic bytes at `/<name>` (under `/slow/`: at 1 MB/s);
    /// returns their hex SHA-256.
    pub fn write_blob(&self, name: &str, mib: usize) -> String {
        let path = self.path("www").join(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("blob folder");
        }
        let file = fs::File::create(&path).expect("create blob");
        let mut w = std::io::BufWriter::new(file);
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        for i in 0..mib {
            block[..8].copy_from_slice(&(i as u64).to_le_bytes());
            digest.update(&block);
            w.write_all(&block).expect("write blob");
        }
        w.flush().expect("flush blob");
        hex::encode(digest.finish().as_ref())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.echo.stop();
    }
}

/// Hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    hex::encode(digest.finish().as_ref())
}

/// A WebSocket echo service on loopback (RFC 6455, plain TCP: nginx terminates TLS).
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the echo service");
        let port = l.local_addr().expect("echo address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    std::thread::spawn(move || {
                        let _ = echo(c);
                    });
                }
            }
        });
        Self { port, stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The value of `Sec-WebSocket-Accept` for `key`.
pub fn ws_accept(key: &str) -> String {
    let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    d.update(key.trim().as_bytes());
    d.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(d.finish().as_ref())
}

/// Serve one WebSocket connection: echo data frames, answer pings, return on close.
fn echo(conn: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut key = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("sec-websocket-key")
        {
            key = Some(v.trim().to_string());
        }
    }
    let Some(key) = key else {
        w.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    write!(
        w,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws_accept(&key)
    )?;
    loop {
        let (opcode, payload) = read_frame(&mut r)?;
        match opcode {
            0x8 => {
                write_frame(&mut w, 0x8, &payload, false)?;
                return Ok(());
            }
            0x9 => write_frame(&mut w, 0xA, &payload, false)?,
            0xA => {}
            op => write_frame(&mut w, op, &payload, false)?,
        }
    }
}

/// Read one WebSocket frame (unmasking it if masked): `(opcode, payload)`.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Write one final WebSocket frame; clients mask (RFC 6455 §5.3), servers do not.
pub fn write_frame(
    w: &mut impl Write,
    opcode: u8,
    payload: &[u8],
    mask: bool,
) -> std::io::Result<()> {
    let mut f = vec![0x80 | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x5a, 0x17, 0xc3, 0x9e];
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    w.write_all(&f)?;
    w.flush()
}
