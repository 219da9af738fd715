//! Every wait of the SSH gateway, in one place, with why it has its value.
//!
//! A cut (expiry, revocation, ticket close, kill) must reach the client within about a second:
//! the waits on the cut path, [`NOTICES_WAIT`], then [`PEER_WRITE`] for the client's
//! disconnect, then [`CLIENT_CLOSE_WAIT`], stay well under that even when a peer does not read.
//! The target's disconnect follows the client's close and the other sessions' cuts (at most
//! [`PEER_WRITE`] for each, then [`PEER_WRITE`] for its write). What follows the cut
//! (finishing recordings) is bounded by [`PUMPS_WAIT`] and happens after the client is gone.

use std::time::Duration;

/// Time a client has to send its SSH identification line; then the connection is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// russh's pause after a failed authentication: slows guessing, unnoticed by a person.
pub const AUTH_REJECTION_DELAY: Duration = Duration::from_millis(300);

/// Longest a cut waits on one queued write to a peer (the reason line, a channel close, a
/// disconnect): a peer that does not read must not hold the cut back.
pub const PEER_WRITE: Duration = Duration::from_millis(300);

/// How long the connection task gives its channel pumps to queue their termination notices
/// before it disconnects itself (the last pump usually does it first, one hop sooner).
pub const NOTICES_WAIT: Duration = Duration::from_millis(300);

/// After the disconnect is written, how long the client has to close its side before the
/// socket is cut under it (a client that stopped reading never would).
pub const CLIENT_CLOSE_WAIT: Duration = Duration::from_millis(500);

/// After the socket is cut, or a login timed out, how long russh's connection task gets to
/// finish on its own.
pub const SOCKET_CUT_WAIT: Duration = Duration::from_secs(1);

/// How long the connection waits for its pumps to finish their recordings (final markers,
/// fsync) before it records the session's end anyway.
pub const PUMPS_WAIT: Duration = Duration::from_secs(2);

/// Within [`PUMPS_WAIT`], how long a pump waits for cut markers still being written before it
/// closes its recording.
pub const PENDING_CUTS_WAIT: Duration = Duration::from_millis(500);

/// When the client closes first, how long the target's last output (exit status, close) gets
/// to reach the client.
pub const TARGET_DRAIN: Duration = Duration::from_secs(2);

/// Time allowed to connect, exchange keys and authenticate to a target.
pub const TARGET_CONNECT: Duration = Duration::from_secs(15);

/// Shortest interval between keepalives to a target (a third of `gateway.target_timeout`,
/// but never more often than this).
pub const MIN_KEEPALIVE: Duration = Duration::from_millis(500);

// The pump's wait for pending cut markers happens inside the connection's wait for its pumps.
const _: () = assert!(PENDING_CUTS_WAIT.as_millis() < PUMPS_WAIT.as_millis());
