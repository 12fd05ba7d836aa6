//! The size bounds every other bound is derived from, in one place.
//!
//! Bounds that depend on these are computed from them and checked at compile time where they are
//! defined: `storage` derives its largest batch from the largest write, and its log asserts that
//! the largest batch fits one frame, so a value the API accepts can never make a log frame that
//! replay would refuse.

/// Longest key path, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

/// The largest value `max_value_bytes` may allow, in bytes: a value travels whole in one log frame.
pub const VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest node id, in bytes: it is stored with every record as the record's origin.
pub const NODE_ID_BYTES_MAX: usize = 255;
