//! The one error every call across the boundary can return, and the error
//! a foreign callback returns.
//!
//! Invariant: every variant carries the library's own message (what went
//! wrong, and where: the table, column, mutator or URL), so a Python,
//! Kotlin or Swift caller sees the same text a Rust caller would; nothing
//! is reported as a bare code.

use meldb::sync::SyncError;

/// Why a call failed. Each language sees it as one exception (error) type
/// with a case per variant, each carrying the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum MeldbError {
    /// A schema that does not parse or is not valid (or its file could not
    /// be read).
    #[error("{message}")]
    Schema { message: String },
    /// The database could not be opened: not a meldb file, a newer format,
    /// a schema that does not fit it.
    #[error("{message}")]
    Open { message: String },
    /// The encryption key does not open the file, or a key was given for an
    /// unencrypted file (or none for an encrypted one).
    #[error("{message}")]
    Key { message: String },
    /// A write the schema refuses: an unknown table or column, a value of
    /// the wrong type, a row that exists (insert) or does not (update).
    #[error("{message}")]
    Write { message: String },
    /// Changes that could not be applied, or a resolver that failed (its
    /// exception included): nothing of them was written.
    #[error("{message}")]
    Apply { message: String },
    /// A mutation that did not happen: no mutator of that name, arguments
    /// that are not JSON, or the mutator failed (its message included).
    #[error("{message}")]
    Mutation { message: String },
    /// A query that is not valid SQL, does not only read, or whose rows do
    /// not convert.
    #[error("{message}")]
    Query { message: String },
    /// SQLite failed underneath (disk full, I/O error, a corrupt file).
    #[error("{message}")]
    Storage { message: String },
    /// A sync that failed: the URL, the connection, the peer's refusal.
    #[error("{message}")]
    Sync { message: String },
    /// An argument that is not what the call takes (bad JSON, a bad URL).
    #[error("{message}")]
    InvalidArgument { message: String },
    /// A call into a database from inside one of its own resolvers or
    /// mutators, which run while it is locked: it would wait for itself.
    /// A mutator reads and writes through the transaction it is given; a
    /// resolver decides from the conflict it is given.
    #[error("{message}")]
    Reentrant { message: String },
    /// The database was closed, or the transaction already committed or
    /// rolled back.
    #[error("{message}")]
    Closed { message: String },
}

impl MeldbError {
    pub(crate) fn invalid(message: impl Into<String>) -> MeldbError {
        MeldbError::InvalidArgument {
            message: message.into(),
        }
    }

    pub(crate) fn closed(message: impl Into<String>) -> MeldbError {
        MeldbError::Closed {
            message: message.into(),
        }
    }
}

impl From<meldb::Error> for MeldbError {
    fn from(e: meldb::Error) -> MeldbError {
        let message = e.to_string();
        match e {
            meldb::Error::Open(open) => match *open {
                meldb::OpenError::WrongKey { .. }
                | meldb::OpenError::NotEncrypted { .. }
                | meldb::OpenError::Encrypted { .. }
                | meldb::OpenError::EncryptionUnavailable { .. } => MeldbError::Key { message },
                _ => MeldbError::Open { message },
            },
            meldb::Error::Schema(_) => MeldbError::Schema { message },
            meldb::Error::Write(_) => MeldbError::Write { message },
            meldb::Error::Apply(_) | meldb::Error::Decode(_) | meldb::Error::Resolve(_) => {
                MeldbError::Apply { message }
            }
            meldb::Error::Mutation(_) => MeldbError::Mutation { message },
            // Only the JSON writes reach the library's typed layer here
            // (crate::json_ops): a row value that does not fit its column.
            meldb::Error::Typed(_) => MeldbError::InvalidArgument { message },
            _ => MeldbError::Storage { message },
        }
    }
}

impl From<meldb::OpenError> for MeldbError {
    fn from(e: meldb::OpenError) -> MeldbError {
        meldb::Error::Open(Box::new(e)).into()
    }
}

impl From<meldb::SchemaError> for MeldbError {
    fn from(e: meldb::SchemaError) -> MeldbError {
        MeldbError::Schema {
            message: e.to_string(),
        }
    }
}

impl From<SyncError> for MeldbError {
    fn from(e: SyncError) -> MeldbError {
        MeldbError::Sync {
            message: e.to_string(),
        }
    }
}

/// What a foreign callback (resolver, mutator, live query, sync listener)
/// returns when it fails. An exception of any other type thrown in the
/// callback arrives as `Unexpected`, with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum CallbackError {
    /// The callback's own failure, with its message ("slot 9:00 is taken").
    #[error("{message}")]
    Failed { message: String },
    /// An exception the bindings did not expect (a bug in the callback).
    #[error("{message}")]
    Unexpected { message: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for CallbackError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> CallbackError {
        CallbackError::Unexpected { message: e.reason }
    }
}
