//! Identifiers as they appear in logs: hashed, never in clear.
//!
//! A message control id (MSH-10) is not PHI by itself, but logs leave the
//! box (journald forwarding, support bundles) and a control id ties a log
//! line to a message and its patient in the sender's system. So every log
//! line carries [`Hashed`]: the first 12 hex digits of the SHA-256 of the
//! id. An operator who knows an id finds its lines with
//! `printf %s 'MSG00042' | sha256sum | cut -c1-12`.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Displays the 12-hex-digit SHA-256 prefix of an identifier.
#[derive(Debug, Clone, Copy)]
pub struct Hashed<'a>(pub &'a str);

impl fmt::Display for Hashed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let digest = Sha256::digest(self.0.as_bytes());
        for b in &digest[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum() {
        // printf %s 'MSG00042' | sha256sum | cut -c1-12
        let h = Hashed("MSG00042").to_string();
        assert_eq!(h.len(), 12);
        assert_eq!(h, format!("{:x}", Sha256::digest(b"MSG00042"))[..12]);
        assert_eq!(Hashed("").to_string(), "-");
    }
}
