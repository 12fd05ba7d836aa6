//! Key paths: hierarchical, UTF-8, validated once at the edge so nothing inside sees a bad key.

use std::fmt;

pub use crate::limits::KEY_BYTES_MAX;

/// Why a key path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing after `/kv/`.
    #[error("key path is empty")]
    Empty,
    /// Longer than [`KEY_BYTES_MAX`].
    #[error("key path is {0} bytes; the limit is {KEY_BYTES_MAX}")]
    TooLong(usize),
    /// `a//b`, a leading or a trailing `/`.
    #[error("key path has an empty segment")]
    EmptySegment,
    /// `.` or `..` as a segment.
    #[error("key path segments may not be '.' or '..'")]
    DotSegment,
    /// A control character (including NUL).
    #[error("key path contains a control character")]
    ControlCharacter,
}

/// A validated key path such as `users/john/profile`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(String);

impl KeyPath {
    /// Validates `path` (already percent-decoded, without the `/kv/` prefix).
    pub fn parse(path: &str) -> Result<KeyPath, KeyError> {
        if path.is_empty() {
            return Err(KeyError::Empty);
        }
        if path.len() > KEY_BYTES_MAX {
            return Err(KeyError::TooLong(path.len()));
        }
        if path.chars().any(char::is_control) {
            return Err(KeyError::ControlCharacter);
        }
        for segment in path.split('/') {
            match segment {
                "" => return Err(KeyError::EmptySegment),
                "." | ".." => return Err(KeyError::DotSegment),
                _ => {}
            }
        }
        Ok(KeyPath(path.to_owned()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hierarchical_utf8_paths() {
        for ok in [
            "a",
            "users/john/profile",
            "héllo/wörld",
            "a.b/c..d/...",
            "x y/z",
        ] {
            assert_eq!(KeyPath::parse(ok).unwrap().as_str(), ok);
        }
        assert!(KeyPath::parse(&"k".repeat(KEY_BYTES_MAX)).is_ok());
    }

    #[test]
    fn refuses_bad_paths_with_the_reason() {
        assert_eq!(KeyPath::parse(""), Err(KeyError::Empty));
        assert_eq!(KeyPath::parse("/a"), Err(KeyError::EmptySegment));
        assert_eq!(KeyPath::parse("a/"), Err(KeyError::EmptySegment));
        assert_eq!(KeyPath::parse("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(KeyPath::parse("a/./b"), Err(KeyError::DotSegment));
        assert_eq!(KeyPath::parse(".."), Err(KeyError::DotSegment));
        assert_eq!(KeyPath::parse("a\0b"), Err(KeyError::ControlCharacter));
        assert_eq!(KeyPath::parse("a\nb"), Err(KeyError::ControlCharacter));
        let long = "k".repeat(KEY_BYTES_MAX + 1);
        assert_eq!(
            KeyPath::parse(&long),
            Err(KeyError::TooLong(KEY_BYTES_MAX + 1))
        );
    }
}
