//! The batch format, version 1: seal events into a signed, hash-chained
//! batch, put it on the wire, take it off again and verify it.
//!
//! The normative text is `docs/batch-format.md`; the section numbers below
//! refer to it. This module is pure: no I/O, no clock, no randomness (the
//! caller passes the creation time and the key).
//!
//! # Layout of a batch
//! - The **header** (§2) is a short text of twelve `key=value` lines in a
//!   fixed order. Its bytes are canonical: exactly one byte string spells a
//!   given header, and [`Header::parse`] refuses every other spelling, so the
//!   header hash names a batch unambiguously.
//! - The **body** (§3) is the events as NDJSON (one JSON object per line,
//!   each ending in `\n`, in outbox order), compressed with zstd. The header
//!   carries the SHA-256 and the length of the compressed body.
//! - The **signature** (§4) is Ed25519 (RFC 8032, pure) by the gateway's key
//!   over the 32-byte SHA-256 digest of the header bytes. Signing the digest
//!   rather than the whole batch keeps signing at about 20 µs whatever the
//!   body's size; the body is covered through `body_sha256`.
//! - The **chain** (§5): `seq` starts at 1 and grows by one per batch;
//!   `prev_header_sha256` is the SHA-256 of the previous batch's header bytes
//!   (32 zero bytes for `seq=1`).
//! - The **wire** (§7): `u32` big-endian header length, header, 64-byte
//!   signature, compressed body.
//!
//! # Invariants checked here
//! Every event line is one JSON object with a `u64` `event_id`; ids are
//! strictly increasing within a batch and across a chain; the header's
//! `event_count`, `first_event_id` and `last_event_id` agree with the body.
//! [`verify`] checks all of that, after the signature, so nothing unsigned is
//! ever parsed beyond the header.

use std::fmt;
use std::io::Read as _;

use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256};

use crate::hex;
use crate::keys::{GatewayId, PublicKey, SigningKeyFile};

/// The format version this module writes and reads (`wardlink-batch/1`).
pub const FORMAT_VERSION: u32 = 1;

/// The first line of every version-1 header.
const MAGIC_LINE: &str = "wardlink-batch/1";

/// The longest header [`Batch::decode`] accepts. A real one is under 400
/// bytes; the bound keeps a hostile length prefix from mattering.
pub const MAX_HEADER_BYTES: usize = 1024;

/// The default bound on a decompressed body in [`verify`]: 256 MiB. The
/// gateway's default batch (5,000 events of about 1 KiB) is about 5 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 << 20;

/// The length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// Where a new batch goes in a gateway's chain: the state the sealer keeps
/// between batches (persist it with the sealed batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The sequence number the next batch gets (1 for the first).
    pub next_seq: u64,
    /// SHA-256 of the previous batch's header bytes (zeros before the first).
    pub prev_header_sha256: Sha256Digest,
    /// The last event id already sealed, if any: the next batch's ids must
    /// be greater.
    pub last_event_id: Option<u64>,
}

impl Chain {
    /// The state before a gateway's first batch.
    pub const GENESIS: Chain = Chain {
        next_seq: 1,
        prev_header_sha256: [0; 32],
        last_event_id: None,
    };
}

/// The compression of the body. Version 1 knows only zstd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Zstandard (RFC 8878), one frame or several concatenated.
    Zstd,
}

impl Compression {
    /// The header spelling (`zstd`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
        }
    }
}

/// A parsed batch header (§2). Its canonical bytes are [`Header::to_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The gateway that sealed the batch (derived from its public key).
    pub gateway_id: GatewayId,
    /// Position in the gateway's chain, from 1.
    pub seq: u64,
    /// SHA-256 of the previous batch's header bytes; zeros for `seq` 1.
    pub prev_header_sha256: Sha256Digest,
    /// When the batch was sealed, milliseconds since the Unix epoch (UTC).
    pub created_ms: u64,
    /// Number of events in the body (at least 1).
    pub event_count: u64,
    /// The first event's `event_id`.
    pub first_event_id: u64,
    /// The last event's `event_id`.
    pub last_event_id: u64,
    /// Events waiting in the gateway's outbox, not in this batch, when it was
    /// sealed: how far behind the gateway is.
    pub backlog: u64,
    /// How the body is compressed.
    pub compression: Compression,
    /// Length of the compressed body in bytes.
    pub body_bytes: u64,
    /// SHA-256 of the compressed body.
    pub body_sha256: Sha256Digest,
}

/// Why header bytes or wire bytes are not a well-formed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the framing needs.
    #[error("batch truncated: {len} bytes, at least {needed} needed")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the framing requires.
        needed: usize,
    },
    /// The header length prefix is over [`MAX_HEADER_BYTES`].
    #[error("header length {len} is over the maximum {max}")]
    HeaderTooLarge {
        /// The declared length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The body is not as long as the header says.
    #[error("body is {actual} bytes but the header says {declared}")]
    BodyLength {
        /// `body_bytes` from the header.
        declared: u64,
        /// Bytes after the signature.
        actual: usize,
    },
    /// The header is not version 1 (its first line differs).
    #[error("not a wardlink-batch/1 header (first line {0:?})")]
    UnknownVersion(String),
    /// A header line is missing, out of order, or not canonical.
    #[error("header line {line}: expected `{key}=…`: {problem}")]
    HeaderField {
        /// 1-based line number.
        line: usize,
        /// The key expected on that line.
        key: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// Bytes after the last header line.
    #[error("trailing bytes after the header's last line")]
    TrailingHeaderBytes,
    /// The fields contradict each other (e.g. `seq=1` with a non-zero previous hash).
    #[error("inconsistent header: {0}")]
    Inconsistent(&'static str),
}

impl Header {
    /// The canonical header bytes (§2): twelve lines, each `key=value\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(400);
        let mut line = |k: &str, v: &dyn fmt::Display| {
            s.push_str(k);
            s.push('=');
            s.push_str(&v.to_string());
            s.push('\n');
        };
        line("gateway_id", &self.gateway_id);
        line("seq", &self.seq);
        line("prev_header_sha256", &hex::encode(&self.prev_header_sha256));
        line("created_ms", &self.created_ms);
        line("event_count", &self.event_count);
        line("first_event_id", &self.first_event_id);
        line("last_event_id", &self.last_event_id);
        line("backlog", &self.backlog);
        line("compression", &self.compression.as_str());
        line("body_bytes", &self.body_bytes);
        line("body_sha256", &hex::encode(&self.body_sha256));
        let mut out = Vec::with_capacity(s.len() + MAGIC_LINE.len() + 1);
        out.extend_from_slice(MAGIC_LINE.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// Parse canonical header bytes; any non-canonical spelling is an error.
    ///
    /// # Errors
    /// The bytes are not exactly a version-1 header (§2), or its fields
    /// contradict each other.
    pub fn parse(bytes: &[u8]) -> Result<Header, DecodeError> {
        let mut lines = Lines { rest: bytes, no: 0 };
        let first = lines.next_raw();
        if first != Some(MAGIC_LINE.as_bytes()) {
            let shown = first.unwrap_or(bytes);
            let shown = String::from_utf8_lossy(&shown[..shown.len().min(40)]).into_owned();
            return Err(DecodeError::UnknownVersion(shown));
        }
        let gateway_id = lines.field("gateway_id", |v| v.parse::<GatewayId>().ok())?;
        let seq = lines.decimal("seq")?;
        let prev_header_sha256 = lines.field("prev_header_sha256", hex::decode::<32>)?;
        let created_ms = lines.decimal("created_ms")?;
        let event_count = lines.decimal("event_count")?;
        let first_event_id = lines.decimal("first_event_id")?;
        let last_event_id = lines.decimal("last_event_id")?;
        let backlog = lines.decimal("backlog")?;
        let compression = lines.field("compression", |v| {
            (v == "zstd").then_some(Compression::Zstd)
        })?;
        let body_bytes = lines.decimal("body_bytes")?;
        let body_sha256 = lines.field("body_sha256", hex::decode::<32>)?;
        if !lines.rest.is_empty() {
            return Err(DecodeError::TrailingHeaderBytes);
        }
        let h = Header {
            gateway_id,
            seq,
            prev_header_sha256,
            created_ms,
            event_count,
            first_event_id,
            last_event_id,
            backlog,
            compression,
            body_bytes,
            body_sha256,
        };
        h.check_consistent()?;
        Ok(h)
    }

    /// The rules of §2 that relate fields to each other.
    fn check_consistent(&self) -> Result<(), DecodeError> {
        if self.seq == 0 {
            return Err(DecodeError::Inconsistent("seq starts at 1"));
        }
        if self.seq == 1 && self.prev_header_sha256 != [0; 32] {
            return Err(DecodeError::Inconsistent(
                "seq=1 must have an all-zero prev_header_sha256",
            ));
        }
        if self.event_count == 0 {
            return Err(DecodeError::Inconsistent("event_count must be at least 1"));
        }
        // Strictly increasing ids: n events span at least n ids.
        let span = self.last_event_id.checked_sub(self.first_event_id);
        if span.is_none_or(|s| s < self.event_count - 1) {
            return Err(DecodeError::Inconsistent(
                "first_event_id..=last_event_id cannot hold event_count increasing ids",
            ));
        }
        Ok(())
    }
}

/// A cursor over `\n`-terminated header lines.
struct Lines<'a> {
    rest: &'a [u8],
    no: usize,
}

impl<'a> Lines<'a> {
    /// The next line without its `\n`, or `None` if no complete line is left.
    fn next_raw(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == b'\n')?;
        let line = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        self.no += 1;
        Some(line)
    }

    /// The next line, which must be `key=value`, with the value parsed by `parse`.
    fn field<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let err = |line, problem| DecodeError::HeaderField { line, key, problem };
        let Some(raw) = self.next_raw() else {
            return Err(err(self.no + 1, "missing (or not ended by a newline)"));
        };
        let value = raw
            .strip_prefix(key.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
            .ok_or_else(|| err(self.no, "another key, or keys out of order"))?;
        let value = std::str::from_utf8(value).map_err(|_| err(self.no, "not UTF-8"))?;
        parse(value).ok_or_else(|| err(self.no, "value not in its canonical form"))
    }

    /// A canonical unsigned decimal: digits only, no leading zero, fits u64.
    fn decimal(&mut self, key: &'static str) -> Result<u64, DecodeError> {
        self.field(key, |v| {
            let canonical = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && (v == "0" || !v.starts_with('0'));
            if canonical {
                v.parse().ok()
            } else {
                None
            }
        })
    }
}

/// A sealed batch: header, signature and compressed body, as on the wire.
///
/// A `Batch` from [`seal`] is signed and consistent by construction; one
/// from [`Batch::decode`] is only well-formed until [`verify`] says more.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    /// The parsed header.
    header: Header,
    /// Its canonical bytes (what is hashed and signed).
    header_bytes: Vec<u8>,
    /// Ed25519 signature over SHA-256(`header_bytes`).
    signature: [u8; SIGNATURE_BYTES],
    /// The zstd-compressed NDJSON body.
    body: Vec<u8>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("header", &self.header)
            .field("header_sha256", &hex::encode(&self.header_sha256()))
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The canonical header bytes.
    pub fn header_bytes(&self) -> &[u8] {
        &self.header_bytes
    }

    /// SHA-256 of the header bytes: this batch's name, and the next batch's
    /// `prev_header_sha256`.
    pub fn header_sha256(&self) -> Sha256Digest {
        Sha256::digest(&self.header_bytes).into()
    }

    /// The Ed25519 signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.signature
    }

    /// The compressed body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The chain state after this batch: where the next one goes.
    pub fn chain_after(&self) -> Chain {
        Chain {
            next_seq: self.header.seq.saturating_add(1),
            prev_header_sha256: self.header_sha256(),
            last_event_id: Some(self.header.last_event_id),
        }
    }

    /// The wire form (§7): `u32` big-endian header length, the header, the
    /// 64-byte signature, the compressed body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(4 + self.header_bytes.len() + SIGNATURE_BYTES + self.body.len());
        // The header is at most MAX_HEADER_BYTES long when it came from
        // `decode`, and about 400 bytes from `seal`: it always fits in a u32.
        let len = u32::try_from(self.header_bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.header_bytes);
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.body);
        out
    }

    /// Take a batch off the wire. Checks the framing and the header's form
    /// only; the signature and body are for [`verify`].
    ///
    /// # Errors
    /// The bytes are not a well-formed version-1 batch.
    pub fn decode(wire: &[u8]) -> Result<Batch, DecodeError> {
        let Some((len, rest)) = wire.split_first_chunk::<4>() else {
            return Err(DecodeError::Truncated {
                len: wire.len(),
                needed: 4,
            });
        };
        let header_len = u32::from_be_bytes(*len) as usize;
        if header_len > MAX_HEADER_BYTES {
            return Err(DecodeError::HeaderTooLarge {
                len: header_len,
                max: MAX_HEADER_BYTES,
            });
        }
        let needed = 4 + header_len + SIGNATURE_BYTES;
        if wire.len() < needed {
            return Err(DecodeError::Truncated {
                len: wire.len(),
                needed,
            });
        }
        let (header_bytes, rest) = rest.split_at(header_len);
        let (signature, body) = rest.split_at(SIGNATURE_BYTES);
        let header = Header::parse(header_bytes)?;
        if u64::try_from(body.len()).ok() != Some(header.body_bytes) {
            return Err(DecodeError::BodyLength {
                declared: header.body_bytes,
                actual: body.len(),
            });
        }
        let mut sig = [0u8; SIGNATURE_BYTES];
        sig.copy_from_slice(signature);
        Ok(Batch {
            header,
            header_bytes: header_bytes.to_vec(),
            signature: sig,
            body: body.to_vec(),
        })
    }
}

/// What the gateway knows when it seals, beyond the events and the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealMeta {
    /// The sealing time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Events left in the outbox after this batch.
    pub backlog: u64,
    /// zstd level (1–22; 3 is zstd's default and a good trade on an edge box).
    pub zstd_level: i32,
}

/// Why events could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A batch needs at least one event.
    #[error("no events to seal")]
    Empty,
    /// An event is not a single-line JSON object with a `u64` `event_id`.
    #[error("event {index} is not a one-line JSON object with a u64 event_id: {reason}")]
    BadEvent {
        /// 0-based position in the input.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Event ids do not increase strictly (within the batch or after the chain).
    #[error("event {index}: event_id {event_id} is not greater than the previous {previous}")]
    NotIncreasing {
        /// 0-based position in the input.
        index: usize,
        /// Its id.
        event_id: u64,
        /// The id before it.
        previous: u64,
    },
    /// The chain's sequence number is 0 or exhausted.
    #[error("invalid chain position: next sequence {0}")]
    BadChain(u64),
    /// zstd failed.
    #[error("compressing the body: {0}")]
    Compress(#[source] std::io::Error),
}

/// The two fields of an event line this layer reads; serde skips the rest.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    event_id: u64,
    #[serde(default, borrow, rename = "type")]
    event_type: Option<std::borrow::Cow<'a, str>>,
}

/// Read `event_id` and `type` from one event line, which must be a JSON
/// object (serde would also take `[1]` for this struct, hence the first check).
fn probe(line: &str) -> Result<Probe<'_>, String> {
    if !line.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// Seal events into a signed batch at position `chain`.
///
/// Each event is one JSON object with a `u64` `event_id`, on one line (no
/// `\n` or `\r`), in outbox order; ids must increase strictly and be greater
/// than `chain.last_event_id`. The lines go into the body exactly as given.
/// The caller stores the batch and `batch.chain_after()` together before
/// uploading, because sealed batches are immutable.
///
/// # Errors
/// No events, a malformed event, ids not increasing, a chain at sequence 0,
/// or a compression failure.
pub fn seal<S: AsRef<str>>(
    events: &[S],
    chain: &Chain,
    key: &SigningKeyFile,
    meta: SealMeta,
) -> Result<Batch, SealError> {
    if chain.next_seq == 0 {
        return Err(SealError::BadChain(chain.next_seq));
    }
    let mut ndjson = Vec::with_capacity(events.iter().map(|e| e.as_ref().len() + 1).sum());
    let mut previous = chain.last_event_id;
    let mut first = None;
    for (index, e) in events.iter().enumerate() {
        let line = e.as_ref();
        if line.contains(['\n', '\r']) {
            return Err(SealError::BadEvent {
                index,
                reason: "contains a line break".into(),
            });
        }
        let probe = probe(line).map_err(|reason| SealError::BadEvent { index, reason })?;
        if let Some(p) = previous.filter(|&p| probe.event_id <= p) {
            return Err(SealError::NotIncreasing {
                index,
                event_id: probe.event_id,
                previous: p,
            });
        }
        first.get_or_insert(probe.event_id);
        previous = Some(probe.event_id);
        ndjson.extend_from_slice(line.as_bytes());
        ndjson.push(b'\n');
    }
    let (Some(first_event_id), Some(last_event_id)) = (first, previous) else {
        return Err(SealError::Empty);
    };
    let body = zstd::bulk::compress(&ndjson, meta.zstd_level).map_err(SealError::Compress)?;
    let header = Header {
        gateway_id: key.gateway_id(),
        seq: chain.next_seq,
        prev_header_sha256: chain.prev_header_sha256,
        created_ms: meta.created_ms,
        event_count: events.len() as u64,
        first_event_id,
        last_event_id,
        backlog: meta.backlog,
        compression: Compression::Zstd,
        body_bytes: body.len() as u64,
        body_sha256: Sha256::digest(&body).into(),
    };
    let header_bytes = header.to_bytes();
    let digest = Sha256::digest(&header_bytes);
    let signature = key.signing_key().sign(&digest).to_bytes();
    Ok(Batch {
        header,
        header_bytes,
        signature,
        body,
    })
}

/// Why a well-formed batch is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature does not verify against the gateway's key: the header
    /// was changed, or another key signed it.
    #[error("bad signature: the header was not signed by this gateway's key")]
    BadSignature,
    /// The body's SHA-256 differs from the signed `body_sha256`.
    #[error("body SHA-256 {actual} differs from the signed {declared}")]
    BodyHashMismatch {
        /// From the header.
        declared: String,
        /// Of the body received.
        actual: String,
    },
    /// The signed body does not decompress, or is over the size bound.
    #[error("body does not decompress: {0}")]
    BodyCorrupt(String),
    /// The decompressed body is not NDJSON events matching the header.
    #[error("body line {line}: {problem}")]
    BadEvents {
        /// 1-based line in the decompressed body (0: the body as a whole).
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// A batch whose signature, body hash and events were checked.
#[derive(Debug, Clone)]
pub struct VerifiedBatch {
    /// The batch as received.
    batch: Batch,
    /// The decompressed NDJSON body (valid UTF-8).
    ndjson: String,
    /// Per event: its id, its type's byte range (if it has a string `type`),
    /// and its line's byte range (without the `\n`).
    events: Vec<EventIndex>,
}

/// Where one event sits in the decompressed body.
#[derive(Debug, Clone)]
struct EventIndex {
    event_id: u64,
    event_type: Option<String>,
    start: usize,
    end: usize,
}

/// One event of a verified batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLine<'a> {
    /// The event's `event_id`.
    pub event_id: u64,
    /// The event's `type` field, if it has a string one.
    pub event_type: Option<&'a str>,
    /// The event's JSON object, exactly as sealed.
    pub json: &'a str,
    /// Where `json` starts in the decompressed body ([`VerifiedBatch::ndjson`]),
    /// in bytes: a store may keep this offset instead of a copy of the line.
    pub start: usize,
}

impl VerifiedBatch {
    /// The batch as received (re-encode it with [`Batch::encode`]).
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.batch.header
    }

    /// The decompressed NDJSON body.
    pub fn ndjson(&self) -> &str {
        &self.ndjson
    }

    /// The events in body order.
    pub fn events(&self) -> impl ExactSizeIterator<Item = EventLine<'_>> + '_ {
        self.events.iter().map(|e| EventLine {
            event_id: e.event_id,
            event_type: e.event_type.as_deref(),
            json: self.ndjson.get(e.start..e.end).unwrap_or_default(),
            start: e.start,
        })
    }
}

/// Verify a decoded batch against the gateway's public key with the default
/// size bound ([`DEFAULT_MAX_BODY_BYTES`]).
///
/// # Errors
/// See [`verify_with_limit`].
pub fn verify(batch: &Batch, key: &PublicKey) -> Result<VerifiedBatch, VerifyError> {
    verify_with_limit(batch, key, DEFAULT_MAX_BODY_BYTES)
}

/// Verify a decoded batch: the signature over the header digest (§4), then
/// the body hash, then the body's events against the header (§3). The
/// decompressed body may be at most `max_body_bytes` long (a zstd frame can
/// claim any size, so this bounds what a signed-but-hostile batch costs).
///
/// The chain (`seq`, `prev_header_sha256`) is the receiver's business: it
/// needs the neighbouring batches it stored.
///
/// # Errors
/// [`VerifyError`] names the first check that failed, in the order above.
pub fn verify_with_limit(
    batch: &Batch,
    key: &PublicKey,
    max_body_bytes: usize,
) -> Result<VerifiedBatch, VerifyError> {
    verify_owned(batch.clone(), key, max_body_bytes)
}

/// [`verify_with_limit`] taking the batch by value, which saves copying
/// the body (what a receiver that got the batch off the wire wants).
///
/// # Errors
/// See [`verify_with_limit`].
pub fn verify_owned(
    batch: Batch,
    key: &PublicKey,
    max_body_bytes: usize,
) -> Result<VerifiedBatch, VerifyError> {
    let digest = Sha256::digest(&batch.header_bytes);
    let signature = Signature::from_bytes(&batch.signature);
    key.verifying_key()
        .verify(&digest, &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    let actual: Sha256Digest = Sha256::digest(&batch.body).into();
    if actual != batch.header.body_sha256 {
        return Err(VerifyError::BodyHashMismatch {
            declared: hex::encode(&batch.header.body_sha256),
            actual: hex::encode(&actual),
        });
    }
    let ndjson = decompress(&batch.body, max_body_bytes)?;
    let events = index_events(&ndjson, &batch.header)?;
    Ok(VerifiedBatch {
        batch,
        ndjson,
        events,
    })
}

/// Decompress a body that was verified when it was stored (the collector's
/// feed reads its events back from it), at most `max` bytes.
///
/// # Errors
/// The body is not zstd, is over `max` bytes decompressed, or is not UTF-8.
pub fn decompress_body(body: &[u8], max: usize) -> Result<String, VerifyError> {
    decompress(body, max)
}

/// Decompress at most `max` bytes of zstd into UTF-8 text.
fn decompress(body: &[u8], max: usize) -> Result<String, VerifyError> {
    let corrupt = |e: std::io::Error| VerifyError::BodyCorrupt(e.to_string());
    let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
    let mut out = Vec::new();
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > max {
        return Err(VerifyError::BodyCorrupt(format!(
            "decompressed body is over {max} bytes"
        )));
    }
    String::from_utf8(out).map_err(|e| VerifyError::BadEvents {
        line: 0,
        problem: format!("not UTF-8: {e}"),
    })
}

/// Check the NDJSON against the header and index its lines.
fn index_events(ndjson: &str, header: &Header) -> Result<Vec<EventIndex>, VerifyError> {
    let bad = |line, problem: String| VerifyError::BadEvents { line, problem };
    if !ndjson.ends_with('\n') {
        return Err(bad(0, "the last line is not ended by \\n".into()));
    }
    let mut events = Vec::with_capacity(usize::try_from(header.event_count).unwrap_or(0));
    let mut start = 0;
    let mut previous: Option<u64> = None;
    for (i, line) in ndjson[..ndjson.len() - 1].split('\n').enumerate() {
        let no = i + 1;
        if line.contains('\r') {
            return Err(bad(no, "contains a carriage return".into()));
        }
        let probe = probe(line)
            .map_err(|e| bad(no, format!("not a JSON object with a u64 event_id: {e}")))?;
        if let Some(p) = previous.filter(|&p| probe.event_id <= p) {
            return Err(bad(
                no,
                format!("event_id {} is not greater than {p}", probe.event_id),
            ));
        }
        previous = Some(probe.event_id);
        events.push(EventIndex {
            event_id: probe.event_id,
            event_type: probe.event_type.map(|t| t.into_owned()),
            start,
            end: start + line.len(),
        });
        start += line.len() + 1;
    }
    let first = events.first().map(|e| e.event_id);
    if events.len() as u64 != header.event_count
        || first != Some(header.first_event_id)
        || previous != Some(header.last_event_id)
    {
        return Err(bad(
            0,
            format!(
                "{} events with ids {first:?}..={previous:?}, header says {} with {}..={}",
                events.len(),
                header.event_count,
                header.first_event_id,
                header.last_event_id
            ),
        ));
    }
    Ok(events)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failed step is a failed test")]
mod tests {
    use super::*;

    fn key() -> SigningKeyFile {
        SigningKeyFile::from_seed([1; 32])
    }

    fn meta() -> SealMeta {
        SealMeta {
            created_ms: 1_795_000_000_000,
            backlog: 7,
            zstd_level: 3,
        }
    }

    fn events(ids: std::ops::Range<u64>) -> Vec<String> {
        ids.map(|i| format!(r#"{{"event_id":{i},"type":"observation","value":{i}}}"#))
            .collect()
    }

    #[test]
    fn seal_encode_decode_verify_round_trip() {
        let k = key();
        let b = seal(&events(10..20), &Chain::GENESIS, &k, meta()).unwrap();
        assert_eq!(b.header().seq, 1);
        assert_eq!(b.header().event_count, 10);
        assert_eq!(
            (b.header().first_event_id, b.header().last_event_id),
            (10, 19)
        );
        let wire = b.encode();
        let d = Batch::decode(&wire).unwrap();
        assert_eq!(d, b);
        let v = verify(&d, &k.public_key()).unwrap();
        let got: Vec<_> = v.events().map(|e| (e.event_id, e.event_type)).collect();
        assert_eq!(got.len(), 10);
        assert_eq!(got[0], (10, Some("observation")));
        assert_eq!(v.events().nth(3).unwrap().json, events(10..20)[3]);
    }

    #[test]
    fn chain_links_batches() {
        let k = key();
        let a = seal(&events(1..3), &Chain::GENESIS, &k, meta()).unwrap();
        let next = a.chain_after();
        let b = seal(&events(3..5), &next, &k, meta()).unwrap();
        assert_eq!(b.header().seq, 2);
        assert_eq!(b.header().prev_header_sha256, a.header_sha256());
        let err = seal(&events(4..6), &b.chain_after(), &k, meta()).unwrap_err();
        assert!(matches!(
            err,
            SealError::NotIncreasing {
                event_id: 4,
                previous: 4,
                ..
            }
        ));
    }

    #[test]
    fn seal_refuses_bad_events() {
        let k = key();
        let c = Chain::GENESIS;
        assert!(matches!(
            seal::<&str>(&[], &c, &k, meta()),
            Err(SealError::Empty)
        ));
        for bad in [
            r#"[1]"#,
            r#"{"event_id":-1}"#,
            r#"{"id":1}"#,
            "{\"event_id\":1,\n\"x\":2}",
            r#"{"event_id":1} x"#,
            r#"{"event_id":1,"event_id":2}"#,
        ] {
            assert!(
                matches!(
                    seal(&[bad], &c, &k, meta()),
                    Err(SealError::BadEvent { .. })
                ),
                "{bad}"
            );
        }
        let dup = [r#"{"event_id":5}"#, r#"{"event_id":5}"#];
        assert!(matches!(
            seal(&dup, &c, &k, meta()),
            Err(SealError::NotIncreasing { .. })
        ));
    }

    #[test]
    fn header_is_canonical_only() {
        let b = seal(&events(1..2), &Chain::GENESIS, &key(), meta()).unwrap();
        let text = String::from_utf8(b.header_bytes().to_vec()).unwrap();
        assert_eq!(Header::parse(text.as_bytes()).unwrap(), *b.header());
        for (from, to) in [
            ("seq=1\n", "seq=01\n"),
            ("seq=1\n", "seq=+1\n"),
            ("backlog=7\n", "backlog=7 \n"),
            ("compression=zstd\n", "compression=gzip\n"),
            ("wardlink-batch/1\n", "wardlink-batch/2\n"),
            ("body_bytes=", "body_size="),
        ] {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text);
            assert!(Header::parse(changed.as_bytes()).is_err(), "{from} -> {to}");
        }
        let swapped = text.replacen("seq=1\nprev", "prev", 1);
        assert!(Header::parse(swapped.as_bytes()).is_err());
        let crlf = text.replace('\n', "\r\n");
        assert!(Header::parse(crlf.as_bytes()).is_err());
        let trailing = format!("{text}x=1\n");
        assert_eq!(
            Header::parse(trailing.as_bytes()),
            Err(DecodeError::TrailingHeaderBytes)
        );
    }

    #[test]
    fn verify_rejects_another_key_and_a_changed_body() {
        let k = key();
        let b = seal(&events(1..4), &Chain::GENESIS, &k, meta()).unwrap();
        let other = SigningKeyFile::from_seed([2; 32]).public_key();
        assert_eq!(verify(&b, &other).unwrap_err(), VerifyError::BadSignature);
        let mut wire = b.encode();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let d = Batch::decode(&wire).unwrap();
        assert!(matches!(
            verify(&d, &k.public_key()),
            Err(VerifyError::BodyHashMismatch { .. })
        ));
    }

    #[test]
    fn verify_bounds_the_decompressed_size() {
        let k = key();
        let b = seal(&events(1..100), &Chain::GENESIS, &k, meta()).unwrap();
        assert!(matches!(
            verify_with_limit(&b, &k.public_key(), 100),
            Err(VerifyError::BodyCorrupt(_))
        ));
    }

    /// A body that the gateway signed but that lies about its events (a
    /// buggy sealer): the count, order and form are all checked.
    #[test]
    fn verify_checks_events_against_the_header() {
        let k = key();
        let forge = |ndjson: &str, count, first, last| {
            let body = zstd::bulk::compress(ndjson.as_bytes(), 3).unwrap();
            let header = Header {
                gateway_id: k.gateway_id(),
                seq: 1,
                prev_header_sha256: [0; 32],
                created_ms: 0,
                event_count: count,
                first_event_id: first,
                last_event_id: last,
                backlog: 0,
                compression: Compression::Zstd,
                body_bytes: body.len() as u64,
                body_sha256: Sha256::digest(&body).into(),
            };
            let header_bytes = header.to_bytes();
            let signature = k
                .signing_key()
                .sign(&Sha256::digest(&header_bytes))
                .to_bytes();
            Batch {
                header,
                header_bytes,
                signature,
                body,
            }
        };
        let pk = k.public_key();
        let ok = forge("{\"event_id\":1}\n{\"event_id\":2}\n", 2, 1, 2);
        assert!(verify(&ok, &pk).is_ok());
        for b in [
            forge("{\"event_id\":1}\n{\"event_id\":2}\n", 3, 1, 3),
            forge("{\"event_id\":1}\n{\"event_id\":3}\n", 2, 1, 2),
            forge("{\"event_id\":2}\n{\"event_id\":1}\n", 2, 1, 2),
            forge("{\"event_id\":1}\n{\"event_id\":2}", 2, 1, 2),
            forge("{\"event_id\":1}\n\n{\"event_id\":2}\n", 2, 1, 2),
            forge("{\"event_id\":1}\r\n{\"event_id\":2}\n", 2, 1, 2),
        ] {
            assert!(
                matches!(verify(&b, &pk), Err(VerifyError::BadEvents { .. })),
                "{:?}",
                b.header()
            );
        }
    }
}
