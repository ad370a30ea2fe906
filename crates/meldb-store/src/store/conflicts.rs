//! The conflict log (`meldb_conflicts`), deferred conflicts, and notices:
//! recorded by the authority, handed to their writers with the authority's
//! correction, kept by writers in `meldb_rejections` until the app
//! acknowledges them. A change the authority rejected gets a notice, and
//! so does one it deferred (it waits for review); while it waits, the row
//! shows what the table's `deferred_shows` says, written as a correction,
//! until [`Store::resolve_deferred`] settles it.
//!
//! Rows in the log are JSON objects, so apps can query them with SQLite's
//! JSON functions: `SELECT json_extract(incoming, '$.seat') FROM
//! meldb_conflicts WHERE outcome = 'rejected'`.

use super::correct::{row_of, target_values, write_correction};
use super::Store;
use crate::clock::SiteId;
use crate::error::{ResolveError, Result, StorageError, WriteError};
use crate::resolve::{value_from_json, values_to_json_text};
use crate::resolve::{
    ConflictCount, ConflictRecord, Mode, NoticeKind, Outcome, Rejection, Row, WriteMetadata, Writer,
};
use crate::schema::DeferredShows;
use crate::value::{Key, Value};
use crate::version::VersionVector;
use rusqlite::{params, OptionalExtension};
use serde_json::Value as Json;

/// Tables of the conflict machinery. `IF NOT EXISTS`: databases created
/// before it get them when next opened. The columns format 3 added end
/// their tables' column lists exactly as `ALTER TABLE ... ADD COLUMN`
/// writes them (`format::upgrade_2_to_3`), so an upgraded database and a
/// new one have the same `sqlite_master`.
pub const CONFLICT_DDL: &str = "
CREATE TABLE IF NOT EXISTS meldb_conflicts (
    id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL,
    local TEXT, incoming TEXT, merged TEXT, result TEXT,
    outcome TEXT NOT NULL, resolver TEXT, reason TEXT,
    writer TEXT NOT NULL, writer_site BLOB NOT NULL, notice_seq INTEGER,
    open INTEGER NOT NULL DEFAULT 0, local_meta TEXT, incoming_meta TEXT) STRICT;
CREATE INDEX IF NOT EXISTS meldb_conflicts_notices
    ON meldb_conflicts (writer_site, notice_seq) WHERE notice_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS meldb_rejections (
    authority BLOB NOT NULL, seq INTEGER NOT NULL, writer BLOB NOT NULL,
    tbl TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, rejected TEXT NOT NULL,
    at_ms INTEGER NOT NULL, acknowledged INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT 'rejected',
    PRIMARY KEY (authority, seq)) STRICT;
";

/// How long the conflict log keeps closed records ([`Store::set_conflict_retention`]).
///
/// Only *closed* records go: a deferred conflict still waiting is never
/// dropped, whatever its age. A record that carries a notice for its
/// writer (a rejection, an overruled or deferred change) is dropped only
/// by age, never by count, since the authority cannot know whether the
/// writer has pulled it yet: a writer offline for longer than `max_age_ms`
/// still gets its row corrected, but no longer the notice's reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConflictRetention {
    /// Drop closed records older than this many milliseconds (by the
    /// replica's wall clock), if set.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many closed records without a notice (the newest),
    /// if set.
    pub max_records: Option<usize>,
}

impl ConflictRetention {
    /// Keep everything (the default).
    pub const KEEP_ALL: ConflictRetention = ConflictRetention {
        max_age_ms: None,
        max_records: None,
    };
}

/// One conflict to record.
pub(super) struct LogEntry<'a> {
    pub table: &'a str,
    pub key: &'a [Value],
    pub local: Option<&'a Row>,
    pub incoming: Option<&'a Row>,
    pub merged: Option<&'a Row>,
    pub result: Option<&'a Row>,
    pub outcome: Outcome,
    pub resolver: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub writer: &'a Writer,
    pub writer_site: SiteId,
    pub notice_seq: Option<u64>,
    pub local_meta: Option<&'a WriteMetadata>,
    pub incoming_meta: Option<&'a WriteMetadata>,
}

const SELECT: &str = "SELECT id, at_ms, tbl, key, local, incoming, merged, result, outcome, \
                      resolver, reason, writer, writer_site, open, local_meta, incoming_meta \
                      FROM meldb_conflicts";

impl Store {
    pub(super) fn log_conflict(&self, e: &LogEntry<'_>) -> Result<()> {
        let json = |row: Option<&Row>| row.map(Row::to_json_text);
        let writer = serde_json::to_string(e.writer).unwrap_or_else(|_| "{}".into());
        self.conn
            .prepare_cached(
                "INSERT INTO meldb_conflicts (at_ms, tbl, key, local, incoming, merged, result, \
                 outcome, resolver, reason, writer, writer_site, notice_seq, open, local_meta, \
                 incoming_meta) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                self.clock.now_ms() as i64,
                e.table,
                key_json(e.key),
                json(e.local),
                json(e.incoming),
                json(e.merged),
                json(e.result),
                e.outcome.name(),
                e.resolver,
                e.reason,
                writer,
                e.writer_site.as_bytes().as_slice(),
                e.notice_seq.map(|s| s as i64),
                e.outcome == Outcome::Deferred,
                e.local_meta.map(WriteMetadata::as_str),
                e.incoming_meta.map(WriteMetadata::as_str),
            ])?;
        if self.conflict_retention != ConflictRetention::KEEP_ALL {
            self.prune_by_retention()?;
        }
        Ok(())
    }

    /// Sets how long the conflict log keeps closed records (see
    /// [`ConflictRetention`]: never an open deferred conflict; a record
    /// with a notice only by age) and prunes it now; later entries prune
    /// as they are logged. Not saved in the database: set it each time the
    /// store is opened. Returns how many records went now.
    pub fn set_conflict_retention(&mut self, retention: ConflictRetention) -> Result<usize> {
        self.conflict_retention = retention;
        let tx = self.transaction()?;
        let n = tx.store.prune_by_retention()?;
        tx.commit()?;
        Ok(n)
    }

    /// The retention set by [`Store::set_conflict_retention`].
    pub fn conflict_retention(&self) -> ConflictRetention {
        self.conflict_retention
    }

    fn prune_by_retention(&self) -> Result<usize> {
        let ConflictRetention {
            max_age_ms,
            max_records,
        } = self.conflict_retention;
        let mut n = 0;
        if let Some(age) = max_age_ms {
            let cutoff = self.clock.now_ms().saturating_sub(age);
            n += self
                .conn
                .prepare_cached("DELETE FROM meldb_conflicts WHERE at_ms < ?1 AND open = 0")?
                .execute([i64::try_from(cutoff).unwrap_or(i64::MAX)])?;
        }
        if let Some(max) = max_records {
            n += self
                .conn
                .prepare_cached(
                    "DELETE FROM meldb_conflicts WHERE open = 0 AND notice_seq IS NULL AND id IN \
                     (SELECT id FROM meldb_conflicts WHERE open = 0 AND notice_seq IS NULL \
                      ORDER BY id DESC LIMIT -1 OFFSET ?1)",
                )?
                .execute([i64::try_from(max).unwrap_or(i64::MAX)])?;
        }
        Ok(n)
    }

    /// The conflict log, newest first: at most `limit` entries, of `table`
    /// and `outcome` if given.
    pub fn conflicts(
        &self,
        table: Option<&str>,
        outcome: Option<Outcome>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>> {
        let sql = format!(
            "{SELECT} WHERE (?1 IS NULL OR tbl = ?1 COLLATE NOCASE) AND (?2 IS NULL OR outcome = ?2) \
             ORDER BY id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                table,
                outcome.map(Outcome::name),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            read_record,
        )?;
        rows.map(|r| r?).collect()
    }

    /// Conflicts waiting for a person, oldest first.
    pub fn deferred_conflicts(&self) -> Result<Vec<ConflictRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT} WHERE open = 1 ORDER BY id"))?;
        let rows = stmt.query_map([], read_record)?;
        rows.map(|r| r?).collect()
    }

    /// How many conflicts each table had, per outcome.
    pub fn conflict_counts(&self) -> Result<Vec<ConflictCount>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tbl, outcome, count(*) FROM meldb_conflicts GROUP BY tbl, outcome \
             ORDER BY tbl, outcome",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut counts = Vec::new();
        for row in rows {
            let (table, outcome, count) = row?;
            let outcome = Outcome::from_name(&outcome)
                .ok_or_else(|| corrupt(format!("unknown outcome {outcome:?}")))?;
            counts.push(ConflictCount {
                table,
                outcome,
                count: count as u64,
            });
        }
        counts.sort_by(|a, b| (&a.table, a.outcome).cmp(&(&b.table, b.outcome)));
        Ok(counts)
    }

    /// One entry of the conflict log, by id.
    pub fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT} WHERE id = ?1"))?;
        let mut rows = stmt.query_map([id], read_record)?;
        rows.next().transpose()?.transpose()
    }

    /// Settles a deferred conflict: the row becomes `row` (`None` deletes
    /// it), written as a new change that supersedes both versions, and the
    /// conflict is closed. Columns `row` leaves out keep their current
    /// values: those of the row the table showed while the conflict waited
    /// (`deferred_shows`, see [`crate::schema::Table::shown_while_deferred`]),
    /// or of a later change to it.
    pub fn resolve_deferred(&mut self, id: i64, row: Option<Row>) -> Result<()> {
        let tx = self.transaction()?;
        let store = &mut *tx.store;
        let record: Option<(String, String, String, i64)> = store
            .conn
            .query_row(
                "SELECT tbl, key, outcome, open FROM meldb_conflicts WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((table, key, outcome, open)) = record else {
            return Err(ResolveError::UnknownConflict { id }.into());
        };
        if open == 0 {
            return Err(ResolveError::NotDeferred { id, outcome }.into());
        }
        let layout = store
            .table(&table)
            .cloned()
            .ok_or(WriteError::UnknownTable { table })?;
        let key = key_from_json(&key).ok_or_else(|| corrupt(format!("conflict {id}: bad key")))?;
        let current = super::rows::load_by_key(&store.conn, &layout, &store.sites, &key)?
            .ok_or_else(|| corrupt(format!("conflict {id}: its row is gone")))?;
        let target = match &row {
            None => None,
            Some(row) => {
                let base = current
                    .state
                    .is_live()
                    .then(|| row_of(&layout, &key, &current.state));
                let mut full = base.unwrap_or_else(|| Row::new(Vec::new()));
                for (name, value) in row.columns() {
                    full.set_value(name, value.clone());
                }
                Some(target_values(&layout, &key, &full, "resolve_deferred")?)
            }
        };
        // A person decides once, on one replica: like an authority's
        // decision, it may move counters.
        write_correction(
            store,
            &layout,
            current.rid,
            &key,
            &current.state,
            target.as_deref(),
            Mode::Authority,
        )?;
        let stored = super::rows::load_by_key(&store.conn, &layout, &store.sites, &key)?
            .filter(|r| r.state.is_live())
            .map(|r| row_of(&layout, &key, &r.state).to_json().to_string());
        store.conn.execute(
            "UPDATE meldb_conflicts SET open = 0, result = ?2 WHERE id = ?1",
            params![id, stored],
        )?;
        tx.commit()
    }

    /// Settles a deferred conflict to one of the versions its log entry
    /// recorded ([`ConflictRecord::local`], `incoming` or `merged`):
    /// [`Store::resolve_deferred`] with the columns the versions disagree
    /// on taken from `version`; the columns they agreed on keep their
    /// current values, so a later change to them stands. A version that is
    /// a delete deletes the row; when a version is absent, or the row is
    /// gone here, the chosen one is written whole.
    pub fn keep_deferred(&mut self, id: i64, version: DeferredShows) -> Result<()> {
        let record = self
            .conflict(id)?
            .ok_or(ResolveError::UnknownConflict { id })?;
        let versions = [&record.local, &record.incoming, &record.merged];
        let chosen = match version {
            DeferredShows::Local => &record.local,
            DeferredShows::Incoming => &record.incoming,
            DeferredShows::Merged => &record.merged,
        };
        let Some(chosen) = chosen else {
            return self.resolve_deferred(id, None);
        };
        let live = self.get(&record.table, record.key.clone())?.is_some();
        if !live || versions.iter().any(|v| v.is_none()) {
            return self.resolve_deferred(id, Some(chosen.clone()));
        }
        let disputed = chosen
            .columns()
            .iter()
            .filter(|(name, value)| {
                versions
                    .iter()
                    .any(|v| v.as_ref().and_then(|r| r.get(name)) != Some(value))
            })
            .cloned()
            .collect();
        self.resolve_deferred(id, Some(Row::new(disputed)))
    }

    /// Rejection notices for `peer`'s changes whose correction a replica
    /// with version vector `vv` has not received yet: send them with the
    /// changes, and the writer learns of each once.
    pub fn rejections_for(&self, peer: SiteId, vv: &VersionVector) -> Result<Vec<Rejection>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT notice_seq, tbl, key, reason, incoming, at_ms, outcome FROM meldb_conflicts \
             WHERE writer_site = ?1 AND notice_seq IS NOT NULL ORDER BY notice_seq",
        )?;
        let rows = stmt.query_map([peer.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, table, key, reason, incoming, at_ms, outcome) = row?;
            let seq = seq as u64;
            if vv.contains(&self.local, seq) {
                continue;
            }
            let key = key_from_json(&key).ok_or_else(|| corrupt("a notice's key".into()))?;
            let outcome = Outcome::from_name(&outcome)
                .ok_or_else(|| corrupt(format!("a notice's outcome {outcome:?}")))?;
            out.push(Rejection {
                kind: NoticeKind::of_outcome(outcome),
                authority: self.local,
                seq,
                writer: peer,
                table,
                key: Key(key),
                reason: reason.unwrap_or_default(),
                rejected: incoming.unwrap_or_else(|| "null".into()),
                at_ms: at_ms as u64,
            });
        }
        Ok(out)
    }

    /// Keeps the notices addressed to this replica (others are ignored);
    /// returns how many were new.
    pub fn receive_rejections(&mut self, notices: &[Rejection]) -> Result<usize> {
        let tx = self.transaction()?;
        let new = store_notices(&tx.store.conn, tx.store.local, notices)?;
        tx.commit()?;
        Ok(new)
    }

    /// This replica's changes that an authority refused, not yet
    /// acknowledged, oldest first.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT authority, seq, writer, tbl, key, reason, rejected, at_ms, kind \
             FROM meldb_rejections WHERE acknowledged = 0 ORDER BY at_ms, seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?;
        let site = |bytes: Vec<u8>| {
            <[u8; 16]>::try_from(bytes.as_slice())
                .map(SiteId::from_bytes)
                .map_err(|_| corrupt("a site id is not 16 bytes".into()))
        };
        let mut out = Vec::new();
        for row in rows {
            let (authority, seq, writer, table, key, reason, rejected, at_ms, kind) = row?;
            let kind = NoticeKind::from_name(&kind)
                .ok_or_else(|| corrupt(format!("meldb_rejections: notice kind {kind:?}")))?;
            out.push(Rejection {
                kind,
                authority: site(authority)?,
                seq: seq as u64,
                writer: site(writer)?,
                table,
                key: Key(key_from_json(&key).ok_or_else(|| corrupt("a notice's key".into()))?),
                reason,
                rejected,
                at_ms: at_ms as u64,
            });
        }
        Ok(out)
    }

    /// Marks a rejection as seen: [`Store::rejections`] no longer lists it.
    pub fn acknowledge_rejection(&mut self, notice: &Rejection) -> Result<()> {
        let tx = self.transaction()?;
        tx.store.conn.execute(
            "UPDATE meldb_rejections SET acknowledged = 1 WHERE authority = ?1 AND seq = ?2",
            params![notice.authority.as_bytes().as_slice(), notice.seq as i64],
        )?;
        tx.commit()
    }

    /// Deletes log entries older than `before_ms` (wall-clock milliseconds),
    /// except deferred conflicts still waiting; returns how many.
    pub fn prune_conflicts(&mut self, before_ms: u64) -> Result<usize> {
        let tx = self.transaction()?;
        let n = tx.store.conn.execute(
            "DELETE FROM meldb_conflicts WHERE at_ms < ?1 AND open = 0",
            [before_ms as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

/// Keeps the notices addressed to `local` in `meldb_rejections`; returns
/// how many were new.
pub(super) fn store_notices(
    conn: &rusqlite::Connection,
    local: SiteId,
    notices: &[Rejection],
) -> Result<usize> {
    let mut new = 0;
    for n in notices.iter().filter(|n| n.writer == local) {
        new += conn
            .prepare_cached(
                "INSERT OR IGNORE INTO meldb_rejections \
                 (authority, seq, writer, tbl, key, reason, rejected, at_ms, kind) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                n.authority.as_bytes().as_slice(),
                n.seq as i64,
                n.writer.as_bytes().as_slice(),
                n.table,
                key_json(&n.key.0),
                n.reason,
                n.rejected,
                n.at_ms as i64,
                n.kind.name(),
            ])?;
    }
    Ok(new)
}

fn corrupt(problem: String) -> crate::Error {
    StorageError::Corrupt {
        what: "meldb_conflicts".into(),
        problem,
    }
    .into()
}

fn key_json(key: &[Value]) -> String {
    values_to_json_text(key)
}

fn key_from_json(text: &str) -> Option<Vec<Value>> {
    let json: Json = serde_json::from_str(text).ok()?;
    json.as_array()?.iter().map(value_from_json).collect()
}

fn read_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ConflictRecord>> {
    let text = |i: usize| r.get::<_, Option<String>>(i);
    let id: i64 = r.get(0)?;
    // A row image that is there but does not read is corruption, not a
    // missing row.
    let row = |i: usize, what: &str| -> Result<Option<Row>> {
        let Some(t) = text(i)? else {
            return Ok(None);
        };
        serde_json::from_str::<Json>(&t)
            .ok()
            .and_then(|j| Row::from_json(&j))
            .map(Some)
            .ok_or_else(|| corrupt(format!("entry {id}: {what} row")))
    };
    let meta = |i: usize| -> Result<Option<WriteMetadata>> {
        text(i)?
            .map(WriteMetadata::new)
            .transpose()
            .map_err(|e| corrupt(format!("entry {id}: metadata: {e}")))
    };
    let key: String = r.get(3)?;
    let outcome: String = r.get(8)?;
    let writer: String = r.get(11)?;
    let site: Vec<u8> = r.get(12)?;
    let record = (|| {
        Ok(ConflictRecord {
            id,
            at_ms: r.get::<_, i64>(1)? as u64,
            table: r.get(2)?,
            key: Key(key_from_json(&key).ok_or_else(|| corrupt(format!("entry {id}: key")))?),
            local: row(4, "local")?,
            incoming: row(5, "incoming")?,
            merged: row(6, "merged")?,
            result: row(7, "result")?,
            outcome: Outcome::from_name(&outcome)
                .ok_or_else(|| corrupt(format!("entry {id}: outcome {outcome:?}")))?,
            resolver: text(9)?,
            reason: text(10)?,
            writer: serde_json::from_str(&writer)
                .map_err(|e| corrupt(format!("entry {id}: writer: {e}")))?,
            writer_site: <[u8; 16]>::try_from(site.as_slice())
                .map(SiteId::from_bytes)
                .map_err(|_| corrupt(format!("entry {id}: writer site")))?,
            open: r.get::<_, i64>(13)? != 0,
            local_metadata: meta(14)?,
            incoming_metadata: meta(15)?,
        })
    })();
    Ok(record)
}
