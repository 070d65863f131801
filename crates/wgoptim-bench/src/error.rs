//! The bench's error: a message for the person at the terminal, plus whether the case that raised it can be
//! skipped (the adapter cannot hold it) or the whole run must stop.

use std::fmt;

/// Something that stopped a measurement.
#[derive(Debug)]
pub struct BenchError {
    message: String,
    /// The adapter cannot hold this case (too large, out of memory): skip it with a note and go on.
    pub skippable: bool,
}

impl BenchError {
    /// An error that ends the run.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            skippable: false,
        }
    }

    /// A case the adapter cannot hold.
    pub fn skip(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            skippable: true,
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BenchError {}

impl From<wgoptim::Error> for BenchError {
    fn from(e: wgoptim::Error) -> Self {
        let skippable = matches!(
            e,
            wgoptim::Error::OutOfMemory(_) | wgoptim::Error::TooLarge { .. }
        );
        Self {
            message: e.to_string(),
            skippable,
        }
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        Self::fatal(e.to_string())
    }
}

/// Shorthand for results of the bench.
pub type Result<T> = std::result::Result<T, BenchError>;
