//! Placeholder replaced by the upgrade check.
/// Placeholder.
#[derive(Debug, Default)]
pub struct Upgrade;
