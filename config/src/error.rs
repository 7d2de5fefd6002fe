//! Errors: every problem of a file at once, each with its line and key.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing wrong with a config file.
///
/// Displayed (inside [`ConfigError`]) as `FILE:LINE: KEY: message; fix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line the problem is on, when it has one.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `source.mllp[1].max_connections`
    /// (array indexes are 0-based, in file order). Empty for TOML syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl Problem {
    /// The problem as one line, `ORIGIN:LINE: KEY: message; fix`; the line
    /// and the key are left out when there is none.
    pub fn render(&self, origin: &str) -> String {
        let mut out = String::from(origin);
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        if !self.key.is_empty() {
            out.push_str(&self.key);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out.push_str("; ");
        out.push_str(&self.fix);
        out
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, a directory, ...).
    /// Never replaced by defaults.
    #[error(
        "{}: cannot read the config file: {error}; check the path and that the user running wardlink may read it",
        path.display()
    )]
    Unreadable {
        /// The path as given.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The text was read but is not a valid configuration. Holds every problem
    /// found, ordered by line; displayed one per line.
    #[error("{}", Rendered { origin, problems })]
    Invalid {
        /// The name of the file (or other origin) used in messages.
        origin: String,
        /// Every problem found, never empty.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`]; empty for an unreadable file.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Unreadable { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

struct Rendered<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&problem.render(self.origin))?;
        }
        Ok(())
    }
}
