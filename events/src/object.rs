//! The identifiers of Cloud Storage objects, parsed into types that can only
//! hold valid values: a [`BucketName`], an [`ObjectName`], a [`Generation`],
//! and [`ObjectRef`], one generation of one object.

use std::fmt;

use serde::Serialize;

/// A Cloud Storage bucket name (3-222 characters of `a-z 0-9 - _ .`,
/// starting and ending with a letter or digit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(s: &str) -> Result<BucketName, String> {
        let ok_len = (3..=222).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
        let ok_ends = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_ends {
            Ok(BucketName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid bucket name (3-222 of a-z 0-9 - _ ., starting and ending with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Cloud Storage object name: 1-1024 bytes of UTF-8 without CR, LF or NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectName(String);

impl ObjectName {
    pub fn parse(s: &str) -> Result<ObjectName, String> {
        if s.is_empty() || s.len() > 1024 {
            return Err(format!("object name must be 1-1024 bytes, got {}", s.len()));
        }
        if s.contains(['\r', '\n', '\0']) {
            return Err("object name contains CR, LF or NUL".into());
        }
        Ok(ObjectName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object generation: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Generation(i64);

impl Generation {
    pub fn parse(s: &str) -> Result<Generation, String> {
        match s.trim().parse::<i64>() {
            Ok(g) if g > 0 => Ok(Generation(g)),
            _ => Err(format!("{s:?} is not a positive integer generation")),
        }
    }

    pub fn new(g: i64) -> Option<Generation> {
        (g > 0).then_some(Generation(g))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One generation of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ObjectRef {
    pub bucket: BucketName,
    pub name: ObjectName,
    pub generation: Generation,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}/{}#{}", self.bucket, self.name, self.generation)
    }
}
