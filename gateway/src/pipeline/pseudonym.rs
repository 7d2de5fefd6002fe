//! Keyed pseudonyms and per-patient date offsets (protocols/deidentification.md §3, §4).
//!
//! Design:
//! - **One secret per site, created on first use.** [`SiteKeys::load_or_create`]
//!   reads `<state_dir>/site.key` (64 hex digits) or creates it with 32 random
//!   bytes, mode 0600, written to a temporary file, synced and then linked
//!   into place so two starting processes cannot both create one and a crash
//!   never leaves a half-written key. It is never logged (`Debug` prints
//!   nothing of it) and never leaves the box.
//! - **Separate keys per purpose.** From each secret two HMAC keys are
//!   derived: one for pseudonyms, one for date offsets (§4 "a separate key
//!   for date offsets"). The `network` secret (a file the network operator
//!   distributes to every member site) is derived the same way.
//! - **Keyed once.** The derived keys are held as prepared `Hmac<Sha256>`
//!   states; each pseudonym clones the state (two SHA-256 midstates) instead
//!   of re-running the key schedule, which matters at 50k messages/s.
//! - **Domain separation and format.** The MAC input is
//!   `v1|KIND|normalized parts joined by |`; identifiers are normalized by
//!   trimming, dropping spaces and hyphens and upper-casing ASCII. The output
//!   is a kind prefix (`P1-`, `E1-`, …, the `1` being the scheme version) and
//!   the first 128 bits of the tag in lower-case hex.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The file name of the site secret inside the state directory.
pub const SITE_KEY_FILE: &str = "site.key";

/// What kind of identifier a pseudonym stands for; it is part of the MAC
/// input (so equal strings of different kinds do not collide) and chooses
/// the output prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A patient identifier from PID-2/3/4 or MRG-1 (`P1-`).
    Patient,
    /// An ABHA number in network scope (`N1-`).
    NetworkPatient,
    /// A visit / encounter number, PV1-19 (`E1-`).
    Visit,
    /// An account number, PID-18 (`A1-`).
    Account,
    /// A placer/filler order or accession number (`O1-`).
    Order,
    /// A device identifier such as an EUI-64 (`D1-`).
    Device,
    /// A room or bed (`L1-`).
    Location,
    /// A message control id (`C1-`).
    Control,
    /// Any other identifier (`I1-`).
    Other,
}

impl IdKind {
    fn label(self) -> &'static [u8] {
        match self {
            IdKind::Patient => b"PATIENT",
            IdKind::NetworkPatient => b"ABHA",
            IdKind::Visit => b"VISIT",
            IdKind::Account => b"ACCOUNT",
            IdKind::Order => b"ORDER",
            IdKind::Device => b"DEVICE",
            IdKind::Location => b"LOCATION",
            IdKind::Control => b"CONTROL",
            IdKind::Other => b"ID",
        }
    }

    /// The output prefix, e.g. `P1-`.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Patient => "P1-",
            IdKind::NetworkPatient => "N1-",
            IdKind::Visit => "E1-",
            IdKind::Account => "A1-",
            IdKind::Order => "O1-",
            IdKind::Device => "D1-",
            IdKind::Location => "L1-",
            IdKind::Control => "C1-",
            IdKind::Other => "I1-",
        }
    }
}

/// Errors while loading or creating keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading, creating or syncing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not a key.
    #[error("key file {path}: {why}")]
    BadFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The file is readable or writable by others than its owner.
    #[error(
        "key file {path} has mode {mode:o}; it must be readable by its owner only (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The OS random source failed.
    #[error("no randomness for a new site key: {0}")]
    Random(String),
}

/// Pseudonym and date keys derived from one secret.
#[derive(Clone)]
struct KeySet {
    pseudonym: HmacSha256,
    date: HmacSha256,
    /// Tells key sets apart in the per-thread caches (not secret: 64 bits
    /// of an HMAC under the key, nothing derivable from it).
    fingerprint: u64,
}

fn mac_with_key(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; the fallback is
    // unreachable but keeps the code free of unwrap.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()))
}

impl KeySet {
    fn derive(secret: &[u8]) -> KeySet {
        let root = mac_with_key(secret);
        let sub = |label: &[u8]| {
            let mut m = root.clone();
            m.update(label);
            mac_with_key(&m.finalize().into_bytes())
        };
        let mut f = root.clone();
        f.update(b"wardlink/v1/fingerprint");
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&f.finalize().into_bytes()[..8]);
        KeySet {
            pseudonym: sub(b"wardlink/v1/pseudonym"),
            date: sub(b"wardlink/v1/date-shift"),
            fingerprint: u64::from_le_bytes(fp),
        }
    }
}

/// The site's keys (and optionally the network's), ready to use.
#[derive(Clone)]
pub struct SiteKeys {
    site: KeySet,
    network: Option<KeySet>,
}

impl fmt::Debug for SiteKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteKeys")
            .field("network", &self.network.is_some())
            .finish_non_exhaustive()
    }
}

fn parse_hex_key(text: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let t = text.trim();
    if t.len() < 64 || t.len() & 1 != 0 {
        return Err(KeyError::BadFormat {
            path: path.to_owned(),
            why: "expected at least 64 hex digits (32 bytes)",
        });
    }
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks(2) {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            _ => {
                return Err(KeyError::BadFormat {
                    path: path.to_owned(),
                    why: "not hexadecimal",
                })
            }
        }
    }
    Ok(out)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    check_private(path)?;
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    parse_hex_key(&text, path)
}

fn create_key_file(path: &Path) -> Result<(), KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    let mut hex = String::with_capacity(65);
    push_hex(&mut hex, &secret);
    hex.push('\n');
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".site.key.tmp-{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
        drop(f);
        // A hard link fails if another process won the race; then its key is used.
        match fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::File::open(dir)?.sync_all()
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(io_err(path))
}

impl SiteKeys {
    /// Loads the site secret from `<state_dir>/site.key`, creating it (32
    /// random bytes, mode 0600) if it does not exist yet.
    ///
    /// # Errors
    /// I/O errors, a malformed file, a file readable by group or others, or
    /// no OS randomness.
    pub fn load_or_create(state_dir: &Path) -> Result<SiteKeys, KeyError> {
        let path = state_dir.join(SITE_KEY_FILE);
        if !path.exists() {
            fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
            create_key_file(&path)?;
        }
        let secret = read_key_file(&path)?;
        Ok(SiteKeys {
            site: KeySet::derive(&secret),
            network: None,
        })
    }

    /// Adds the network-scope secret from a file (64+ hex digits, mode 0600),
    /// shared by every site of a network.
    ///
    /// # Errors
    /// I/O errors, a malformed file or one readable by others.
    pub fn with_network_key_file(mut self, path: &Path) -> Result<SiteKeys, KeyError> {
        let secret = read_key_file(path)?;
        self.network = Some(KeySet::derive(&secret));
        Ok(self)
    }

    /// Keys from secrets in memory (tests and tools).
    pub fn from_secrets(site: &[u8], network: Option<&[u8]>) -> SiteKeys {
        SiteKeys {
            site: KeySet::derive(site),
            network: network.map(KeySet::derive),
        }
    }

    /// True when a network key is loaded.
    pub fn has_network(&self) -> bool {
        self.network.is_some()
    }

    /// The site-scoped pseudonym of an identifier made of `parts` (each
    /// normalized: trimmed, spaces and hyphens dropped, ASCII upper-cased).
    pub fn pseudonym(&self, kind: IdKind, parts: &[&str]) -> String {
        finish(kind, tag(&self.site.pseudonym, kind, parts))
    }

    /// Like [`SiteKeys::pseudonym`], as a shared string (one allocation).
    ///
    /// Rooms, beds and devices recur in every message of a monitor, so
    /// their pseudonyms are remembered per thread (bounded; keyed by the key
    /// set's fingerprint, kind and exact inputs). Patient, visit and other
    /// person-related identifiers are never cached.
    pub fn pseudonym_text(&self, kind: IdKind, parts: &[&str]) -> wardlink_sync::Text {
        if matches!(kind, IdKind::Location | IdKind::Device) {
            let fp = self.site.fingerprint;
            let h = parts.iter().fold(fp ^ kind as u64, |h, p| {
                (h ^ super::hl7::hash64(p)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            });
            let hit = PSEUDO_CACHE.with(|c| {
                let slots = c.try_borrow().ok()?;
                let e = slots.get((h as usize) & (CACHE_SLOTS - 1))?.as_ref()?;
                let same = e.hash == h
                    && e.fingerprint == fp
                    && e.kind == kind
                    && e.parts.len() == parts.len()
                    && e.parts.iter().zip(parts).all(|(a, b)| a == b);
                same.then(|| e.value.clone())
            });
            if let Some(v) = hit {
                return v;
            }
            let v = self.pseudonym_text_uncached(kind, parts);
            PSEUDO_CACHE.with(|c| {
                if let Ok(mut slots) = c.try_borrow_mut() {
                    if let Some(slot) = slots.get_mut((h as usize) & (CACHE_SLOTS - 1)) {
                        *slot = Some(CachedPseudonym {
                            hash: h,
                            fingerprint: fp,
                            kind,
                            parts: parts.iter().map(|p| (*p).to_owned()).collect(),
                            value: v.clone(),
                        });
                    }
                }
            });
            return v;
        }
        self.pseudonym_text_uncached(kind, parts)
    }

    fn pseudonym_text_uncached(&self, kind: IdKind, parts: &[&str]) -> wardlink_sync::Text {
        let t = tag(&self.site.pseudonym, kind, parts);
        let mut buf = [0u8; 35];
        let prefix = kind.prefix().as_bytes();
        buf[..3].copy_from_slice(prefix);
        for (i, b) in t[..16].iter().enumerate() {
            buf[3 + 2 * i] = HEX[usize::from(b >> 4)];
            buf[4 + 2 * i] = HEX[usize::from(b & 15)];
        }
        // Prefix and hex digits are ASCII, so this never fails.
        wardlink_sync::Text::from(std::str::from_utf8(&buf).unwrap_or(""))
    }

    /// The network-scoped pseudonym (`None` without a network key).
    pub fn network_pseudonym(&self, kind: IdKind, parts: &[&str]) -> Option<String> {
        let ks = self.network.as_ref()?;
        Some(finish(kind, tag(&ks.pseudonym, kind, parts)))
    }

    /// The per-subject date offset in whole days, uniform in `-max..=max`
    /// (§3: `(HMAC(k_date, subject) mod (2N+1)) − N`).
    pub fn date_offset_days(&self, subject: &str, max_days: u32) -> i32 {
        if max_days == 0 {
            return 0;
        }
        // The subject is a pseudonym (not an identifier); remember its offset
        // per thread, since a monitor reports the same patient every minute.
        let fp = self.site.fingerprint;
        let h = (super::hl7::hash64(subject) ^ fp ^ u64::from(max_days))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = (h as usize) & (CACHE_SLOTS - 1);
        let hit = OFFSET_CACHE.with(|c| {
            let slots = c.try_borrow().ok()?;
            let (k, f, d, s, off) = slots.get(slot)?.as_ref()?;
            (*k == h && *f == fp && *d == max_days && s == subject).then_some(*off)
        });
        if let Some(off) = hit {
            return off;
        }
        let off = self.date_offset_uncached(subject, max_days);
        OFFSET_CACHE.with(|c| {
            if let Ok(mut slots) = c.try_borrow_mut() {
                if let Some(e) = slots.get_mut(slot) {
                    *e = Some((h, fp, max_days, subject.to_owned(), off));
                }
            }
        });
        off
    }

    fn date_offset_uncached(&self, subject: &str, max_days: u32) -> i32 {
        let mut m = self.site.date.clone();
        m.update(b"v1|DATE|");
        m.update(subject.as_bytes());
        let t = m.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&t[..8]);
        let span = 2 * u64::from(max_days) + 1;
        (u64::from_be_bytes(first) % span) as i32 - max_days as i32
    }
}

const CACHE_SLOTS: usize = 1024;

struct CachedPseudonym {
    hash: u64,
    fingerprint: u64,
    kind: IdKind,
    parts: Vec<String>,
    value: wardlink_sync::Text,
}

/// (hash, key fingerprint, max days, subject pseudonym, offset).
type OffsetEntry = (u64, u64, u32, String, i32);

thread_local! {
    /// Date offsets by subject pseudonym (bounded like `PSEUDO_CACHE`).
    static OFFSET_CACHE: std::cell::RefCell<Vec<Option<OffsetEntry>>> =
        std::cell::RefCell::new((0..CACHE_SLOTS).map(|_| None).collect());
    /// Room, bed and device pseudonyms already computed on this thread; a
    /// slot collision replaces the entry, so it stays bounded.
    static PSEUDO_CACHE: std::cell::RefCell<Vec<Option<CachedPseudonym>>> =
        std::cell::RefCell::new((0..CACHE_SLOTS).map(|_| None).collect());
}

fn tag(base: &HmacSha256, kind: IdKind, parts: &[&str]) -> [u8; 32] {
    let mut m = base.clone();
    m.update(b"v1|");
    m.update(kind.label());
    for p in parts {
        m.update(b"|");
        feed_normalized(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

/// Feeds `s` normalized (spaces/tabs/hyphens dropped, ASCII upper-cased)
/// without allocating.
fn feed_normalized(m: &mut HmacSha256, s: &str) {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &b in s.trim().as_bytes() {
        if matches!(b, b' ' | b'\t' | b'-') {
            continue;
        }
        buf[n] = b.to_ascii_uppercase();
        n += 1;
        if n == buf.len() {
            m.update(&buf);
            n = 0;
        }
    }
    m.update(&buf[..n]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

fn finish(kind: IdKind, t: [u8; 32]) -> String {
    let mut s = String::with_capacity(3 + 32);
    s.push_str(kind.prefix());
    push_hex(&mut s, &t[..16]);
    s
}

/// Plain HMAC-SHA256 (for tests against RFC 4231 and for callers that need a raw tag).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = mac_with_key(key);
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        let mut s = String::new();
        push_hex(&mut s, b);
        s
    }

    #[test]
    fn rfc4231_case_2() {
        let t = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&t),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn normalization_and_domain_separation() {
        let k = SiteKeys::from_secrets(&[7u8; 32], None);
        let a = k.pseudonym(IdKind::Patient, &["HOSP", "MR", "ab-12 34"]);
        let b = k.pseudonym(IdKind::Patient, &["hosp", "MR", "AB1234"]);
        assert_eq!(a, b);
        assert!(a.starts_with("P1-") && a.len() == 35, "{a}");
        assert_eq!(
            &*k.pseudonym_text(IdKind::Patient, &["HOSP", "MR", "AB1234"]),
            a.as_str()
        );
        let c = k.pseudonym(IdKind::Visit, &["HOSP", "MR", "AB1234"]);
        assert_ne!(a[3..], c[3..]);
        // Long identifiers go through the chunked path.
        let long = "X".repeat(200);
        assert_ne!(
            k.pseudonym(IdKind::Other, &[&long]),
            k.pseudonym(IdKind::Other, &[&long[..199]])
        );
    }

    #[test]
    fn cached_location_pseudonyms_equal_uncached_and_respect_keys() {
        let a = SiteKeys::from_secrets(&[1u8; 32], None);
        let b = SiteKeys::from_secrets(&[2u8; 32], None);
        for _ in 0..3 {
            for (k, parts) in [
                (IdKind::Location, ["HOSP", "ICU", "R1", "B2"]),
                (IdKind::Device, ["0012AB", "", "", ""]),
            ] {
                assert_eq!(
                    a.pseudonym_text(k, &parts),
                    a.pseudonym_text_uncached(k, &parts)
                );
                assert_eq!(
                    b.pseudonym_text(k, &parts),
                    b.pseudonym_text_uncached(k, &parts)
                );
                assert_ne!(a.pseudonym_text(k, &parts), b.pseudonym_text(k, &parts));
            }
        }
        assert_ne!(
            a.pseudonym_text(IdKind::Location, &["H", "W", "R1"]),
            a.pseudonym_text(IdKind::Location, &["H", "W", "R1", ""])
        );
    }

    #[test]
    fn date_offsets_in_range_and_spread() {
        let k = SiteKeys::from_secrets(&[1u8; 32], None);
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let d = k.date_offset_days(&format!("P1-{i}"), 30);
            assert!((-30..=30).contains(&d));
            seen.insert(d);
        }
        assert!(seen.len() > 50, "{}", seen.len());
        for i in 0..100 {
            let s = format!("P1-{i}");
            assert_eq!(k.date_offset_days(&s, 30), k.date_offset_uncached(&s, 30));
            assert_eq!(k.date_offset_days(&s, 30), k.date_offset_uncached(&s, 30));
        }
        let other = SiteKeys::from_secrets(&[2u8; 32], None);
        let differ = (0..50).filter(|i| {
            let s = format!("P1-{i}");
            k.date_offset_days(&s, 180) != other.date_offset_days(&s, 180)
        });
        assert!(differ.count() > 40);
        assert_eq!(k.date_offset_days("x", 0), 0);
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = SiteKeys::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SITE_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let b = SiteKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(
            a.pseudonym(IdKind::Patient, &["1"]),
            b.pseudonym(IdKind::Patient, &["1"])
        );
        assert!(!format!("{a:?}").contains(&fs::read_to_string(&path).unwrap().trim()[..16]));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.key");
        fs::write(&path, "ab".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let k = SiteKeys::from_secrets(&[0; 32], None);
        let err = k.clone().with_network_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::Permissions { .. }), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(k.with_network_key_file(&path).unwrap().has_network());
        fs::write(&path, "zz").unwrap();
        let k = SiteKeys::from_secrets(&[0; 32], None);
        assert!(matches!(
            k.with_network_key_file(&path),
            Err(KeyError::BadFormat { .. })
        ));
    }
}
