//! The last change pages read, for askers that ask the same again.
//!
//! A relay's caught-up sessions all ask, after each commit, for what a
//! replica at the same version vector lacks: the first one reads it from
//! SQLite, the others get a copy of that page. A page is kept under the
//! state it was read from: the connection's count of changed rows (SQLite's
//! `total_changes`, which every write of this connection moves, a
//! rolled-back one too), `PRAGMA data_version` (which moves when another
//! connection commits) and the `data_version` the store's in-memory state
//! was last loaded at.
//!
//! Invariant: a page is handed out only while all three are what they were
//! when it was read, so it is the page a read would return then; anything
//! else clears the memo. It holds at most [`MEMO_PAGES`] pages of at most
//! [`MEMO_ROWS`] rows each: a catch-up's big pages are never kept.

use crate::changeset::{ChangeCursor, ChangePage};
use crate::version::VersionVector;

/// Pages kept at once.
pub(super) const MEMO_PAGES: usize = 8;

/// Rows of the largest page kept.
pub(super) const MEMO_ROWS: usize = 256;

/// What a page was read from: the connection's changed-row count, the
/// database's data version, and the store's in-memory state's.
pub(super) type State = (u64, i64, i64);

/// What a page answers.
#[derive(Debug, Clone, PartialEq)]
struct Asked {
    vv: VersionVector,
    from: Option<ChangeCursor>,
    limit: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct PageMemo {
    state: Option<State>,
    pages: Vec<(Asked, ChangePage)>,
}

impl PageMemo {
    /// The page read for this question in `state`, if it is kept.
    pub(super) fn get(
        &self,
        state: State,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
    ) -> Option<ChangePage> {
        if self.state != Some(state) {
            return None;
        }
        self.pages
            .iter()
            .find(|(asked, _)| {
                asked.limit == limit && asked.from.as_ref() == from && asked.vv == *vv
            })
            .map(|(_, page)| page.clone())
    }

    /// Keeps `page`, read for this question in `state`, if it is small;
    /// pages of another state are dropped, and the oldest when full.
    pub(super) fn put(
        &mut self,
        state: State,
        vv: &VersionVector,
        from: Option<&ChangeCursor>,
        limit: usize,
        page: &ChangePage,
    ) {
        if self.state != Some(state) {
            self.pages.clear();
            self.state = Some(state);
        }
        if page.changes.len() > MEMO_ROWS {
            return;
        }
        if self.pages.len() >= MEMO_PAGES {
            self.pages.remove(0);
        }
        self.pages.push((
            Asked {
                vv: vv.clone(),
                from: from.copied(),
                limit,
            },
            page.clone(),
        ));
    }

    /// Pages kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::Changeset;
    use crate::clock::SiteId;

    fn page() -> ChangePage {
        ChangePage {
            changes: Changeset::new(SiteId::from_bytes([1; 16])),
            next: None,
        }
    }

    #[test]
    fn a_page_is_given_only_for_the_same_question_in_the_same_state() {
        let mut memo = PageMemo::default();
        let mut vv = VersionVector::new();
        memo.put((1, 1, 1), &vv, None, 10, &page());
        assert!(memo.get((1, 1, 1), &vv, None, 10).is_some());
        for state in [(2, 1, 1), (1, 2, 1), (1, 1, 2)] {
            assert!(memo.get(state, &vv, None, 10).is_none(), "{state:?}");
        }
        assert!(memo.get((1, 1, 1), &vv, None, 11).is_none());
        vv.insert(SiteId::from_bytes([2; 16]), 1, 1);
        assert!(memo.get((1, 1, 1), &vv, None, 10).is_none());
    }

    #[test]
    fn a_new_state_clears_and_the_memo_stays_bounded() {
        let mut memo = PageMemo::default();
        let site = SiteId::from_bytes([2; 16]);
        for n in 1..=(MEMO_PAGES as u64 + 3) {
            let mut vv = VersionVector::new();
            vv.insert(site, 1, n);
            memo.put((1, 1, 1), &vv, None, 10, &page());
        }
        assert_eq!(memo.len(), MEMO_PAGES);
        let mut oldest = VersionVector::new();
        oldest.insert(site, 1, 1);
        assert!(memo.get((1, 1, 1), &oldest, None, 10).is_none());
        memo.put((2, 1, 1), &oldest, None, 10, &page());
        assert_eq!(memo.len(), 1);
    }
}
