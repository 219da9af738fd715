//! The session index and the ticket list as SQL: every filter is an indexed column compared with
//! a `?` parameter, and pages are keyset pages in the index's order, so a page reads only the
//! rows it returns however many sessions are stored.

use rusqlite::{Connection, params};

use super::{Where, db, limit, to_json};
use crate::store::{SessionFilter, SessionRecord, StoreError, Ticket, TicketFilter};

/// The order of the session index, newest first; `id` breaks ties between equal start times.
const SESSION_ORDER: &str = "ORDER BY started_at DESC, id DESC LIMIT ?";

/// The order of the ticket list, newest updated first.
const TICKET_ORDER: &str = "ORDER BY updated_at DESC, id DESC LIMIT ?";

/// Sessions strictly after `?` (a session id) in [`SESSION_ORDER`]; none when it is unknown.
const AFTER_SESSION: &str =
    "(started_at, id) < (SELECT b.started_at, b.id FROM sessions AS b WHERE b.id = ?)";

/// Write a session with its filter columns (a session's row is rewritten when it ends).
pub(super) fn put_session(c: &Connection, r: &SessionRecord) -> Result<(), StoreError> {
    let break_glass = r.kind == crate::store::RequestKind::BreakGlass;
    c.execute(
        "INSERT INTO sessions (id, user, grant_id, ticket, started_at, ended_at, target, task,
             protocol, end_cause, break_glass, vendor, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(id) DO UPDATE SET user = ?2, grant_id = ?3, ticket = ?4, started_at = ?5,
             ended_at = ?6, target = ?7, task = ?8, protocol = ?9, end_cause = ?10,
             break_glass = ?11, vendor = ?12, data = ?13",
        params![
            r.id.as_str(),
            r.user.as_str(),
            r.grant.as_str(),
            r.ticket.as_str(),
            r.started_at,
            r.ended_at,
            r.target.as_str(),
            r.task.as_str(),
            r.protocol,
            r.end_cause,
            break_glass,
            r.vendor,
            to_json(r)?,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// The sessions `f` selects, one page in [`SESSION_ORDER`].
pub(super) fn sessions(
    c: &Connection,
    f: &SessionFilter,
) -> Result<Vec<SessionRecord>, StoreError> {
    let mut w = Where::default();
    w.add("user = ?", f.user.as_ref().map(|v| v.to_string()));
    w.add("grant_id = ?", f.grant.as_ref().map(|v| v.to_string()));
    w.add("ticket = ?", f.ticket.as_ref().map(|v| v.to_string()));
    w.add("target = ?", f.target.as_ref().map(|v| v.to_string()));
    w.add("task = ?", f.task.as_ref().map(|v| v.to_string()));
    w.add("protocol = ?", f.protocol.clone());
    w.add("end_cause = ?", f.end_cause.clone());
    w.add("vendor = ?", f.vendor_name.clone());
    w.add("started_at >= ?", f.since);
    w.add("started_at < ?", f.until);
    w.add(AFTER_SESSION, f.before.as_ref().map(|v| v.to_string()));
    // Constant clauses, so that the planner can use the partial break-glass index.
    match f.live {
        Some(true) => w.push("ended_at IS NULL"),
        Some(false) => w.push("ended_at IS NOT NULL"),
        None => {}
    }
    match f.break_glass {
        Some(true) => w.push("break_glass = 1"),
        Some(false) => w.push("break_glass = 0"),
        None => {}
    }
    match f.vendor {
        Some(true) => w.push("vendor IS NOT NULL"),
        Some(false) => w.push("vendor IS NULL"),
        None => {}
    }
    w.select(c, "sessions", SESSION_ORDER, limit(f.limit))
}

/// Write a ticket with the columns the ticket list filters and orders on.
pub(super) fn put_ticket(c: &Connection, t: &Ticket) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO tickets (id, state, assignee, updated_at, data) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET state = ?2, assignee = ?3, updated_at = ?4, data = ?5",
        params![
            t.id.as_str(),
            t.state.as_str(),
            t.assignee.as_ref().map(|a| a.as_str()),
            t.updated_at,
            to_json(t)?,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// The tickets `f` selects in [`TICKET_ORDER`].
pub(super) fn tickets(c: &Connection, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError> {
    let mut w = Where::default();
    w.add("assignee = ?", f.assignee.as_ref().map(|a| a.to_string()));
    w.add("state = ?", f.state.map(|s| s.as_str()));
    w.select(c, "tickets", TICKET_ORDER, limit(f.limit))
}
