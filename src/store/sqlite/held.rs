//! What sign-ins hold between two requests (`Store::put_held`, `Store::take_held`) in SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::db;
use crate::store::StoreError;
use crate::types::UnixTime;

/// Hold `value` unless `max` of `kind` are held; values expired for a minute go first.
pub(super) fn put(
    c: &mut Connection,
    kind: &str,
    key: &str,
    value: &str,
    expires_at: UnixTime,
    max: usize,
) -> Result<bool, StoreError> {
    let tx = c.transaction().map_err(db)?;
    tx.execute(
        "DELETE FROM held WHERE expires_at < ?1",
        params![crate::types::now() - 60],
    )
    .map_err(db)?;
    let n: i64 = tx
        .query_row(
            "SELECT count(*) FROM held WHERE kind = ?1",
            params![kind],
            |r| r.get(0),
        )
        .map_err(db)?;
    if n as usize >= max {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO held (kind, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![kind, key, value, expires_at],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(true)
}

/// Take (delete and return) what `(kind, key)` holds.
pub(super) fn take(
    c: &mut Connection,
    kind: &str,
    key: &str,
) -> Result<Option<String>, StoreError> {
    c.query_row(
        "DELETE FROM held WHERE kind = ?1 AND key = ?2 RETURNING value",
        params![kind, key],
        |r| r.get(0),
    )
    .optional()
    .map_err(db)
}
