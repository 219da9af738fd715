//! Every wait of the HTTPS gateway, in one place, with why it has its value.

use std::time::Duration;

/// Time a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a request's headers (HTTP/1.1), against slow-header attacks.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// When the gateway stops, how long a connection gets to finish what is in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// When an idle connection is closed, how long it gets to finish gracefully.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// "Never" for a timer that only runs once stopping begins.
pub const NEVER: Duration = Duration::from_secs(365 * 86400);

/// Time to connect to a target and finish TLS with it.
pub const TARGET_CONNECT: Duration = Duration::from_secs(10);

/// How long a cut session waits for its in-flight exchanges to be logged (their connections are
/// already cut) before its end is recorded.
pub const DRAIN_AFTER_CUT: Duration = Duration::from_secs(1);

/// How long a cut session's ended entry keeps answering "403 and why".
pub const TOMBSTONE: Duration = Duration::from_secs(3600);

/// How often the exchange log's writer wakes to write what is buffered, and how long a request
/// waits for room in it at a time.
pub const LOG_TICK: Duration = Duration::from_millis(200);

/// Longest wait for the exchange log to be on disk before the file is digested.
pub const LOG_FLUSH_WAIT: Duration = Duration::from_secs(5);
