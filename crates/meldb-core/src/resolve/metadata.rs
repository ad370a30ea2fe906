//! [`WriteMetadata`]: what an application attaches to one write or
//! mutation (the device, the screen, an approval flag), bounded to
//! [`WriteMetadata::MAX_BYTES`] bytes of UTF-8.
//!
//! It is *client-asserted*: whoever wrote the change chose it, and nothing
//! vouches for it. It travels with the row's latest write (like the row's
//! timestamp and writer) and is kept apart from the [`Writer`], which the
//! deliverer (the relay, from the token) fills in: metadata never changes a
//! `Writer`'s user or roles, whatever it says. Rules that decide who may do
//! something read [`Conflict::writer`]; metadata is context, not identity.
//!
//! [`Writer`]: super::Writer
//! [`Conflict::writer`]: super::Conflict::writer

use serde_json::Value as Json;
use std::fmt;
use thiserror::Error;

/// App metadata attached to one write or mutation: a string (usually a
/// JSON document) of at most [`WriteMetadata::MAX_BYTES`] bytes, asserted
/// by the client that wrote it. See the module docs: it is not identity.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteMetadata(String);

/// Metadata over the bound.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("write metadata of {len} bytes exceeds the limit of {limit} bytes")]
pub struct MetadataTooLarge {
    /// Its size in bytes.
    pub len: usize,
    /// The limit ([`WriteMetadata::MAX_BYTES`]).
    pub limit: usize,
}

impl WriteMetadata {
    /// The largest metadata accepted, in bytes of UTF-8 (1 KiB).
    pub const MAX_BYTES: usize = 1024;

    /// Metadata holding `text` as it is (JSON or not), or the error that
    /// says it is over [`WriteMetadata::MAX_BYTES`].
    pub fn new(text: impl Into<String>) -> Result<WriteMetadata, MetadataTooLarge> {
        let text = text.into();
        if text.len() > Self::MAX_BYTES {
            return Err(MetadataTooLarge {
                len: text.len(),
                limit: Self::MAX_BYTES,
            });
        }
        Ok(WriteMetadata(text))
    }

    /// Metadata holding `json`, serialized compactly.
    pub fn json(json: &Json) -> Result<WriteMetadata, MetadataTooLarge> {
        WriteMetadata::new(json.to_string())
    }

    /// The text as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text parsed as JSON (`None` if it is not JSON).
    pub fn to_json(&self) -> Option<Json> {
        serde_json::from_str(&self.0).ok()
    }

    /// The field `name` of a JSON object's metadata, as text if it is a
    /// string (`None` otherwise).
    pub fn field(&self, name: &str) -> Option<String> {
        match self.to_json()?.get(name)? {
            Json::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl fmt::Debug for WriteMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriteMetadata({:?})", self.0)
    }
}

impl fmt::Display for WriteMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for WriteMetadata {
    type Error = MetadataTooLarge;
    fn try_from(text: &str) -> Result<WriteMetadata, MetadataTooLarge> {
        WriteMetadata::new(text)
    }
}

impl TryFrom<String> for WriteMetadata {
    type Error = MetadataTooLarge;
    fn try_from(text: String) -> Result<WriteMetadata, MetadataTooLarge> {
        WriteMetadata::new(text)
    }
}

impl TryFrom<Json> for WriteMetadata {
    type Error = MetadataTooLarge;
    fn try_from(json: Json) -> Result<WriteMetadata, MetadataTooLarge> {
        WriteMetadata::json(&json)
    }
}

impl TryFrom<&Json> for WriteMetadata {
    type Error = MetadataTooLarge;
    fn try_from(json: &Json) -> Result<WriteMetadata, MetadataTooLarge> {
        WriteMetadata::json(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_inclusive_and_over_it_is_an_error() {
        let at = "x".repeat(WriteMetadata::MAX_BYTES);
        assert!(WriteMetadata::new(at.clone()).is_ok());
        assert_eq!(
            WriteMetadata::new(at + "y"),
            Err(MetadataTooLarge {
                len: 1025,
                limit: 1024
            })
        );
        let m = WriteMetadata::json(&serde_json::json!({"device": "ipad", "n": 2})).expect("small");
        assert_eq!(m.field("device").as_deref(), Some("ipad"));
        assert_eq!(m.field("n").as_deref(), Some("2"));
        assert_eq!(WriteMetadata::new("plain").expect("small").to_json(), None);
    }
}
