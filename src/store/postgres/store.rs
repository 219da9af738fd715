//! The `Store` trait on PostgreSQL: one constant statement per operation, values as `$n`
//! parameters, optional filters as `($n IS NULL OR column = $n)`.

use async_trait::async_trait;

use super::{PgStore, db, limit, to_json};
use crate::store::{
    AuditEntry, AuditFilter, ChainLink, Grant, GrantFilter, Person, Request, RequestFilter,
    RequestKind, Review, SessionFilter, SessionRecord, SignIn, Store, StoreError, Ticket,
    TicketFilter,
};
use crate::types::{GrantId, RequestId, SessionId, TicketRef, UnixTime, UserName};

#[async_trait]
impl Store for PgStore {
    async fn put_ticket(&self, t: &Ticket) -> Result<(), StoreError> {
        let data = to_json(t)?;
        let assignee = t.assignee.as_ref().map(|a| a.as_str());
        self.exec(
            "INSERT INTO tickets (id, state, assignee, updated_at, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET state = $2, assignee = $3, updated_at = $4, data = $5",
            &[
                &t.id.as_str(),
                &t.state.as_str(),
                &assignee,
                &t.updated_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn ticket(&self, id: &TicketRef) -> Result<Option<Ticket>, StoreError> {
        self.one("SELECT data FROM tickets WHERE id = $1", id.as_str())
            .await
    }

    async fn tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError> {
        let assignee = f.assignee.as_ref().map(|a| a.as_str());
        let state = f.state.map(|s| s.as_str());
        self.rows(
            "SELECT data FROM tickets
             WHERE ($1::text IS NULL OR assignee = $1) AND ($2::text IS NULL OR state = $2)
             ORDER BY updated_at DESC, id DESC LIMIT $3",
            &[&assignee, &state, &limit(f.limit)],
        )
        .await
    }

    async fn put_request(&self, r: &Request) -> Result<(), StoreError> {
        let data = to_json(r)?;
        self.exec(
            "INSERT INTO requests (id, requester, state, ticket, created_at, data)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET state = $3, data = $6",
            &[
                &r.id.as_str(),
                &r.requester.as_str(),
                &r.state.as_str(),
                &r.ticket.as_str(),
                &r.created_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.one("SELECT data FROM requests WHERE id = $1", id.as_str())
            .await
    }

    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let requester = f.requester.as_ref().map(|u| u.as_str());
        let state = f.state.map(|s| s.as_str());
        let ticket = f.ticket.as_ref().map(|t| t.as_str());
        self.rows(
            "SELECT data FROM requests
             WHERE ($1::text IS NULL OR requester = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::text IS NULL OR ticket = $3)
             ORDER BY created_at DESC, id LIMIT $4",
            &[&requester, &state, &ticket, &limit(f.limit)],
        )
        .await
    }

    async fn put_grant(&self, g: &Grant) -> Result<(), StoreError> {
        let data = to_json(g)?;
        self.exec(
            "INSERT INTO grants (id, request, requester, token_hash, ticket, state, expires_at, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET token_hash = $4, state = $6, expires_at = $7, data = $8",
            &[
                &g.id.as_str(),
                &g.request.as_str(),
                &g.requester.as_str(),
                &g.token_hash,
                &g.ticket.as_str(),
                &g.state.as_str(),
                &g.expires_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.one("SELECT data FROM grants WHERE id = $1", id.as_str())
            .await
    }

    async fn grant_by_token_hash(&self, hash: &str) -> Result<Option<Grant>, StoreError> {
        self.one("SELECT data FROM grants WHERE token_hash = $1", hash)
            .await
    }

    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let requester = f.requester.as_ref().map(|u| u.as_str());
        let state = f.state.map(|s| s.as_str());
        let ticket = f.ticket.as_ref().map(|t| t.as_str());
        self.rows(
            "SELECT data FROM grants
             WHERE ($1::text IS NULL OR requester = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::text IS NULL OR ticket = $3)
             ORDER BY expires_at DESC, id LIMIT $4",
            &[&requester, &state, &ticket, &limit(f.limit)],
        )
        .await
    }

    async fn put_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let data = to_json(r)?;
        let break_glass = r.kind == RequestKind::BreakGlass;
        let node = r.node.as_deref();
        self.exec(
            "INSERT INTO sessions (id, user_name, grant_id, ticket, started_at, ended_at, target,
                 task, protocol, end_cause, break_glass, vendor, node, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET user_name = $2, grant_id = $3, ticket = $4,
                 started_at = $5, ended_at = $6, target = $7, task = $8, protocol = $9,
                 end_cause = $10, break_glass = $11, vendor = $12, node = $13, data = $14",
            &[
                &r.id.as_str(),
                &r.user.as_str(),
                &r.grant.as_str(),
                &r.ticket.as_str(),
                &r.started_at,
                &r.ended_at,
                &r.target.as_str(),
                &r.task.as_str(),
                &r.protocol,
                &r.end_cause,
                &break_glass,
                &r.vendor,
                &node,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.one("SELECT data FROM sessions WHERE id = $1", id.as_str())
            .await
    }

    async fn sessions(&self, f: &SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let user = f.user.as_ref().map(|v| v.as_str());
        let grant = f.grant.as_ref().map(|v| v.as_str());
        let ticket = f.ticket.as_ref().map(|v| v.as_str());
        let target = f.target.as_ref().map(|v| v.as_str());
        let task = f.task.as_ref().map(|v| v.as_str());
        let before = f.before.as_ref().map(|v| v.as_str());
        self.rows(
            "SELECT data FROM sessions
             WHERE ($1::text IS NULL OR user_name = $1)
               AND ($2::text IS NULL OR grant_id = $2)
               AND ($3::text IS NULL OR ticket = $3)
               AND ($4::text IS NULL OR target = $4)
               AND ($5::text IS NULL OR task = $5)
               AND ($6::text IS NULL OR protocol = $6)
               AND ($7::text IS NULL OR end_cause = $7)
               AND ($8::text IS NULL OR vendor = $8)
               AND ($9::bigint IS NULL OR started_at >= $9)
               AND ($10::bigint IS NULL OR started_at < $10)
               AND ($11::text IS NULL OR (started_at, id) <
                    (SELECT b.started_at, b.id FROM sessions AS b WHERE b.id = $11))
               AND ($12::boolean IS NULL OR (ended_at IS NULL) = $12)
               AND ($13::boolean IS NULL OR break_glass = $13)
               AND ($14::boolean IS NULL OR (vendor IS NOT NULL) = $14)
             ORDER BY started_at DESC, id DESC LIMIT $15",
            &[
                &user,
                &grant,
                &ticket,
                &target,
                &task,
                &f.protocol,
                &f.end_cause,
                &f.vendor_name,
                &f.since,
                &f.until,
                &before,
                &f.live,
                &f.break_glass,
                &f.vendor,
                &limit(f.limit),
            ],
        )
        .await
    }

    async fn put_review(&self, r: &Review) -> Result<(), StoreError> {
        let data = to_json(r)?;
        self.exec(
            "INSERT INTO reviews (id, user_name, open, created_at, data) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET open = $3, data = $5",
            &[
                &r.id,
                &r.user.as_str(),
                &r.reviewed_at.is_none(),
                &r.created_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        self.one("SELECT data FROM reviews WHERE id = $1", id).await
    }

    async fn reviews(
        &self,
        open_only: bool,
        user: Option<&UserName>,
    ) -> Result<Vec<Review>, StoreError> {
        let user = user.map(|u| u.as_str());
        self.rows(
            "SELECT data FROM reviews
             WHERE (NOT $1 OR open) AND ($2::text IS NULL OR user_name = $2)
             ORDER BY created_at DESC, id LIMIT 1000",
            &[&open_only, &user],
        )
        .await
    }

    async fn record_delivery(&self, key: &str, at: UnixTime) -> Result<bool, StoreError> {
        let n = self
            .exec(
                "INSERT INTO webhook_deliveries (key, received_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&key, &at],
            )
            .await?;
        // Keep the table bounded: deliveries older than a day cannot pass the freshness check.
        self.exec(
            "DELETE FROM webhook_deliveries WHERE received_at < $1",
            &[&(at - 86_400)],
        )
        .await?;
        Ok(n == 1)
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let seq = e.seq as i64;
        tx.execute(
            "INSERT INTO audit (seq, ts, event, hash, request, grant_id, session, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &seq, &e.ts, &e.event, &e.hash, &e.request, &e.grant, &e.session, &e.record,
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET seq = $1, hash = $2",
            &[&seq, &e.hash],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq, hash FROM audit_head WHERE id = 1 AND seq > 0",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    async fn append_chained(&self, links: Vec<ChainLink>) -> Result<Vec<AuditEntry>, StoreError> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        // The head row exists from the first migration on; this lock orders every node's
        // appends into one sequence.
        let st = tx
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .await
            .map_err(db)?;
        let head = tx.query_one(&st, &[]).await.map_err(db)?;
        let (mut seq, mut hash): (i64, String) = (head.get(0), head.get(1));
        let mut entries = Vec::with_capacity(links.len());
        for link in links {
            let e = link(seq as u64, &hash);
            if e.seq != seq as u64 + 1 {
                return Err(StoreError::Db(format!(
                    "an audit record must follow seq {seq}, not be {}",
                    e.seq
                )));
            }
            seq = e.seq as i64;
            hash = e.hash.clone();
            entries.push(e);
        }
        // One statement for the whole batch: each column as an array.
        let col = |f: fn(&AuditEntry) -> Option<&str>| -> Vec<Option<&str>> {
            entries.iter().map(f).collect()
        };
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq as i64).collect();
        let (ts, event, hashes) = (
            col(|e| Some(e.ts.as_str())),
            col(|e| Some(e.event.as_str())),
            col(|e| Some(e.hash.as_str())),
        );
        let (request, grant, session, record) = (
            col(|e| e.request.as_deref()),
            col(|e| e.grant.as_deref()),
            col(|e| e.session.as_deref()),
            col(|e| Some(e.record.as_str())),
        );
        let st = tx
            .prepare_cached(
                "INSERT INTO audit (seq, ts, event, hash, request, grant_id, session, record)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[],
                                      $5::text[], $6::text[], $7::text[], $8::text[])",
            )
            .await
            .map_err(db)?;
        tx.execute(
            &st,
            &[
                &seqs, &ts, &event, &hashes, &request, &grant, &session, &record,
            ],
        )
        .await
        .map_err(db)?;
        let st = tx
            .prepare_cached("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .await
            .map_err(db)?;
        tx.execute(&st, &[&seq, &hash]).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(entries)
    }

    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let after = f.after_seq.map(|s| s as i64);
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, ts, event, hash, request, grant_id, session, record FROM audit
                 WHERE ($1::bigint IS NULL OR seq > $1) AND ($2::text IS NULL OR event = $2)
                   AND ($3::text IS NULL OR request = $3) AND ($4::text IS NULL OR grant_id = $4)
                 ORDER BY seq LIMIT $5",
                &[&after, &f.event, &f.request, &f.grant, &limit(f.limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get::<_, i64>(0) as u64,
                ts: r.get(1),
                event: r.get(2),
                hash: r.get(3),
                request: r.get(4),
                grant: r.get(5),
                session: r.get(6),
                record: r.get(7),
            })
            .collect())
    }

    async fn put_person(&self, p: &Person) -> Result<(), StoreError> {
        let data = to_json(p)?;
        let name = p.name.as_str();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO people (name, data) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET data = $2",
            &[&name, &data],
        )
        .await
        .map_err(db)?;
        tx.execute("DELETE FROM person_ids WHERE name = $1", &[&name])
            .await
            .map_err(db)?;
        for id in &p.external_ids {
            // The latest sign-in that claims an identity holds it.
            tx.execute(
                "INSERT INTO person_ids (external_id, name) VALUES ($1, $2)
                 ON CONFLICT (external_id) DO UPDATE SET name = $2",
                &[id, &name],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn person(&self, name: &UserName) -> Result<Option<Person>, StoreError> {
        self.one("SELECT data FROM people WHERE name = $1", name.as_str())
            .await
    }

    async fn person_with_id(&self, external_id: &str) -> Result<Option<UserName>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT name FROM person_ids WHERE external_id = $1",
                &[&external_id],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            r.get::<_, &str>(0).parse().map_err(|e: String| {
                StoreError::Corrupt(format!("person_ids holds a bad name: {e}"))
            })
        })
        .transpose()
    }

    async fn put_held(
        &self,
        kind: &str,
        key: &str,
        value: &str,
        expires_at: UnixTime,
        max: usize,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "DELETE FROM held WHERE expires_at < $1",
            &[&(crate::types::now() - 60)],
        )
        .await
        .map_err(db)?;
        let n: i64 = tx
            .query_one("SELECT count(*) FROM held WHERE kind = $1", &[&kind])
            .await
            .map_err(db)?
            .get(0);
        if n as usize >= max {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO held (kind, key, value, expires_at) VALUES ($1, $2, $3, $4)",
            &[&kind, &key, &value, &expires_at],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn take_held(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "DELETE FROM held WHERE kind = $1 AND key = $2 RETURNING value",
                &[&kind, &key],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_sign_in(&self, s: &SignIn) -> Result<(), StoreError> {
        let data = to_json(s)?;
        // Sign-ins over for a day are of no more use (the audit log keeps their story).
        self.exec(
            "DELETE FROM sign_ins WHERE expires_at < $1",
            &[&(crate::types::now() - 86_400)],
        )
        .await?;
        self.exec(
            "INSERT INTO sign_ins (secret_sha256, id, user_name, expires_at, data)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (secret_sha256) DO UPDATE SET data = $5",
            &[
                &s.secret_sha256,
                &s.id,
                &s.user.as_str(),
                &s.expires_at,
                &data,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn sign_in(&self, sha256: &str) -> Result<Option<SignIn>, StoreError> {
        self.one("SELECT data FROM sign_ins WHERE secret_sha256 = $1", sha256)
            .await
    }
}
