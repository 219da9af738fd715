//! Every wait of the HTTPS gateway, in one place, with why it has its value.
//!
//! When a session is cut, its client connections are reset at once; then the session waits up
//! to [`DRAIN_AFTER_CUT`] for its exchanges to be logged and up to [`LOG_FLUSH_WAIT`] for the
//! log to be on disk before its end is recorded, and its entry answers "403 and why" for
//! [`TOMBSTONE`]. When the gateway stops, a connection gets [`SHUTDOWN_GRACE`], which stays
//! inside the server's own bounded wait for every task.

use std::time::Duration;

/// Time a client has to finish its TLS handshake: a real client needs well under a second, and
/// a socket that stays silent must not hold a connection slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a request's headers (HTTP/1.1), against slow-header attacks; a real
/// client sends them in one go.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// When the gateway stops, how long a connection gets to finish what is in flight: enough for
/// an ordinary request to end, short so that shutdown stays bounded (a long download is cut).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// When an idle connection is closed, how long it gets to finish gracefully: nothing is in
/// flight, so it only has to say goodbye.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// "Never" for a timer that only runs once stopping begins: a year outlasts any connection and
/// stays within what tokio's timer can hold.
pub const NEVER: Duration = Duration::from_secs(365 * 86400);

/// Time a target has to accept the TCP connection, and then again to finish TLS: a reachable
/// target needs far less, and past this the request fails with a 502 that says which step
/// failed (unless `gateway.target_timeout` is shorter and answers 504 first).
pub const TARGET_CONNECT: Duration = Duration::from_secs(10);

/// How long a cut session waits for its in-flight exchanges to be logged (their connections are
/// already cut, so they end at once) before its end is recorded.
pub const DRAIN_AFTER_CUT: Duration = Duration::from_secs(1);

/// How long a cut session's ended entry keeps answering "403 and why": a browser tab left open
/// learns why its session ended, and ended sessions do not pile up for the gateway's life.
pub const TOMBSTONE: Duration = Duration::from_secs(3600);

/// How often the exchange log's writer wakes to write what is buffered, and how long a request
/// waits for room in it at a time: the file stays close behind the session, written in batches.
pub const LOG_TICK: Duration = Duration::from_millis(200);

/// Longest wait for the exchange log to be on disk before the file is digested: a healthy disk
/// needs milliseconds, and a stalled one must not keep the session's end from being recorded.
pub const LOG_FLUSH_WAIT: Duration = Duration::from_secs(5);
