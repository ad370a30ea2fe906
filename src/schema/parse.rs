//! Placeholder replaced by the schema parser.
