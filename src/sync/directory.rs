//! Namespaces on disk: a [`DirectoryProvider`] keeps each namespace's
//! replica in a database file of its own under one data directory,
//! `<dir>/<namespace>.db`, so a relay serves many isolated namespaces (a
//! team, a user, a document set) and a client of one never reads, writes
//! or learns of another's data.
//!
//! Invariants:
//!
//! - A namespace's name maps to exactly one file, inside the directory:
//!   names are 1 to 64 lowercase ASCII letters, digits, `_` and `-`, starting with
//!   a letter or a digit, so no name is a path, a hidden file or an option.
//!   Any other name is refused as unknown, and nothing is created.
//! - One [`SharedStore`] per namespace for the provider's life: every
//!   session of a namespace syncs the same handle (so one clock, one
//!   change signal), opened on first use. Two first sessions of one
//!   namespace open it once; opening one namespace never waits on
//!   another's open (each namespace has its own slot, and the map of
//!   slots is locked only to find one).
//! - A namespace whose file does not exist is created only if the
//!   [`Creation`] policy allows it; otherwise it is
//!   [`SyncError::UnknownNamespace`] and the directory is unchanged. The
//!   default namespace is always served (the relay greets connections
//!   with it before their token is checked).
//! - Each store is opened with the provider's schema and options, then
//!   handed to its setup function (resolvers, mutators) before any
//!   session sees it; a setup that fails serves nothing for that
//!   namespace.

use super::error::SyncError;
use super::provider::{Namespace, ReplicaProvider};
use super::shared::SharedStore;
use crate::schema::Schema;
use crate::store::{Store, StoreOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Which namespaces a [`DirectoryProvider`] may create a database for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Creation {
    /// Only namespaces whose database already exists (and the default).
    Existing,
    /// Those, and the ones listed (the relay's config names them).
    Listed(BTreeSet<Namespace>),
    /// Any valid name a token grants (a token's grant decides).
    Any,
}

/// What runs on each namespace's store once it is open and before any
/// session syncs it: register resolvers and mutators, set the authority.
pub type Setup = Arc<dyn Fn(&Namespace, &mut Store) -> crate::Result<()> + Send + Sync>;

/// One database per namespace under a directory.
#[derive(Clone)]
pub struct DirectoryProvider {
    dir: PathBuf,
    schema: Schema,
    options: StoreOptions,
    creation: Creation,
    setup: Option<Setup>,
    open: Arc<Mutex<BTreeMap<Namespace, Arc<Slot>>>>,
}

/// One namespace's store, once open; `opening` is held by the one
/// session that opens it, so a second waits for that open rather than
/// opening the file again.
#[derive(Default)]
struct Slot {
    store: OnceLock<SharedStore>,
    opening: Mutex<()>,
}

impl fmt::Debug for DirectoryProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryProvider")
            .field("dir", &self.dir)
            .field("creation", &self.creation)
            .field("setup", &self.setup.is_some())
            .finish_non_exhaustive()
    }
}

impl DirectoryProvider {
    /// Namespaces under `dir` (created if missing), each a store of
    /// `schema` opened with `options`; only existing ones are served
    /// until [`DirectoryProvider::creation`] says otherwise. The default
    /// namespace's database is opened (or created) now, so a bad
    /// directory or schema is an error at start, not at the first client.
    pub fn open(
        dir: impl AsRef<Path>,
        schema: &Schema,
        options: StoreOptions,
    ) -> Result<DirectoryProvider, SyncError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let provider = DirectoryProvider {
            dir,
            schema: schema.clone(),
            options,
            creation: Creation::Existing,
            setup: None,
            open: Arc::default(),
        };
        provider.replica(&Namespace::default())?;
        Ok(provider)
    }

    /// Which namespaces may be created.
    pub fn creation(mut self, creation: Creation) -> DirectoryProvider {
        self.creation = creation;
        self
    }

    /// Runs `setup` on every namespace's store when it opens (the default
    /// namespace's, already open, runs it now).
    pub fn setup(
        mut self,
        setup: impl Fn(&Namespace, &mut Store) -> crate::Result<()> + Send + Sync + 'static,
    ) -> Result<DirectoryProvider, SyncError> {
        let setup: Setup = Arc::new(setup);
        let open: Vec<_> = self
            .lock()
            .iter()
            .filter_map(|(namespace, slot)| Some((namespace.clone(), slot.store.get()?.clone())))
            .collect();
        for (namespace, store) in open {
            setup(&namespace, &mut store.lock())?;
        }
        self.setup = Some(setup);
        Ok(self)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file of `namespace`, `None` for a name that is not a
    /// valid namespace name.
    pub fn path_of(&self, namespace: &Namespace) -> Option<PathBuf> {
        DirectoryProvider::file_in(&self.dir, namespace)
    }

    /// The database file of `namespace` under a data directory `dir`,
    /// without opening anything (`meldb backup --data-dir`); `None` for a
    /// name that is not a valid namespace name.
    pub fn file_in(dir: &Path, namespace: &Namespace) -> Option<PathBuf> {
        valid_name(namespace.as_str()).then(|| dir.join(format!("{namespace}.db")))
    }

    /// Copies `namespace`'s database to a new file at `to` while the relay
    /// keeps serving it (SQLite's online backup, on a connection of its
    /// own: sessions are not held up; see [`Store::backup_file`]). The
    /// copy of an encrypted namespace is encrypted with its key. It
    /// blocks: async code runs it on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`SyncError::UnknownNamespace`] for a namespace with no database
    /// here; [`SyncError::Store`] with [`crate::Error::Backup`] when the
    /// backup was not made.
    pub fn backup(
        &self,
        namespace: &Namespace,
        to: impl AsRef<Path>,
    ) -> Result<crate::BackupReport, SyncError> {
        let path = self
            .path_of(namespace)
            .filter(|p| p.is_file())
            .ok_or_else(|| SyncError::UnknownNamespace(namespace.clone()))?;
        // The namespaces' key, when they are encrypted: the copy is
        // encrypted with it.
        match self.options.key() {
            Some(key) => Store::backup_file_with_key(path, to, key),
            None => Store::backup_file(path, to),
        }
        .map_err(|e| SyncError::Store(e.into()))
    }

    /// The namespaces with a database in the directory, in name order.
    pub fn namespaces(&self) -> Result<Vec<Namespace>, SyncError> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".db")) else {
                continue;
            };
            if valid_name(stem) {
                found.push(Namespace::new(stem));
            }
        }
        found.sort();
        Ok(found)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Namespace, Arc<Slot>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens `namespace`'s database at `path` and runs the setup on it.
    fn open_store(&self, namespace: &Namespace, path: &Path) -> Result<SharedStore, SyncError> {
        let mut store = self
            .options
            .clone()
            .open(path, &self.schema)
            .map_err(crate::Error::from)?;
        if let Some(setup) = &self.setup {
            setup(namespace, &mut store)?;
        }
        tracing::info!(%namespace, path = %path.display(), "namespace opened");
        Ok(SharedStore::new(store))
    }

    fn may_create(&self, namespace: &Namespace) -> bool {
        *namespace == Namespace::default()
            || match &self.creation {
                Creation::Existing => false,
                Creation::Listed(names) => names.contains(namespace),
                Creation::Any => true,
            }
    }
}

impl ReplicaProvider for DirectoryProvider {
    type Replica = SharedStore;

    fn replica(&self, namespace: &Namespace) -> Result<SharedStore, SyncError> {
        let unknown = || SyncError::UnknownNamespace(namespace.clone());
        let path = self.path_of(namespace).ok_or_else(unknown)?;
        let slot = {
            let mut open = self.lock();
            match open.get(namespace) {
                Some(slot) => Arc::clone(slot),
                // Checked before a slot is made, so names that are refused
                // never grow the map.
                None if !path.exists() && !self.may_create(namespace) => return Err(unknown()),
                None => Arc::clone(open.entry(namespace.clone()).or_default()),
            }
        };
        if let Some(store) = slot.store.get() {
            return Ok(store.clone());
        }
        let opening = slot.opening.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = slot.store.get() {
            return Ok(store.clone());
        }
        match self.open_store(namespace, &path) {
            Ok(store) => {
                let store = slot.store.get_or_init(|| store).clone();
                drop(opening);
                Ok(store)
            }
            Err(e) => {
                drop(opening);
                // A failed open leaves no slot behind (the next session
                // tries again), unless another session made one since.
                let mut open = self.lock();
                if open
                    .get(namespace)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.store.get().is_none())
                {
                    open.remove(namespace);
                }
                Err(e)
            }
        }
    }
}

/// Whether `name` may name a namespace (see the module's invariants).
fn valid_name(name: &str) -> bool {
    super::namespace::is_plain_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_backed_up_while_served_and_an_unknown_one_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let schema = Schema::from_toml_str(
            r#"
            name = "notes"
            version = 1
            [[table]]
            name = "note"
            primary_key = ["id"]
            [[table.column]]
            name = "id"
            type = "text"
            "#,
            "notes.toml",
        )?;
        let dir = tempfile::tempdir()?;
        let provider = DirectoryProvider::open(dir.path(), &schema, StoreOptions::new())?
            .creation(Creation::Any);
        let team = Namespace::new("team-a");
        let store = provider.replica(&team)?;
        store.write(|tx| tx.insert("note", &[("id", "n1".into())]))?;
        let to = dir.path().join("backups").join("team-a.db");
        std::fs::create_dir(dir.path().join("backups"))?;
        let report = provider.backup(&team, &to)?;
        assert_eq!(report.rows, vec![("note".to_string(), 1)]);
        // The relay's handle is still the one serving, and still writes.
        store.write(|tx| tx.insert("note", &[("id", "n2".into())]))?;
        // A namespace with no database is refused by name, and nothing is
        // created (for it or under the backup's name).
        let ghost = provider.backup(&Namespace::new("ghost"), dir.path().join("g.db"));
        assert!(matches!(ghost, Err(SyncError::UnknownNamespace(ref n)) if n.as_str() == "ghost"));
        let bad = provider.backup(&Namespace::new("../x"), dir.path().join("h.db"));
        assert!(matches!(bad, Err(SyncError::UnknownNamespace(_))));
        assert!(!dir.path().join("ghost.db").exists() && !dir.path().join("g.db").exists());
        assert_eq!(
            DirectoryProvider::file_in(dir.path(), &team),
            Some(dir.path().join("team-a.db"))
        );
        Ok(())
    }

    fn notes() -> Result<Schema, Box<dyn std::error::Error>> {
        Ok(Schema::from_toml_str(
            r#"
            name = "notes"
            version = 1
            [[table]]
            name = "note"
            primary_key = ["id"]
            [[table.column]]
            name = "id"
            type = "text"
            "#,
            "notes.toml",
        )?)
    }

    /// A namespace whose open is slow (its setup waits) holds up neither
    /// another namespace's first session nor an open one's; a second first
    /// session of the slow namespace waits for that open and gets the same
    /// store, set up once.
    #[test]
    fn a_slow_open_holds_up_only_its_own_namespace() -> Result<(), Box<dyn std::error::Error>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;
        let dir = tempfile::tempdir()?;
        let (release, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let (entered, in_setup) = mpsc::channel::<()>();
        let entered = Mutex::new(entered);
        let slow_setups = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&slow_setups);
        let provider = DirectoryProvider::open(dir.path(), &notes()?, StoreOptions::new())?
            .creation(Creation::Any)
            .setup(move |namespace, _store| {
                if namespace.as_str() == "slow" {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = entered.lock().map(|tx| tx.send(()));
                    let _ = held
                        .lock()
                        .map(|rx| rx.recv_timeout(std::time::Duration::from_secs(30)));
                }
                Ok(())
            })?;
        let slow = Namespace::new("slow");
        let first = {
            let provider = provider.clone();
            let slow = slow.clone();
            std::thread::spawn(move || provider.replica(&slow).map(|s| s.lock().site_id()))
        };
        in_setup.recv_timeout(std::time::Duration::from_secs(30))?;
        let second = {
            let provider = provider.clone();
            let slow = slow.clone();
            std::thread::spawn(move || provider.replica(&slow).map(|s| s.lock().site_id()))
        };
        // While "slow" is still opening: another namespace opens, and the
        // default one is served.
        // Done on a thread and waited for with a bound, so an open that
        // waited on "slow" fails here instead of passing once the setup's
        // own wait runs out.
        let (done, finished) = mpsc::channel();
        {
            let provider = provider.clone();
            std::thread::spawn(move || {
                let served = provider.replica(&Namespace::new("fast")).and_then(|fast| {
                    fast.write(|tx| tx.insert("note", &[("id", "n1".into())]))?;
                    provider.replica(&Namespace::default()).map(|_| ())
                });
                let _ = done.send(served);
            });
        }
        let served = finished.recv_timeout(std::time::Duration::from_secs(10));
        release.send(())?;
        served.map_err(|_| "another namespace waited on the slow open")??;
        let a = first.join().map_err(|_| "first open panicked")??;
        let b = second.join().map_err(|_| "second open panicked")??;
        assert_eq!(a, b, "both first sessions got the same store");
        assert_eq!(
            slow_setups.load(Ordering::SeqCst),
            1,
            "opened and set up once"
        );
        Ok(())
    }

    #[test]
    fn a_refused_name_leaves_nothing_behind() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let provider = DirectoryProvider::open(dir.path(), &notes()?, StoreOptions::new())?;
        for _ in 0..3 {
            let ghost = provider.replica(&Namespace::new("ghost"));
            assert!(
                matches!(ghost, Err(SyncError::UnknownNamespace(_))),
                "{ghost:?}"
            );
        }
        assert_eq!(
            provider.lock().len(),
            1,
            "only the default namespace's slot"
        );
        assert!(!dir.path().join("ghost.db").exists());
        Ok(())
    }

    #[test]
    fn only_plain_names_name_a_namespace() {
        for good in ["default", "team-7", "a", "user_42", &"x".repeat(64)] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            "a\\b",
            ".hidden",
            "-rf",
            "_x",
            "User_42",
            "a b",
            "naïve",
            "a\0b",
            &"x".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_valid_name_stays_inside_the_directory(name in "\\PC{0,70}") {
            if valid_name(&name) {
                let dir = Path::new("/data");
                let path = dir.join(format!("{name}.db"));
                proptest::prop_assert_eq!(path.parent(), Some(dir));
                proptest::prop_assert!(!name.contains('/') && !name.contains(".."));
            }
        }
    }
}
