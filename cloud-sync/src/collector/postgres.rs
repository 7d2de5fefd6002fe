//! The collector's PostgreSQL store, for real deployments where several
//! collector processes share one database behind a load balancer.
//!
//! # Invariants and limits
//! - **Commit before receipt**, as in SQLite: the batch, its events, the
//!   gateway's figures and gaps change in one transaction, and PostgreSQL's
//!   default `synchronous_commit=on` flushes the WAL before `COMMIT` returns.
//! - **One batch at a time, across every process.** A batch's transaction
//!   first takes the transaction-level advisory lock [`STORE_LOCK`]. So two
//!   processes that get the same batch at once store it once (the second
//!   finds it and answers with the stored receipt), and the chain and gap
//!   checks see every committed neighbour.
//! - **Feed positions in commit order.** Under that lock a batch reads
//!   `MAX(events.id)` and numbers its events from there. PostgreSQL makes a
//!   transaction visible before it releases its locks, so the next batch
//!   numbers after everything committed, and a reader can never see a
//!   position before a smaller one: the cursor neither skips nor repeats.
//!   (A sequence would not do: values are taken at insert time, so a slower
//!   transaction could commit a smaller id after a reader passed it.)
//! - The cost of that: stores do not run in parallel. At 5,000 events per
//!   batch that is what the SQLite writer does anyway.
//! - Connections are plain TCP (`NoTls`): keep the database on a trusted
//!   network or a local socket until TLS to PostgreSQL is added.
//!
//! # Tables (schema version 1, see [`MIGRATIONS`])
//! The same as SQLite's (`super::sqlite`), in PostgreSQL types; the version
//! lives in `collector_schema`.

use std::sync::{Arc, Mutex};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Transaction};

use super::store::{
    assemble_feed, CollectorStore, EnrollOutcome, Enrolment, FeedPage, FeedQuery, FeedRow, Gap,
    GatewayReport, StoreError, StoreOutcome,
};
use crate::batch::{Header, VerifiedBatch};
use crate::hex;
use crate::keys::{GatewayId, PublicKey};
use crate::receipt::Receipt;

/// The advisory lock key every batch store takes ("wardlink" in ASCII).
pub const STORE_LOCK: i64 = 0x7761_7264_6c69_6e6b;
/// The advisory lock key of migrations.
const MIGRATE_LOCK: i64 = STORE_LOCK + 1;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append-only.
pub const MIGRATIONS: &[&str] = &[
    // 1: gateways, batches, events, gaps, alarms, tokens.
    "CREATE TABLE gateways (
        gateway_id       TEXT PRIMARY KEY,
        public_key       BYTEA  NOT NULL,
        enrolled_ms      BIGINT NOT NULL,
        revoked_ms       BIGINT,
        last_seen_ms     BIGINT,
        last_seq         BIGINT NOT NULL DEFAULT 0,
        reported_backlog BIGINT,
        batches_received BIGINT NOT NULL DEFAULT 0,
        events_received  BIGINT NOT NULL DEFAULT 0,
        conflicts        BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE batches (
        gateway_id         TEXT   NOT NULL REFERENCES gateways (gateway_id),
        seq                BIGINT NOT NULL,
        header_sha256      BYTEA  NOT NULL,
        prev_header_sha256 BYTEA  NOT NULL,
        first_event_id     BIGINT NOT NULL,
        last_event_id      BIGINT NOT NULL,
        event_count        BIGINT NOT NULL,
        created_ms         BIGINT NOT NULL,
        stored_ms          BIGINT NOT NULL,
        header             BYTEA  NOT NULL,
        signature          BYTEA  NOT NULL,
        body               BYTEA  NOT NULL,
        receipt            TEXT   NOT NULL,
        PRIMARY KEY (gateway_id, seq)
     );
     CREATE TABLE events (
        id         BIGINT PRIMARY KEY,
        gateway_id TEXT   NOT NULL,
        seq        BIGINT NOT NULL,
        event_id   BIGINT NOT NULL,
        type       TEXT,
        json       TEXT   NOT NULL
     );
     CREATE INDEX events_type ON events (type, id);
     CREATE INDEX events_gateway ON events (gateway_id, id);
     CREATE TABLE gaps (
        gateway_id TEXT   NOT NULL,
        first_seq  BIGINT NOT NULL,
        last_seq   BIGINT NOT NULL,
        opened_ms  BIGINT NOT NULL,
        PRIMARY KEY (gateway_id, first_seq)
     );
     CREATE TABLE alarms (
        id            BIGSERIAL PRIMARY KEY,
        at_ms         BIGINT NOT NULL,
        gateway_id    TEXT   NOT NULL,
        seq           BIGINT NOT NULL,
        header_sha256 BYTEA  NOT NULL,
        reason        TEXT   NOT NULL
     );
     CREATE TABLE tokens (
        name         TEXT PRIMARY KEY,
        token_sha256 BYTEA  NOT NULL UNIQUE,
        created_ms   BIGINT NOT NULL
     );",
    // 2: an event keeps where its line sits in the decompressed batch body
    // (stored once, in `batches`) instead of a copy of its JSON; rows from
    // schema 1 keep their `json`.
    "ALTER TABLE events ALTER COLUMN json DROP NOT NULL;
     ALTER TABLE events ADD COLUMN line_start BIGINT, ADD COLUMN line_len BIGINT;",
];

/// u64 values are stored bit for bit in BIGINT and compared in Rust.
fn to_sql(v: u64) -> i64 {
    v as i64
}

fn from_sql(v: i64) -> u64 {
    v as u64
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Database(e.to_string()),
    }
}

/// The PostgreSQL implementation of [`CollectorStore`].
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Pool>,
}

/// A small pool: idle clients are reused, a closed one is dropped.
struct Pool {
    /// The connection string (never logged: it may hold a password).
    url: String,
    /// Idle connections.
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect, check the server, and migrate the schema (under a lock, so
    /// that replicas starting together migrate once).
    ///
    /// # Errors
    /// The server cannot be reached, the schema is newer than this binary,
    /// or a migration fails.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore {
            inner: Arc::new(Pool {
                url: url.to_string(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        let mut client = store.get().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(db_err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS collector_schema (version INTEGER NOT NULL)")
            .await
            .map_err(db_err)?;
        let row = tx
            .query_opt("SELECT version FROM collector_schema", &[])
            .await
            .map_err(db_err)?;
        let mut version = match row {
            Some(r) => i64::from(r.get::<_, i32>(0)),
            None => {
                tx.execute("INSERT INTO collector_schema (version) VALUES (0)", &[])
                    .await
                    .map_err(db_err)?;
                0
            }
        };
        let latest = MIGRATIONS.len() as i64;
        if version > latest {
            return Err(StoreError::TooNew {
                path: "the PostgreSQL database".into(),
                found: version,
                known: latest,
            });
        }
        while version < latest {
            let step = MIGRATIONS.get(version as usize).copied().unwrap_or("");
            tx.batch_execute(step).await.map_err(db_err)?;
            version += 1;
            tx.execute(
                "UPDATE collector_schema SET version = $1",
                &[&(version as i32)],
            )
            .await
            .map_err(db_err)?;
            tracing::info!(version, "collector schema migrated (PostgreSQL)");
        }
        tx.commit().await.map_err(db_err)?;
        store.put(client);
        Ok(store)
    }

    /// An idle connection, or a new one. Give it back with [`PgStore::put`]
    /// after a successful use; one dropped on an error path is closed.
    async fn get(&self) -> Result<Client, StoreError> {
        let idle = self.inner.idle.lock().ok().and_then(|mut i| i.pop());
        let client = match idle {
            Some(c) if !c.is_closed() => c,
            _ => {
                let (client, connection) = tokio_postgres::connect(&self.inner.url, NoTls)
                    .await
                    .map_err(|e| StoreError::Open {
                        path: "the PostgreSQL database".into(),
                        message: e.to_string(),
                    })?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    /// Return a connection to the pool.
    fn put(&self, client: Client) {
        if !client.is_closed() {
            if let Ok(mut idle) = self.inner.idle.lock() {
                idle.push(client);
            }
        }
    }
}

impl CollectorStore for PgStore {
    async fn enroll(
        &self,
        gateway: &GatewayId,
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<EnrollOutcome, StoreError> {
        let gateway = gateway.to_string();
        let key = key.to_bytes().to_vec();
        let mut client = self.get().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let inserted = tx
            .execute(
                "INSERT INTO gateways (gateway_id, public_key, enrolled_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (gateway_id) DO NOTHING",
                &[&gateway, &key, &to_sql(now_ms)],
            )
            .await
            .map_err(db_err)?;
        let outcome = if inserted == 1 {
            EnrollOutcome::Enrolled
        } else {
            let row = tx
                .query_one(
                    "SELECT public_key, revoked_ms FROM gateways WHERE gateway_id = $1 FOR UPDATE",
                    &[&gateway],
                )
                .await
                .map_err(db_err)?;
            let stored: Vec<u8> = row.get(0);
            let revoked: Option<i64> = row.get(1);
            if stored != key {
                EnrollOutcome::OtherKey
            } else if revoked.is_none() {
                EnrollOutcome::AlreadyEnrolled
            } else {
                tx.execute(
                    "UPDATE gateways SET revoked_ms = NULL WHERE gateway_id = $1",
                    &[&gateway],
                )
                .await
                .map_err(db_err)?;
                EnrollOutcome::Reinstated
            }
        };
        tx.commit().await.map_err(db_err)?;
        self.put(client);
        Ok(outcome)
    }

    async fn revoke(&self, gateway: &GatewayId, now_ms: u64) -> Result<bool, StoreError> {
        let gateway = gateway.to_string();
        let client = self.get().await?;
        let n = client
            .execute(
                "UPDATE gateways SET revoked_ms = COALESCE(revoked_ms, $2) WHERE gateway_id = $1",
                &[&gateway, &to_sql(now_ms)],
            )
            .await
            .map_err(db_err)?;
        self.put(client);
        Ok(n > 0)
    }

    async fn enrolment(&self, gateway: &GatewayId) -> Result<Option<Enrolment>, StoreError> {
        let gateway = gateway.to_string();
        let client = self.get().await?;
        let row = client
            .query_opt(
                "SELECT public_key, revoked_ms FROM gateways WHERE gateway_id = $1",
                &[&gateway],
            )
            .await
            .map_err(db_err)?;
        self.put(client);
        let Some(row) = row else {
            return Ok(None);
        };
        let key: Vec<u8> = row.get(0);
        let revoked: Option<i64> = row.get(1);
        let key: [u8; 32] = key.try_into().map_err(|_| {
            StoreError::Database(format!("stored key of {gateway} is not 32 bytes"))
        })?;
        let public_key = PublicKey::from_bytes(&key)
            .map_err(|e| StoreError::Database(format!("stored key of {gateway}: {e}")))?;
        Ok(Some(Enrolment {
            public_key,
            revoked: revoked.is_some(),
        }))
    }

    async fn store_batch(
        &self,
        batch: VerifiedBatch,
        receipt: Receipt,
        now_ms: u64,
    ) -> Result<StoreOutcome, StoreError> {
        let mut client = self.get().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let outcome = store_batch_tx(&tx, &batch, &receipt, now_ms)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.put(client);
        Ok(outcome)
    }

    async fn create_token(
        &self,
        name: &str,
        token_sha256: [u8; 32],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let client = self.get().await?;
        let n = client
            .execute(
                "INSERT INTO tokens (name, token_sha256, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&name, &token_sha256.to_vec(), &to_sql(now_ms)],
            )
            .await
            .map_err(db_err)?;
        self.put(client);
        Ok(n == 1)
    }

    async fn reader(&self, token_sha256: [u8; 32]) -> Result<Option<String>, StoreError> {
        let client = self.get().await?;
        let row = client
            .query_opt(
                "SELECT name FROM tokens WHERE token_sha256 = $1",
                &[&token_sha256.to_vec()],
            )
            .await
            .map_err(db_err)?;
        self.put(client);
        Ok(row.map(|r| r.get(0)))
    }

    async fn feed(&self, q: FeedQuery) -> Result<FeedPage, StoreError> {
        let mut client = self.get().await?;
        // One snapshot for the rows and the newest position.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_err)?;
        let after = to_sql(q.after);
        let limit = q.limit as i64;
        let mut sql = String::from(
            "SELECT id, gateway_id, seq, json, line_start, line_len FROM events WHERE id > $1",
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after];
        if let Some(t) = &q.event_type {
            params.push(t);
            sql.push_str(&format!(" AND type = ${}", params.len()));
        }
        if let Some(g) = &q.gateway {
            params.push(g);
            sql.push_str(&format!(" AND gateway_id = ${}", params.len()));
        }
        params.push(&limit);
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
        let rows = tx.query(&sql, &params).await.map_err(db_err)?;
        let rows: Vec<FeedRow> = rows
            .iter()
            .map(|r| {
                let start: Option<i64> = r.get(4);
                let len: Option<i64> = r.get(5);
                FeedRow {
                    position: from_sql(r.get(0)),
                    gateway_id: r.get(1),
                    seq: from_sql(r.get(2)),
                    json: r.get(3),
                    line: start.zip(len).map(|(s, l)| (from_sql(s), from_sql(l))),
                }
            })
            .collect();
        // The bodies of the batches the rows point into, each fetched once.
        let mut bodies: Vec<(String, u64, Vec<u8>)> = Vec::new();
        for row in rows.iter().filter(|r| r.json.is_none()) {
            if bodies
                .last()
                .is_some_and(|(g, s, _)| *g == row.gateway_id && *s == row.seq)
            {
                continue;
            }
            let body: Vec<u8> = tx
                .query_one(
                    "SELECT body FROM batches WHERE gateway_id = $1 AND seq = $2",
                    &[&row.gateway_id, &to_sql(row.seq)],
                )
                .await
                .map_err(db_err)?
                .get(0);
            bodies.push((row.gateway_id.clone(), row.seq, body));
        }
        let events = assemble_feed(rows, |gw, seq| {
            bodies
                .iter_mut()
                .find(|(g, s, _)| g == gw && *s == seq)
                .map(|(_, _, body)| std::mem::take(body))
                .ok_or_else(|| StoreError::Database(format!("no stored body for {gw} seq {seq}")))
        })?;
        let next_cursor = if events.len() >= q.limit {
            events.last().map_or(q.after, |e| e.position)
        } else {
            let max: Option<i64> = tx
                .query_one("SELECT MAX(id) FROM events", &[])
                .await
                .map_err(db_err)?
                .get(0);
            max.map_or(q.after, |m| from_sql(m).max(q.after))
        };
        tx.commit().await.map_err(db_err)?;
        self.put(client);
        Ok(FeedPage {
            events,
            next_cursor,
        })
    }

    async fn gateways(&self) -> Result<Vec<GatewayReport>, StoreError> {
        let mut client = self.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_err)?;
        let rows = tx
            .query(
                "SELECT gateway_id, public_key, revoked_ms, enrolled_ms, last_seen_ms, last_seq,
                        reported_backlog, batches_received, events_received, conflicts
                 FROM gateways ORDER BY gateway_id",
                &[],
            )
            .await
            .map_err(db_err)?;
        let mut reports = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<u8> = r.get(1);
            let gateway_id: String = r.get(0);
            let gaps = tx
                .query(
                    "SELECT first_seq, last_seq FROM gaps WHERE gateway_id = $1 ORDER BY first_seq",
                    &[&gateway_id],
                )
                .await
                .map_err(db_err)?
                .iter()
                .map(|g| Gap {
                    first: from_sql(g.get(0)),
                    last: from_sql(g.get(1)),
                })
                .collect();
            reports.push(GatewayReport {
                gateway_id,
                public_key: hex::encode(&key),
                revoked: r.get::<_, Option<i64>>(2).is_some(),
                enrolled_ms: from_sql(r.get(3)),
                last_seen_ms: r.get::<_, Option<i64>>(4).map(from_sql),
                last_seq: from_sql(r.get(5)),
                open_gaps: gaps,
                reported_backlog: r.get::<_, Option<i64>>(6).map(from_sql),
                batches_received: from_sql(r.get(7)),
                events_received: from_sql(r.get(8)),
                conflicts: from_sql(r.get(9)),
            });
        }
        tx.commit().await.map_err(db_err)?;
        self.put(client);
        Ok(reports)
    }
}

/// The chain fields of a stored neighbour.
struct Neighbour {
    header_sha256: Vec<u8>,
    prev_header_sha256: Vec<u8>,
    first_event_id: u64,
    last_event_id: u64,
}

async fn neighbour(
    tx: &Transaction<'_>,
    gw: &str,
    seq: u64,
) -> Result<Option<Neighbour>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT header_sha256, prev_header_sha256, first_event_id, last_event_id
             FROM batches WHERE gateway_id = $1 AND seq = $2",
            &[&gw, &to_sql(seq)],
        )
        .await?;
    Ok(row.map(|r| Neighbour {
        header_sha256: r.get(0),
        prev_header_sha256: r.get(1),
        first_event_id: from_sql(r.get(2)),
        last_event_id: from_sql(r.get(3)),
    }))
}

/// Whether the batch contradicts its stored neighbours (`seq ± 1`); the
/// same rules and messages as the SQLite store.
async fn chain_conflict(
    tx: &Transaction<'_>,
    gw: &str,
    h: &Header,
    hash: &[u8; 32],
) -> Result<Option<String>, tokio_postgres::Error> {
    if h.seq > 1 {
        if let Some(prev) = neighbour(tx, gw, h.seq - 1).await? {
            if prev.header_sha256 != h.prev_header_sha256 {
                return Ok(Some(format!(
                    "broken chain: prev_header_sha256 {} is not the header of stored seq {} ({})",
                    hex::encode(&h.prev_header_sha256),
                    h.seq - 1,
                    hex::encode(&prev.header_sha256)
                )));
            }
            if h.first_event_id <= prev.last_event_id {
                return Ok(Some(format!(
                    "event ids not increasing: first_event_id {} after seq {} ended at {}",
                    h.first_event_id,
                    h.seq - 1,
                    prev.last_event_id
                )));
            }
        }
    }
    if let Some(next) = neighbour(tx, gw, h.seq.saturating_add(1)).await? {
        if next.prev_header_sha256 != hash {
            return Ok(Some(format!(
                "broken chain: stored seq {} names previous header {}, this batch is {}",
                h.seq + 1,
                hex::encode(&next.prev_header_sha256),
                hex::encode(hash)
            )));
        }
        if h.last_event_id >= next.first_event_id {
            return Ok(Some(format!(
                "event ids not increasing: last_event_id {} before seq {} starting at {}",
                h.last_event_id,
                h.seq + 1,
                next.first_event_id
            )));
        }
    }
    Ok(None)
}

/// Storing one batch inside `tx` (see the module doc); the caller commits.
async fn store_batch_tx(
    tx: &Transaction<'_>,
    v: &VerifiedBatch,
    receipt: &Receipt,
    now_ms: u64,
) -> Result<StoreOutcome, tokio_postgres::Error> {
    let h = v.header();
    let b = v.batch();
    let gw = h.gateway_id.as_str();
    let hash = b.header_sha256();
    let now = to_sql(now_ms);
    let seq = to_sql(h.seq);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&STORE_LOCK])
        .await?;

    let stored = tx
        .query_opt(
            "SELECT header_sha256, receipt FROM batches WHERE gateway_id = $1 AND seq = $2",
            &[&gw, &seq],
        )
        .await?;
    let conflict = match stored {
        Some(row) if row.get::<_, Vec<u8>>(0) == hash => {
            tx.execute(
                "UPDATE gateways SET last_seen_ms = $2 WHERE gateway_id = $1",
                &[&gw, &now],
            )
            .await?;
            let text: String = row.get(1);
            return Ok(match Receipt::from_json(text.as_bytes()) {
                Ok(r) => StoreOutcome::Duplicate(r),
                Err(e) => StoreOutcome::Conflict {
                    reason: format!("the stored receipt is unreadable: {e}"),
                },
            });
        }
        Some(row) => Some(format!(
            "seq {} is already stored with header {}, this batch has header {}",
            h.seq,
            hex::encode(&row.get::<_, Vec<u8>>(0)),
            hex::encode(&hash)
        )),
        None => chain_conflict(tx, gw, h, &hash).await?,
    };
    if let Some(reason) = conflict {
        tx.execute(
            "INSERT INTO alarms (at_ms, gateway_id, seq, header_sha256, reason) VALUES ($1, $2, $3, $4, $5)",
            &[&now, &gw, &seq, &hash.to_vec(), &reason],
        )
        .await?;
        tx.execute(
            "UPDATE gateways SET conflicts = conflicts + 1 WHERE gateway_id = $1",
            &[&gw],
        )
        .await?;
        return Ok(StoreOutcome::Conflict { reason });
    }

    tx.execute(
        "INSERT INTO batches (gateway_id, seq, header_sha256, prev_header_sha256, first_event_id,
            last_event_id, event_count, created_ms, stored_ms, header, signature, body, receipt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &gw,
            &seq,
            &hash.to_vec(),
            &h.prev_header_sha256.to_vec(),
            &to_sql(h.first_event_id),
            &to_sql(h.last_event_id),
            &to_sql(h.event_count),
            &to_sql(h.created_ms),
            &now,
            &b.header_bytes(),
            &b.signature().to_vec(),
            &b.body(),
            &receipt.to_json(),
        ],
    )
    .await?;
    // Number the events after everything committed (we hold the lock).
    let max: Option<i64> = tx
        .query_one("SELECT MAX(id) FROM events", &[])
        .await?
        .get(0);
    let base = max.unwrap_or(0);
    let mut ids = Vec::with_capacity(v.events().len());
    let mut event_ids = Vec::with_capacity(ids.capacity());
    let mut types: Vec<Option<&str>> = Vec::with_capacity(ids.capacity());
    let mut starts: Vec<i64> = Vec::with_capacity(ids.capacity());
    let mut lens: Vec<i64> = Vec::with_capacity(ids.capacity());
    for (i, e) in v.events().enumerate() {
        ids.push(base + 1 + i as i64);
        event_ids.push(to_sql(e.event_id));
        types.push(e.event_type);
        starts.push(e.start as i64);
        lens.push(e.json.len() as i64);
    }
    tx.execute(
        "INSERT INTO events (id, gateway_id, seq, event_id, type, line_start, line_len)
         SELECT i, $2, $3, e, t, s, l
         FROM UNNEST($1::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[], $7::BIGINT[]) AS u(i, e, t, s, l)",
        &[&ids, &gw, &seq, &event_ids, &types, &starts, &lens],
    )
    .await?;

    let last_seq: u64 = from_sql(
        tx.query_one(
            "SELECT last_seq FROM gateways WHERE gateway_id = $1",
            &[&gw],
        )
        .await?
        .get(0),
    );
    if h.seq > last_seq.saturating_add(1) {
        tx.execute(
            "INSERT INTO gaps (gateway_id, first_seq, last_seq, opened_ms) VALUES ($1, $2, $3, $4)",
            &[&gw, &to_sql(last_seq + 1), &to_sql(h.seq - 1), &now],
        )
        .await?;
    } else if h.seq < last_seq {
        fill_gap(tx, gw, h.seq).await?;
    }
    let newest = h.seq > last_seq;
    tx.execute(
        "UPDATE gateways SET
            last_seen_ms = $2,
            last_seq = CASE WHEN $3 THEN $4 ELSE last_seq END,
            reported_backlog = CASE WHEN $3 THEN $5 ELSE reported_backlog END,
            batches_received = batches_received + 1,
            events_received = events_received + $6
         WHERE gateway_id = $1",
        &[
            &gw,
            &now,
            &newest,
            &seq,
            &to_sql(h.backlog),
            &to_sql(h.event_count),
        ],
    )
    .await?;
    Ok(StoreOutcome::Stored(receipt.clone()))
}

/// `seq` arrived below the highest stored: remove it from its open gap
/// (worked example in `super::sqlite`).
async fn fill_gap(tx: &Transaction<'_>, gw: &str, seq: u64) -> Result<(), tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT first_seq, last_seq, opened_ms FROM gaps
             WHERE gateway_id = $1 AND first_seq <= $2 ORDER BY first_seq DESC LIMIT 1",
            &[&gw, &to_sql(seq)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let (first, last, opened): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let (first, last) = (from_sql(first), from_sql(last));
    if seq > last {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM gaps WHERE gateway_id = $1 AND first_seq = $2",
        &[&gw, &to_sql(first)],
    )
    .await?;
    let insert =
        "INSERT INTO gaps (gateway_id, first_seq, last_seq, opened_ms) VALUES ($1, $2, $3, $4)";
    if first < seq {
        tx.execute(insert, &[&gw, &to_sql(first), &to_sql(seq - 1), &opened])
            .await?;
    }
    if seq < last {
        tx.execute(insert, &[&gw, &to_sql(seq + 1), &to_sql(last), &opened])
            .await?;
    }
    Ok(())
}
