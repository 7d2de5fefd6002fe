//! Collects problems while parsing and validating, and turns byte spans into lines.

use std::ops::Range;

use crate::error::{ConfigError, Problem};

/// Every problem found in one text so far.
pub(crate) struct Report<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl<'t> Report<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            text,
            problems: Vec::new(),
        }
    }

    /// The 1-based line of a byte offset into the text.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_of(self.text.as_bytes(), offset)
    }

    /// Records a problem at `span` (a byte range of the text, if known).
    pub(crate) fn push(
        &mut self,
        span: Option<&Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// `value` if nothing was wrong, otherwise every problem ordered by line
    /// (problems without a line last, each group in the order found).
    pub(crate) fn finish<T>(mut self, origin: &str, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) if self.problems.is_empty() => Ok(value),
            _ => {
                if self.problems.is_empty() {
                    // Only reachable through a bug: something failed without saying why.
                    self.problems.push(Problem {
                        line: None,
                        key: String::new(),
                        message: "the configuration could not be read (internal error)".to_owned(),
                        fix: "please report this together with the config file".to_owned(),
                    });
                }
                self.problems.sort_by_key(|p| (p.line.is_none(), p.line));
                Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    problems: self.problems,
                })
            }
        }
    }
}

/// The 1-based line of a byte offset into `bytes`.
pub(crate) fn line_of(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|&&b| b == b'\n').count() + 1
}
