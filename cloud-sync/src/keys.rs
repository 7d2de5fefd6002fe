//! Ed25519 identities: key files, printable public keys and gateway ids.
//!
//! Both ends sign: a gateway signs its batches, a collector signs its
//! receipts. Each keeps one Ed25519 secret seed (RFC 8032 §5.1.5) in a file
//! that only its owner may read.
//!
//! # Rules (`docs/batch-format.md` §6)
//! - **Key file**: exactly 64 lowercase hex digits (the 32-byte seed),
//!   optionally followed by one `\n`. Created with mode 0600 and never
//!   overwritten. An existing file that its group or others can read, or that
//!   is not a regular file, is refused: a leaked key lets anyone sign batches
//!   in that gateway's name.
//! - **Public key**: the 32-byte RFC 8032 public key as 64 lowercase hex
//!   digits.
//! - **Gateway id**: `gw-` followed by the first 12 bytes of
//!   SHA-256(public key bytes) in lowercase hex (27 characters in all). So an
//!   id names exactly one key, and `wardlink-collector enroll` can check that
//!   the id and key it was given belong together.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::hex;

/// Errors loading or creating a key file, or parsing a printed key or id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read, created or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file can be read by its group or by others.
    #[error("key file {path} has mode {mode:04o}, readable beyond its owner; run `chmod 600 {path}` (and consider the key leaked if others could read it)")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path exists but is not a regular file.
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The key file's content is not 64 lowercase hex digits.
    #[error("key file {path} does not hold an Ed25519 seed (64 lowercase hex digits and an optional newline)")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// No randomness could be had for a new key.
    #[error("cannot get randomness for a new key: {0}")]
    Random(String),
    /// A printed public key is not 64 lowercase hex digits of a valid point.
    #[error("public key {0:?} is not 64 lowercase hex digits of an Ed25519 public key")]
    BadPublicKey(String),
    /// A gateway id does not have the derived form.
    #[error("gateway id {0:?} is not `gw-` followed by 24 lowercase hex digits")]
    BadGatewayId(String),
}

/// A public key in its printable form (64 lowercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key as ed25519-dalek sees it.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Parse 32 raw bytes.
    ///
    /// # Errors
    /// The bytes are not a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::BadPublicKey(hex::encode(bytes)))
    }

    /// The gateway id this key stands for (see the module doc).
    pub fn gateway_id(&self) -> GatewayId {
        let digest = Sha256::digest(self.0.as_bytes());
        GatewayId(format!("gw-{}", hex::encode(&digest[..12])))
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(k: VerifyingKey) -> PublicKey {
        PublicKey(k)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        let bytes = hex::decode::<32>(s).ok_or_else(|| KeyError::BadPublicKey(s.to_string()))?;
        PublicKey::from_bytes(&bytes)
    }
}

/// A gateway's id: `gw-` + 24 lowercase hex digits, derived from its public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(String);

impl GatewayId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this id is the one derived from `key`.
    pub fn belongs_to(&self, key: &PublicKey) -> bool {
        key.gateway_id() == *self
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for GatewayId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<GatewayId, KeyError> {
        let ok = s
            .strip_prefix("gw-")
            .is_some_and(|h| hex::decode::<12>(h).is_some());
        if ok {
            Ok(GatewayId(s.to_string()))
        } else {
            Err(KeyError::BadGatewayId(s.to_string()))
        }
    }
}

/// An Ed25519 signing key kept in a file readable only by its owner.
pub struct SigningKeyFile {
    /// Where the seed lives.
    path: PathBuf,
    /// The key itself.
    key: SigningKey,
    /// Whether this call created the file (so `keygen` can say so).
    created: bool,
}

impl fmt::Debug for SigningKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the seed.
        f.debug_struct("SigningKeyFile")
            .field("path", &self.path)
            .field("public_key", &self.public_key())
            .field("created", &self.created)
            .finish()
    }
}

impl SigningKeyFile {
    /// Load the key at `path`, or create a new random one there (mode 0600)
    /// if there is no file.
    ///
    /// Creation is atomic and never overwrites: the seed is written and
    /// fsynced under a temporary name, then hard-linked to `path`, which fails
    /// if another process created the key first (then that key is loaded).
    ///
    /// # Errors
    /// The file cannot be read or created, is readable by group or others, is
    /// not a regular file, or does not hold a seed.
    pub fn load_or_create(path: &Path) -> Result<SigningKeyFile, KeyError> {
        match fs::symlink_metadata(path) {
            Ok(_) => return SigningKeyFile::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{}\n", hex::encode(&seed)).as_bytes())?;
            f.sync_all()
        };
        let linked = write().and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // Make the new directory entry durable too.
                    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                }
                Ok(SigningKeyFile {
                    path: path.to_path_buf(),
                    key: SigningKey::from_bytes(&seed),
                    created: true,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => SigningKeyFile::load(path),
            Err(e) => Err(io(e)),
        }
    }

    /// Load an existing key file.
    ///
    /// # Errors
    /// The file cannot be read, is readable by group or others, is not a
    /// regular file, or does not hold a seed.
    pub fn load(path: &Path) -> Result<SigningKeyFile, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => KeyError::BadKeyFile {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
        let hex_seed = text.strip_suffix('\n').unwrap_or(&text);
        let seed = hex::decode::<32>(hex_seed).ok_or_else(|| KeyError::BadKeyFile {
            path: path.to_path_buf(),
        })?;
        Ok(SigningKeyFile {
            path: path.to_path_buf(),
            key: SigningKey::from_bytes(&seed),
            created: false,
        })
    }

    /// A key from a known seed, kept in memory only (test vectors, tests).
    pub fn from_seed(seed: [u8; 32]) -> SigningKeyFile {
        SigningKeyFile {
            path: PathBuf::new(),
            key: SigningKey::from_bytes(&seed),
            created: false,
        }
    }

    /// The file the key lives in (empty for [`SigningKeyFile::from_seed`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether [`SigningKeyFile::load_or_create`] created the file just now.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// The gateway id derived from the public key.
    pub fn gateway_id(&self) -> GatewayId {
        self.public_key().gateway_id()
    }

    /// The command that enrolls this key at a collector, e.g.
    /// `wardlink-collector enroll --gateway-id gw-… --public-key 3d40…`.
    pub fn enroll_command(&self) -> String {
        format!(
            "wardlink-collector enroll --gateway-id {} --public-key {}",
            self.gateway_id(),
            self.public_key()
        )
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failed step is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_mode_0600_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gateway.key");
        let a = SigningKeyFile::load_or_create(&path).unwrap();
        assert!(a.was_created());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SigningKeyFile::load_or_create(&path).unwrap();
        assert!(!b.was_created());
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        SigningKeyFile::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = SigningKeyFile::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::TooOpen { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn refuses_a_file_that_is_not_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"not a key\n").unwrap();
        let err = SigningKeyFile::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::BadKeyFile { .. }), "{err}");
    }

    #[test]
    fn public_key_and_gateway_id_print_and_parse() {
        let k = SigningKeyFile::from_seed([7; 32]);
        let printed = k.public_key().to_string();
        assert_eq!(printed.len(), 64);
        assert_eq!(printed.parse::<PublicKey>().unwrap(), k.public_key());
        let id = k.gateway_id();
        assert_eq!(id.as_str().len(), 27);
        assert_eq!(id.as_str().parse::<GatewayId>().unwrap(), id);
        assert!(id.belongs_to(&k.public_key()));
        assert!(!id.belongs_to(&SigningKeyFile::from_seed([8; 32]).public_key()));
        assert!("gw-XYZ".parse::<GatewayId>().is_err());
        assert!(printed.to_uppercase().parse::<PublicKey>().is_err());
        let cmd = k.enroll_command();
        assert!(cmd.contains(&format!("--gateway-id {id} --public-key {printed}")));
    }
}
