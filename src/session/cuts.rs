//! The sessions being cut, so that the work after a cut waits for the cuts of the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Sessions being cut whose client socket is not closed yet. A session's end record (final
/// digests, `session.json`, the store and the audit event) is file work with fsyncs; it waits
/// until no cut is pending (at most [`CUTS_FIRST_MAX`](super::CUTS_FIRST_MAX)), so when a ticket close cuts hundreds
/// of sessions at once the gateway spends its CPU closing their sockets first, and records
/// the ends right after.
#[derive(Default)]
pub(super) struct Cuts {
    pending: AtomicUsize,
    none_pending: Notify,
}

impl Cuts {
    pub(super) fn begin(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn end(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_pending.notify_waiters();
        }
    }

    /// Until no cut is pending, or `max` has passed.
    pub(super) async fn landed(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.none_pending.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}
