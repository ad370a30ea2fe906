//! Calling application code (resolvers, mutators) with its panics caught,
//! reported as an error, and kept off stderr.
//!
//! Invariant: the process's panic hook is chained, never replaced. The
//! first [`catch`] installs, once per process, a hook that calls the hook
//! it found for every panic except those raised on a thread while it is
//! inside [`catch`] (a thread-local depth says so). Those are caught and
//! become the caller's error, so printing them too would report one
//! failure twice. Under `panic = "abort"` nothing is caught, and the
//! previous hook always runs.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

static CHAIN: Once = Once::new();

/// Runs `f` (application code) and returns what it returned, or the
/// message of its panic. The panic is not printed: the caller reports it
/// through its error.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    chain_hook();
    let _inside = Inside::enter();
    panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|payload| crate::engine::panic_message(payload.as_ref()))
}

/// Installs the filtering hook in front of the current one, once.
fn chain_hook() {
    // The hook cannot be changed while this thread unwinds; a later call
    // installs it.
    if std::thread::panicking() {
        return;
    }
    CHAIN.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !inside_catch() {
                previous(info);
            }
        }));
    });
}

/// Whether a panic raised now, on this thread, will be caught by [`catch`].
fn inside_catch() -> bool {
    cfg!(panic = "unwind") && DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// This thread's depth inside [`catch`], one more until dropped.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        DEPTH.with(|d| d.set(d.get().saturating_add(1)));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const CHILD: &str = "MELDB_APP_PANIC_CHILD";

    #[test]
    fn a_caught_panic_is_returned_and_the_depth_unwinds() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        // Nested: the inner panic is the inner call's error.
        let outer = catch(|| catch(|| -> () { panic!("inner") }));
        assert_eq!(outer, Ok(Err("inner".into())));
        assert!(!inside_catch());
    }

    /// Runs in a child process (see below): a hook installed before meldb's
    /// sees the panic outside `catch` and not the one inside.
    #[test]
    fn child_panics_inside_and_outside_catch() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        panic::set_hook(Box::new(|info| {
            let message = crate::engine::panic_message(info.payload());
            let _ = writeln!(std::io::stderr(), "previous hook saw: {message}");
        }));
        assert_eq!(
            catch(|| -> () { panic!("resolver exploded") }),
            Err("resolver exploded".into())
        );
        let elsewhere = panic::catch_unwind(|| -> () { panic!("app exploded") });
        assert!(elsewhere.is_err());
        // On another thread, outside `catch`, too.
        let thread = std::thread::spawn(|| -> () { panic!("thread exploded") }).join();
        assert!(thread.is_err());
    }

    #[test]
    fn the_previous_hook_sees_every_panic_but_the_caught_ones(
    ) -> Result<(), Box<dyn std::error::Error>> {
        if std::env::var_os(CHILD).is_some() {
            return Ok(());
        }
        let output = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "app_panic::tests::child_panics_inside_and_outside_catch",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{stdout}");
        assert!(
            stderr.contains("previous hook saw: app exploded"),
            "{stderr}"
        );
        assert!(
            stderr.contains("previous hook saw: thread exploded"),
            "{stderr}"
        );
        assert!(!stderr.contains("resolver exploded"), "{stderr}");
        Ok(())
    }
}
