//! Mutators written in the foreign language: a named function that runs a
//! business operation through a transaction handle, at once on a client
//! (speculatively, queued for the authority), again at the authority, and
//! again on top of each canonical state a client pulls.
//!
//! The store runs a mutator inside its write transaction, on the thread
//! that called: the transaction is borrowed there and cannot be handed
//! across the boundary. So the foreign function runs on a scoped thread of
//! its own with a [`MutationTx`], each of whose calls is a request the
//! calling thread carries out on the transaction and answers. Invariant:
//! every read and write of a mutation runs on its transaction, in the
//! order the function made them; once the function returns, its handle
//! refuses every call (`Closed`), so a handle kept past its mutation
//! writes nothing. A call into the database itself from the function is
//! refused ([`crate::guard`]): the transaction holds its lock.

use crate::database::Database;
use crate::error::{CallbackError, MeldbError};
use crate::guard;
use crate::transaction::WriteOp;
use crate::value::{self, DbRow, DbValue};
use meldb::MutatorError;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

/// The foreign side of a mutator.
#[uniffi::export(callback_interface)]
pub trait Mutator: Send + Sync {
    /// Runs the operation with its arguments (JSON text) through `tx`. An
    /// error (or exception) fails the mutation: nothing it wrote stays,
    /// and at the authority it is rejected with the message.
    fn run(&self, tx: Arc<MutationTx>, args_json: String) -> Result<(), CallbackError>;
}

/// What the mutator's thread asks of the transaction.
enum Request {
    Write(WriteOp, mpsc::Sender<Result<(), MeldbError>>),
    Get(
        String,
        Vec<DbValue>,
        mpsc::Sender<Result<Option<DbRow>, MeldbError>>,
    ),
}

/// A mutation's transaction, for the mutator to read and write through.
/// Valid while the mutator runs; afterwards every call is `Closed`.
#[derive(uniffi::Object)]
pub struct MutationTx {
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    user: Option<String>,
    roles: Vec<String>,
    metadata: Option<String>,
}

impl MutationTx {
    fn ask<T>(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<T, MeldbError>>) -> Request,
    ) -> Result<T, MeldbError> {
        let over = || MeldbError::closed("the mutation is over: its transaction handle is closed");
        let sender = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(over)?;
        let (reply, answer) = mpsc::channel();
        sender.send(make(reply)).map_err(|_| over())?;
        drop(sender);
        answer.recv().map_err(|_| over())?
    }

    fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[uniffi::export]
impl MutationTx {
    /// A live row, as the mutation sees it (its own writes included).
    pub fn get(&self, table: String, key: Vec<DbValue>) -> Result<Option<DbRow>, MeldbError> {
        self.ask(|reply| Request::Get(table, key, reply))
    }

    /// Carries out one write on the mutation's transaction (the same
    /// operations a [`crate::WriteTransaction`] collects), at once: the
    /// mutation's later reads see it.
    pub fn write(&self, op: WriteOp) -> Result<(), MeldbError> {
        self.ask(|reply| Request::Write(op, reply))
    }

    /// Who runs the mutation: the user id the app set, or (at the
    /// authority) the one the client's token vouches for.
    pub fn writer_user(&self) -> Option<String> {
        self.user.clone()
    }

    /// The writer's roles.
    pub fn writer_roles(&self) -> Vec<String> {
        self.roles.clone()
    }

    /// The mutation's app metadata, if it was called with some.
    pub fn metadata(&self) -> Option<String> {
        self.metadata.clone()
    }
}

/// Closes a mutation's handle when dropped.
struct Closes(Arc<MutationTx>);

impl Drop for Closes {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Carries out one request on the mutation's transaction.
fn serve(schema: &meldb::Schema, tx: &mut meldb::Transaction<'_>, request: Request) {
    match request {
        Request::Write(op, reply) => {
            let _ = reply.send(crate::transaction::run_one(tx, op));
        }
        Request::Get(table, key, reply) => {
            let got = value::values(key).and_then(|key| {
                tx.get(&table, key)
                    .map(|row| row.map(|row| value::table_row(schema, &table, row)))
                    .map_err(MeldbError::from)
            });
            let _ = reply.send(got);
        }
    }
}

/// A mutation waiting for the authority, or refused by it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct MutationRecord {
    /// The mutation's id (what `mutate` returned).
    pub id: u64,
    /// The mutator's name.
    pub name: String,
    /// Its arguments, as JSON text (pending ones; the authority's
    /// refusals carry only the error).
    pub args_json: Option<String>,
    /// Why it failed, for a refused one.
    pub error: Option<String>,
}

#[uniffi::export]
impl Database {
    /// Registers `mutator` as `name` (replacing one of that name). Mutators
    /// live in memory: register them each time the database opens.
    pub fn register_mutator(
        &self,
        name: String,
        mutator: Box<dyn Mutator>,
    ) -> Result<(), MeldbError> {
        let mutator: Arc<dyn Mutator> = Arc::from(mutator);
        let schema = self.schema.clone();
        let id = self.id;
        self.with_store("register_mutator", |store| {
            store.register_mutator(&name, move |tx, args: serde_json::Value| {
                let (requests, incoming) = mpsc::channel();
                let handle = Arc::new(MutationTx {
                    requests: Mutex::new(Some(requests)),
                    user: tx.writer().user.clone(),
                    roles: tx.writer().roles.clone(),
                    metadata: tx.metadata().map(|m| m.as_str().to_owned()),
                });
                let args = args.to_string();
                let outcome = std::thread::scope(|scope| {
                    let worker = {
                        let handle = handle.clone();
                        let mutator = mutator.clone();
                        scope.spawn(move || {
                            // Closes the handle however the function ends
                            // (a panic included), which ends the loop below.
                            let _closes = Closes(handle.clone());
                            let _inside = guard::enter(id, "mutator");
                            mutator.run(handle, args)
                        })
                    };
                    // Until the mutator returns and its handle closes.
                    for request in incoming.iter() {
                        serve(&schema, tx, request);
                    }
                    worker.join()
                });
                match outcome {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(MutatorError::app(e.to_string())),
                    Err(_) => Err(MutatorError::app("the mutator's thread panicked")),
                }
            });
            Ok(())
        })
    }

    /// Runs mutator `name` with `args_json` now and, on a client of an
    /// authority, queues it durably for the authority; returns its id. A
    /// mutator that fails changes and queues nothing, and its message is
    /// in the error.
    #[uniffi::method(default(metadata = None))]
    pub fn mutate(
        &self,
        name: String,
        args_json: String,
        metadata: Option<String>,
    ) -> Result<u64, MeldbError> {
        let args: serde_json::Value = serde_json::from_str(&args_json).map_err(|e| {
            MeldbError::invalid(format!("mutator {name:?}: arguments are not JSON: {e}"))
        })?;
        let shared = self.shared("mutate")?;
        let id = {
            let mut store = shared.lock();
            match metadata {
                Some(meta) => store.mutate_with(&name, &args, meta),
                None => store.mutate(&name, &args),
            }
        }?;
        shared.notify_changed();
        Ok(id)
    }

    /// The mutations waiting for the authority, oldest first.
    pub fn pending_mutations(&self) -> Result<Vec<MutationRecord>, MeldbError> {
        let pending = self.with_store("pending_mutations", |s| Ok(s.pending_mutations()?))?;
        Ok(pending
            .into_iter()
            .map(|m| MutationRecord {
                id: m.id,
                name: m.name,
                args_json: Some(m.args),
                error: None,
            })
            .collect())
    }

    /// The mutations the authority refused (or that failed when replayed),
    /// with their error.
    pub fn mutation_failures(&self) -> Result<Vec<MutationRecord>, MeldbError> {
        let failed = self.with_store("mutation_failures", |s| Ok(s.mutation_failures()?))?;
        Ok(failed
            .into_iter()
            .map(|m| MutationRecord {
                id: m.id,
                name: m.name,
                args_json: None,
                error: Some(m.error),
            })
            .collect())
    }
}
