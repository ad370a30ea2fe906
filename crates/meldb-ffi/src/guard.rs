//! Which databases the current thread is inside a locked callback of.
//!
//! A resolver runs while its database applies changes, a mutator while it
//! runs in a write transaction: both with the database's lock held. A
//! foreign callback that called back into that database would wait for
//! the lock its own caller holds, forever. Invariant: while a thread runs
//! such a callback for database `id`, [`check`] on that thread refuses
//! every call into `id` with [`MeldbError::Reentrant`] instead of waiting.
//! (Live-query callbacks and sync listeners run with no lock held and are
//! not marked: they may call in.)

use crate::error::MeldbError;
use std::cell::RefCell;

thread_local! {
    static INSIDE: RefCell<Vec<(u64, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as inside `what` (a resolver, a mutator) of database
/// `id` until the returned guard drops.
pub(crate) fn enter(id: u64, what: &'static str) -> Inside {
    INSIDE.with(|inside| inside.borrow_mut().push((id, what)));
    Inside
}

/// The mark [`enter`] set; dropping it lifts the mark.
pub(crate) struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|inside| {
            inside.borrow_mut().pop();
        });
    }
}

/// Refuses a call into database `id` from inside one of its own locked
/// callbacks; `call` names the call, for the message.
pub(crate) fn check(id: u64, call: &str) -> Result<(), MeldbError> {
    let within = INSIDE.with(|inside| {
        inside
            .borrow()
            .iter()
            .rev()
            .find(|(db, _)| *db == id)
            .map(|(_, what)| *what)
    });
    match within {
        None => Ok(()),
        Some(what) => Err(MeldbError::Reentrant {
            message: format!(
                "{call} was called from inside a {what} of the same database, which runs while \
                 the database is locked and would wait for itself; {}",
                match what {
                    "mutator" => "read and write through the transaction the mutator is given",
                    _ => "decide from the conflict the resolver is given",
                }
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_inside_a_callback_of_the_same_database_is_refused_and_others_pass() {
        assert!(check(1, "get").is_ok());
        {
            let _inside = enter(1, "resolver");
            let refused = check(1, "get");
            assert!(
                matches!(refused, Err(MeldbError::Reentrant { .. })),
                "{refused:?}"
            );
            assert!(
                check(2, "get").is_ok(),
                "another database is not locked by this callback"
            );
        }
        assert!(
            check(1, "get").is_ok(),
            "the mark is lifted when the callback returns"
        );
    }
}
