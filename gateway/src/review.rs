//! `wardlink deid FILE...`: the de-identification review a privacy officer
//! runs on a sample before go-live.
//!
//! Each file may hold MLLP-framed messages (as captured off the wire) or
//! plain HL7 text (one message after another, segments ended by CR, LF or
//! CRLF). For each message it prints what [`Pipeline::explain`] reports: the
//! events that would be uploaded and, per field, the action and rule that
//! acted on it. Removed values are never printed.
//!
//! Pseudonyms depend on the site secret: with the gateway's state directory
//! (from the config) the review uses the gateway's own secret, so its
//! pseudonyms equal the gateway's; without one it uses a temporary secret
//! and says so (and creates nothing).

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use wardlink_config::Config;

use crate::pipeline::pseudonym::SITE_KEY_FILE;
use crate::pipeline::{NoHistory, Pipeline, RawMessage, SiteKeys};

/// Split a file's bytes into messages: MLLP frames if there are start
/// blocks, else at every segment line that starts with `MSH`.
pub fn split_messages(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.contains(&0x0b) {
        return bytes
            .split(|&b| b == 0x0b)
            .filter_map(|chunk| {
                let end = chunk.iter().position(|&b| b == 0x1c).unwrap_or(chunk.len());
                let m = &chunk[..end];
                (!m.iter().all(u8::is_ascii_whitespace)).then_some(m)
            })
            .collect();
    }
    let mut starts = Vec::new();
    for i in 0..bytes.len() {
        let at_line_start = i == 0 || matches!(bytes[i - 1], b'\r' | b'\n');
        if at_line_start && bytes[i..].starts_with(b"MSH") {
            starts.push(i);
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let e = starts.get(k + 1).copied().unwrap_or(bytes.len());
            &bytes[s..e]
        })
        .collect()
}

/// Run the review over `files`, writing the report to `out`.
///
/// # Errors
/// A file cannot be read, the site secret is unusable, or writing fails.
pub fn run(config: &Config, files: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<()> {
    let state_dir = &config.gateway.state_dir;
    let keys = if state_dir.join(SITE_KEY_FILE).exists() {
        writeln!(
            out,
            "# pseudonyms with the site secret of {}",
            state_dir.display()
        )?;
        let keys = SiteKeys::load_or_create(state_dir).context("cannot read the site secret")?;
        crate::settings::with_network_key(config, keys)?
    } else {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        writeln!(
            out,
            "# no site secret in {}: pseudonyms use a temporary secret and differ from the gateway's",
            state_dir.display()
        )?;
        crate::settings::with_network_key(config, SiteKeys::from_secrets(&secret, None))?
    };
    let pipeline = Pipeline::new(crate::settings::pipeline_settings(config)?, keys)?
        .with_dicom(config.deid.dicom);
    for path in files {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        // A DICOM Part 10 file is one object.
        let messages = if crate::pipeline::dicom::is_part10(&bytes) {
            vec![&bytes[..]]
        } else {
            split_messages(&bytes)
        };
        if messages.is_empty() {
            writeln!(out, "## {}: no HL7 message found", path.display())?;
        }
        for (i, m) in messages.into_iter().enumerate() {
            writeln!(out, "## {} message {}", path.display(), i + 1)?;
            let raw = RawMessage {
                id: 0,
                source: "review",
                received_at: SystemTime::now(),
                bytes: m,
                charset_hint: None,
            };
            write!(out, "{}", pipeline.explain(&raw, &NoHistory))?;
            writeln!(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_framed_and_plain_files() {
        let framed = b"\x0bMSH|a\rPID|1\r\x1c\r\n\x0bMSH|b\r\x1c\r";
        assert_eq!(
            split_messages(framed),
            vec![&b"MSH|a\rPID|1\r"[..], &b"MSH|b\r"[..]]
        );
        let plain = b"MSH|a\nPID|1\nMSH|b\nOBX|1\n";
        assert_eq!(
            split_messages(plain),
            vec![&b"MSH|a\nPID|1\n"[..], &b"MSH|b\nOBX|1\n"[..]]
        );
        assert!(split_messages(b"no messages here").is_empty());
    }
}
