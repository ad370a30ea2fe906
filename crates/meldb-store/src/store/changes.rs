//! Delta sync: the changes another replica lacks.
//!
//! `meldb_dots` holds, for every row and every site in the row's clock, that
//! site's latest dot on the row. Walking one site's entries in sequence
//! order, an entry `seq` whose predecessor entry is `prev` stands for all of
//! that site's dots in `prev+1..=seq`: each is either this row's, or was
//! superseded by a later write of the same site to the row it touched (whose
//! own entry comes later). So a row is sent when the asker lacks any dot of
//! a range it stands for (even if it has the row's own dot: otherwise a
//! superseded dot below it would never be covered and the asker's version
//! vector would keep a hole), and it carries those ranges (intersected with
//! what this replica itself has) as its covers.
//!
//! Pages: [`Store::changes_page`] returns the wanted rows in (table id, row
//! id) order, at most `limit` of them after a [`ChangeCursor`]. Each page
//! is read on its own, from the state at that moment: the walk runs again
//! and keeps only the first `limit` rows past the cursor (a row is kept
//! with all its covers or not at all), so no state lives between pages.
//! The invariant across pages: every cover a page carries is true of the
//! state the row was read in, and stays true (a dot once superseded stays
//! superseded), so acknowledging a page never claims a dot whose effect
//! the receiver lacks. A write between pages to a row after the cursor
//! arrives in a later page; one to a row before it is in no page of this
//! read, and its dot in no cover sent, so the asker's version vector still
//! lacks it and the next read, from that vector, sends it. Each page walks
//! the asker's missing dot entries again (the cost of a page is that walk
//! plus its rows); [`Store::changes_since`] is one page without a limit.

use super::rows;
use super::Store;
use crate::changeset::{ChangeCursor, ChangePage, Changeset, Cover, RowChange, TableChanges};
use crate::error::Result;
use crate::version::{SeqRanges, VersionVector};
use rusqlite::OptionalExtension;
use std::collections::BTreeMap;

/// The rows a read sends, by (table id, row id), with their covers.
type Wanted = BTreeMap<(i64, i64), Vec<Cover>>;

impl Store {
    /// Everything this replica has that a replica with version vector `vv`
    /// lacks, as one changeset. `Changeset::split` cuts it into batches that
    /// can be applied independently.
    ///
    /// # Errors
    ///
    /// Only [`Error::Storage`](crate::Error::Storage): SQLite failed, or a
    /// stored row's metadata is corrupt (the error names the table).
    pub fn changes_since(&self, vv: &VersionVector) -> Result<Changeset> {
        let mut changes = self.changes_page(vv, None, usize::MAX)?.changes;
        for table in &mut changes.tables {
            table.drop_unused_columns();
        }
        Ok(changes)
    }

    /// How many rows carry a write of this replica that a replica with
    /// version vector `vv` lacks: the local changes it has not yet
    /// received (a sync client's uploads not yet acknowledged, given what
    /// its peer acknowledged). Each row counts once however often it was
    /// written; a row is counted exactly when [`Store::changes_since`]
    /// would send it for one of this replica's own dots. Reads only this
    /// site's dots past the first one `vv` lacks, so it is cheap when
    /// little is pending.
    ///
    /// # Errors
    ///
    /// Only [`Error::Storage`](crate::Error::Storage): SQLite failed.
    pub fn local_changes_missing_from(&self, vv: &VersionVector) -> Result<u64> {
        // Pending mutations' speculative effects are never sent.
        let _canonical = self.canonical_view()?;
        let Some(idx) = self.sites.find(&self.local) else {
            return Ok(0);
        };
        let empty = SeqRanges::default();
        let asker = vv.site(&self.local).unwrap_or(&empty);
        let start = asker.first_missing();
        if start > self.replica.last_seq && self.data_version()? == self.data_version {
            // It has every dot this site made (and no other connection
            // made more since `last_seq` was loaded).
            return Ok(0);
        }
        let mut prev = self.dot_before(idx, start)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq FROM meldb_dots WHERE site = ?1 AND seq >= ?2 ORDER BY seq",
        )?;
        let mut entries = stmt.query(rusqlite::params![idx, start as i64])?;
        let mut missing = 0;
        while let Some(entry) = entries.next()? {
            let seq = entry.get::<_, i64>(0)? as u64;
            // As in `wanted_rows`: the row stands for `prev+1..=seq`.
            if !asker.contains_all(prev + 1, seq) {
                missing += 1;
            }
            prev = seq;
        }
        Ok(missing)
    }

    /// At most `limit` (at least one) of the rows a replica with version
    /// vector `vv` lacks, after `from` (from the start if `None`), in table
    /// then row order, with the cursor to continue after them. Pages list
    /// every value column of their tables; join them with
    /// `Changeset::append` and drop the unused columns of each table once
    /// its last page is in (see the module docs for what holds when the
    /// store changes between pages).
    pub fn changes_page(
        &self,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
    ) -> Result<ChangePage> {
        let version = self.data_version()?;
        let state = (self.conn.total_changes(), version, self.data_version);
        if let Some(page) = self.page_memo.borrow().get(state, vv, from, limit) {
            return Ok(page);
        }
        let page = {
            // Pending mutations' speculative effects are never sent.
            let _canonical = self.canonical_view()?;
            // Another connection's commits are in no in-memory coverage
            // until this handle next writes: then every site is walked.
            let coverage_is_current = version == self.data_version;
            let (wanted, more) = self.wanted_rows(
                vv,
                from.map(|c| (c.table(), c.row())),
                limit,
                coverage_is_current,
            )?;
            let next = match (more, wanted.keys().next_back()) {
                (true, Some(&(tbl, rid))) => Some(ChangeCursor::after(tbl, rid)),
                _ => None,
            };
            ChangePage {
                changes: self.read_wanted(wanted)?,
                next,
            }
        };
        self.page_memo
            .borrow_mut()
            .put(state, vv, from, limit, &page);
        Ok(page)
    }

    /// `PRAGMA data_version` now: it differs from `self.data_version` when
    /// another connection committed since this handle loaded its state.
    fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?)
    }

    /// The last dot of site `idx` before `start` (0 if none): the rows
    /// from `start` on stand for the ranges after it (see `wanted_rows`).
    fn dot_before(&self, idx: u32, start: u64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT max(seq) FROM meldb_dots WHERE site = ?1 AND seq < ?2")?
            .query_row(rusqlite::params![idx, start as i64], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
            .unwrap_or(0) as u64)
    }

    /// The first `limit` rows after `after` that the asker with `vv` lacks,
    /// with their covers, and whether more follow. `coverage_is_current`:
    /// no other connection committed since this handle loaded its state,
    /// so the sites' bounds on their dot entries hold, and a site the
    /// asker has every dot of up to its bound is skipped without a query.
    fn wanted_rows(
        &self,
        vv: &VersionVector,
        after: Option<(i64, i64)>,
        limit: usize,
        coverage_is_current: bool,
    ) -> Result<(Wanted, bool)> {
        let limit = limit.max(1);
        let mut wanted = Wanted::new();
        // Rows at or past `bound` are left to a later page. It only ever
        // moves down, so every row kept below it has all its covers.
        let mut bound: Option<(i64, i64)> = None;
        let local_ranges = {
            let mut r = SeqRanges::default();
            r.insert(1, self.replica.last_seq);
            r
        };
        let empty = SeqRanges::default();
        for (idx, site) in self.sites.iter() {
            let asker = vv.site(&site).unwrap_or(&empty);
            let mine = if site == self.local {
                &local_ranges
            } else {
                self.replica.coverage.site(&site).unwrap_or(&empty)
            };
            let start = asker.first_missing();
            // No entry of this site's in `meldb_dots` is past its bound
            // (`Sites::max_dot`): an asker that has every dot up to it
            // lacks none of this site's rows, and its walk would read
            // nothing. A caught-up peer costs no query per site. (The
            // coverage is no such bound: a row's clock may hold a dot no
            // cover brought.)
            if coverage_is_current && start > self.sites.max_dot(idx) {
                continue;
            }
            let mut prev = self.dot_before(idx, start)?;
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, tbl, rid FROM meldb_dots WHERE site = ?1 AND seq >= ?2 ORDER BY seq",
            )?;
            let mut entries = stmt.query(rusqlite::params![idx, start as i64])?;
            while let Some(entry) = entries.next()? {
                let seq = entry.get::<_, i64>(0)? as u64;
                let row: (i64, i64) = (entry.get(1)?, entry.get(2)?);
                let in_page = after.is_none_or(|a| row > a) && bound.is_none_or(|b| row < b);
                // Sent when the asker lacks this row's dot, or a superseded
                // dot of the range the row stands for.
                if in_page && !asker.contains_all(prev + 1, seq) {
                    let covers = wanted.entry(row).or_default();
                    for (first, last) in mine.intersect(prev + 1, seq) {
                        covers.push(Cover { site, first, last });
                    }
                    if wanted.len() > limit {
                        bound = wanted.pop_last().map(|(row, _)| row);
                    }
                }
                prev = seq;
            }
        }
        Ok((wanted, bound.is_some()))
    }

    /// Reads the wanted rows, in their order, listing every value column.
    fn read_wanted(&self, wanted: Wanted) -> Result<Changeset> {
        let mut changeset = Changeset::new(self.local);
        let mut wanted = wanted.into_iter().peekable();
        while let Some(((tbl, first), covers)) = wanted.next() {
            let layout = self
                .tables
                .get(tbl as usize)
                .ok_or_else(|| rows::corrupt("meldb_dots", format!("unknown table id {tbl}")))?;
            // Rows of consecutive rids are read with one range scan: a full
            // catch-up reads whole tables in rid order, not row by row.
            let mut run = vec![covers];
            let mut last = first;
            while let Some(covers) = wanted.next_if(|((t, rid), _)| *t == tbl && *rid == last + 1) {
                run.push(covers.1);
                last += 1;
            }
            let mut run = run.into_iter();
            let mut read = Vec::with_capacity(run.len());
            rows::read_rows(
                &self.conn,
                layout,
                &self.sites,
                &layout.sql.select_rid_range,
                [first, last],
                |key, state| {
                    read.push((key, state));
                    Ok(())
                },
            )?;
            if read.len() as i64 != last - first + 1 {
                return Err(rows::corrupt(
                    "meldb_dots",
                    format!(
                        "rows {first}..={last} of table {:?}: {} of them are missing",
                        layout.name(),
                        last - first + 1 - read.len() as i64
                    ),
                )
                .into());
            }
            let rows = read
                .into_iter()
                .zip(run.by_ref())
                .map(|((key, state), covers)| RowChange { key, state, covers });
            match changeset.tables.last_mut() {
                Some(t) if t.table == layout.table.name => t.rows.extend(rows),
                _ => changeset.tables.push(TableChanges {
                    table: layout.table.name.clone(),
                    columns: layout
                        .value_cols
                        .iter()
                        .map(|&i| layout.table.columns[i].name.clone())
                        .collect(),
                    rows: rows.collect(),
                }),
            }
        }
        Ok(changeset)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_schema;
    use crate::changeset::{ChangeCursor, Changeset};
    use crate::clock::SiteId;
    use crate::error::Result;
    use crate::store::{Store, StoreOptions};
    use crate::version::VersionVector;

    fn store(n: u8) -> Result<Store> {
        Ok(StoreOptions::new()
            .site_id(SiteId::from_bytes([n; 16]))
            .open_in_memory(&test_schema())?)
    }

    fn insert(store: &mut Store, skus: &[&str]) -> Result<()> {
        store.write(|tx| {
            for sku in skus {
                tx.insert("item", &[("sku", (*sku).into())])?;
            }
            Ok(())
        })
    }

    /// Two sites' rows, some written over by the other site, so rows carry
    /// covers of both.
    fn two_sites() -> Result<Store> {
        let (mut a, mut b) = (store(1)?, store(2)?);
        insert(&mut a, &["a1", "a2", "a3"])?;
        insert(&mut b, &["b1", "b2"])?;
        a.apply(&b.changes_since(&a.version_vector())?)?;
        a.write(|tx| tx.set("item", "b1", "name", "by a"))?;
        b.write(|tx| tx.set("item", "b2", "name", "by b"))?;
        a.apply(&b.changes_since(&a.version_vector())?)?;
        Ok(a)
    }

    /// Every page of `limit` rows, in order, and the changeset they join to.
    fn paged(store: &Store, vv: &VersionVector, limit: usize) -> Result<(usize, Changeset)> {
        let mut joined = Changeset::new(store.site_id());
        let (mut pages, mut from): (usize, Option<ChangeCursor>) = (0, None);
        loop {
            let page = store.changes_page(vv, from.as_ref(), limit)?;
            assert!(page.changes.len() <= limit.max(1));
            pages += 1;
            joined.append(page.changes);
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        for table in &mut joined.tables {
            table.drop_unused_columns();
        }
        Ok((pages, joined))
    }

    #[test]
    fn pages_of_one_row_join_to_the_whole_changeset() -> Result<()> {
        let a = two_sites()?;
        let mut partial = store(3)?;
        insert(&mut partial, &["c1"])?;
        partial.apply(&a.changes_since(&VersionVector::new())?.split(2)[0])?;
        for vv in [VersionVector::new(), partial.version_vector()] {
            let whole = a.changes_since(&vv)?;
            let (pages, joined) = paged(&a, &vv, 1)?;
            assert_eq!(joined, whole);
            assert_eq!(pages, whole.len().max(1));
        }
        Ok(())
    }

    #[test]
    fn a_limit_above_the_row_count_is_one_last_page() -> Result<()> {
        let a = two_sites()?;
        let whole = a.changes_since(&VersionVector::new())?;
        let page = a.changes_page(&VersionVector::new(), None, whole.len() + 1)?;
        assert_eq!(page.next, None);
        let (pages, joined) = paged(&a, &VersionVector::new(), 1000)?;
        assert_eq!((pages, joined), (1, whole));
        let caught_up = a.changes_page(&a.version_vector(), None, 1)?;
        assert!(caught_up.changes.is_empty() && caught_up.next.is_none());
        Ok(())
    }

    #[test]
    fn a_write_between_pages_is_in_a_later_page_or_the_next_read() -> Result<()> {
        let mut a = store(1)?;
        insert(&mut a, &["r1", "r2", "r3"])?;
        let mut b = store(2)?;
        let none = VersionVector::new();
        let first = a.changes_page(&none, None, 1)?;
        assert!(first.next.is_some(), "more pages expected");
        b.apply(&first.changes)?;
        // Behind the cursor (r1, already sent) and ahead of it (a new row).
        a.write(|tx| tx.set("item", "r1", "name", "changed"))?;
        let r1_dot = a.version_vector().site(&a.site_id()).map_or(0, |r| r.max());
        insert(&mut a, &["r4"])?;
        let mut from = first.next;
        let mut later = Vec::new();
        while let Some(cursor) = from {
            let page = a.changes_page(&none, Some(&cursor), 1)?;
            for table in &page.changes.tables {
                later.extend(table.rows.iter().map(|r| r.key.clone()));
            }
            b.apply(&page.changes)?;
            from = page.next;
        }
        let keys: Vec<_> = ["r2", "r3", "r4"].map(|k| vec![k.into()]).to_vec();
        assert_eq!(later, keys);
        // r1's new dot travelled in no page: b's version vector lacks it,
        // so the next read from that vector carries it.
        assert!(!b.version_vector().contains(&a.site_id(), r1_dot));
        assert_ne!(a.digest()?, b.digest()?);
        b.apply(&a.changes_since(&b.version_vector())?)?;
        assert_eq!(a.digest()?, b.digest()?);
        assert!(a.changes_since(&b.version_vector())?.is_empty());
        Ok(())
    }

    /// The walk's statements are prepared once and reused: reading from
    /// different version vectors (different bound sequence numbers) does
    /// not compile them again (`fix_plans`; before it, every read did).
    #[test]
    fn reads_from_other_vectors_reuse_the_prepared_walk() -> Result<()> {
        let a = two_sites()?;
        let mut vv = VersionVector::new();
        a.changes_since(&vv)?;
        for seq in 1..=3 {
            vv.insert(a.site_id(), 1, seq);
            a.changes_since(&vv)?;
        }
        for sql in [
            "SELECT max(seq) FROM meldb_dots WHERE site = ?1 AND seq < ?2",
            "SELECT seq, tbl, rid FROM meldb_dots WHERE site = ?1 AND seq >= ?2 ORDER BY seq",
        ] {
            let stmt = a.conn.prepare_cached(sql)?;
            assert!(
                stmt.get_status(rusqlite::StatementStatus::Run) >= 4,
                "{sql}"
            );
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_page_asked_again_before_a_change_is_not_read_again() -> Result<()> {
        let mut a = two_sites()?;
        let walk =
            "SELECT seq, tbl, rid FROM meldb_dots WHERE site = ?1 AND seq >= ?2 ORDER BY seq";
        let runs = |a: &Store| -> Result<i32> {
            Ok(a.conn
                .prepare_cached(walk)?
                .get_status(rusqlite::StatementStatus::Run))
        };
        let none = VersionVector::new();
        let first = a.changes_page(&none, None, 100)?;
        let read = runs(&a)?;
        assert!(read > 0);
        assert_eq!(a.changes_page(&none, None, 100)?, first);
        assert_eq!(runs(&a)?, read, "the second ask was read from SQLite again");
        // A write moves the state: the next ask reads, and sees it.
        insert(&mut a, &["a4"])?;
        let after = a.changes_page(&none, None, 100)?;
        assert!(runs(&a)? > read);
        assert_eq!(after.changes.len(), first.changes.len() + 1);
        // A rolled-back write changed nothing, but the page is read again.
        let read = runs(&a)?;
        let failed: Result<()> = a.write(|tx| {
            tx.insert("item", &[("sku", "a5".into())])?;
            tx.insert("item", &[("sku", "a5".into())])
        });
        assert!(failed.is_err());
        assert_eq!(a.changes_page(&none, None, 100)?, after);
        assert!(runs(&a)? > read);
        Ok(())
    }

    #[test]
    fn another_connections_commit_is_in_the_next_page(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("two.db");
        let schema = test_schema();
        let mut h1 = StoreOptions::new()
            .site_id(SiteId::from_bytes([1; 16]))
            .open(&path, &schema)?;
        let mut remote = store(2)?;
        insert(&mut remote, &["r1", "r2"])?;
        h1.apply(&remote.changes_since(&VersionVector::new())?)?;
        // An asker with everything h1 has: nothing to send.
        let caught_up = h1.version_vector();
        assert!(h1.changes_page(&caught_up, None, 100)?.changes.is_empty());
        // A second handle on the file receives the remote's next write.
        let mut h2 = Store::open(&path, &schema)?;
        insert(&mut remote, &["r3"])?;
        h2.apply(&remote.changes_since(&h2.version_vector())?)?;
        drop(h2);
        // h1's own state is older than the file: the page is read again,
        // and the walk does not trust h1's coverage to skip the remote.
        let page = h1.changes_page(&caught_up, None, 100)?;
        let skus: Vec<String> = page.changes.tables[0]
            .rows
            .iter()
            .map(|r| format!("{:?}", r.key))
            .collect();
        assert_eq!(page.changes.len(), 1, "{skus:?}");
        assert!(skus[0].contains("r3"), "{skus:?}");
        Ok(())
    }

    #[test]
    fn a_row_whose_dot_no_cover_brought_is_still_sent_on(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        // s writes three rows; c receives all three, but r3 without its
        // cover (a sender whose coverage lagged its rows), so c's coverage
        // of s ends at 2 while r3's dot 3 is in c's rows.
        let mut s = store(1)?;
        insert(&mut s, &["r1", "r2", "r3"])?;
        let mut changes = s.changes_since(&VersionVector::new())?;
        for row in &mut changes.tables[0].rows {
            if format!("{:?}", row.key).contains("r3") {
                row.covers.clear();
            }
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.db");
        let open = || {
            StoreOptions::new()
                .site_id(SiteId::from_bytes([2; 16]))
                .open(&path, &test_schema())
        };
        let mut c = open()?;
        c.apply(&changes)?;
        let mut has = VersionVector::new();
        has.insert(s.site_id(), 1, 2);
        assert_eq!(
            c.version_vector().site(&s.site_id()),
            has.site(&s.site_id())
        );
        // An asker with what c's coverage says c has of s still gets r3:
        // right after the apply, and after c is opened again.
        for reopened in [false, true] {
            if reopened {
                drop(c);
                c = open()?;
            }
            let page = c.changes_page(&has, None, 100)?;
            let keys: Vec<String> = page
                .changes
                .tables
                .iter()
                .flat_map(|t| &t.rows)
                .map(|r| format!("{:?}", r.key))
                .collect();
            assert_eq!(keys.len(), 1, "reopened {reopened}: {keys:?}");
            assert!(keys[0].contains("r3"), "{keys:?}");
        }
        Ok(())
    }
}
