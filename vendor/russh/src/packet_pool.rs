//! Read buffers for received packets, reused across connections (a jitgate edit, see
//! `vendor/README.md`).
//!
//! Each received packet is read into a buffer of its own, which becomes the packet's `Bytes`
//! (edit 10). Freed one by one as the data leaves the gateway, a bulk transfer's buffers made
//! the allocator hand memory back to the kernel and take it again: page faults, each a zeroed
//! page, three to four per 32 KiB packet. Buffers of one common size (room for a full 32 KiB channel
//! packet) are kept here instead, up to [`KEEP`] of them for the whole process, and handed out
//! again; other sizes are allocated and freed as usual. An idle connection holds none.

use std::sync::Mutex;

use bytes::Bytes;

/// The pooled size: a 32 KiB channel packet with its headers, padding and tag.
pub(crate) const POOLED: usize = 32 * 1024 + 256;
/// Pooled buffers kept at most (about 2 MiB).
const KEEP: usize = 64;
/// Packets smaller than this are allocated at their size.
const SMALLEST: usize = 4 * 1024;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes: a pooled one when `len` fits its size.
pub(crate) fn buffer(len: usize) -> Vec<u8> {
    if (SMALLEST..=POOLED).contains(&len) {
        if let Some(v) = FREE.lock().ok().and_then(|mut free| free.pop()) {
            return v;
        }
        return Vec::with_capacity(POOLED);
    }
    Vec::with_capacity(len)
}

/// `v` as `Bytes`; a pooled buffer goes back to the pool once its last slice is dropped.
pub(crate) fn freeze(v: Vec<u8>) -> Bytes {
    if v.capacity() == POOLED {
        Bytes::from_owner(Pooled(v))
    } else {
        Bytes::from(v)
    }
}

/// A pooled buffer lent to a packet's `Bytes`.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        v.clear();
        if let Ok(mut free) = FREE.lock()
            && free.len() < KEEP
        {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_of_the_common_size_get_pooled_buffers_and_others_their_own() {
        let mut v = buffer(POOLED);
        assert!(v.is_empty() && v.capacity() == POOLED);
        v.extend_from_slice(b"packet");
        let whole = freeze(v);
        let part = whole.slice(1..3);
        drop(whole);
        assert_eq!(&part[..], b"ac", "a slice outlives the packet's Bytes");
        drop(part);
        let again = buffer(SMALLEST);
        assert!(again.is_empty() && again.capacity() == POOLED);
        assert_eq!(buffer(SMALLEST - 1).capacity(), SMALLEST - 1);
        assert_eq!(buffer(POOLED + 1).capacity(), POOLED + 1);
        assert_eq!(freeze(vec![1, 2, 3]).as_ref(), &[1, 2, 3]);
    }
}
