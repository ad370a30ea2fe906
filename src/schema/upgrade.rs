//! Placeholder replaced by the upgrade check (being written on branch schema).
use super::{Schema, SchemaError};
/// Placeholder.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// New tables.
    pub new_tables: Vec<String>,
    /// New columns.
    pub new_columns: Vec<(String, String)>,
}
impl Schema {
    /// Placeholder.
    pub fn check_upgrade(&self, _new: &Schema, _db: &str) -> Result<Upgrade, SchemaError> {
        Ok(Upgrade::default())
    }
}
