//! The spool: whole C-STORE objects kept as DICOM Part 10 files in a
//! bounded local directory (`keep_files_dir`), for a later forward (issue 7).
//!
//! Without it a C-STORE keeps only its header and counts the pixels; with
//! it the listener also streams every fragment of the data set, exactly as
//! received, into a file behind a Part 10 header ([`super::part10`]: the
//! negotiated transfer syntax, the SOP class and instance of the command,
//! the calling AE title).
//!
//! # On disk
//!
//! Directories are mode 0700 and files 0600: the objects are raw PHI.
//! - `<dir>/.partial/<run>-<n>.part`: objects being received. One is removed
//!   when its object is aborted, truncated, malformed or refused; all of
//!   them when the spool is opened (what a crash or `kill -9` left).
//! - `<dir>/<hh>/<h>.dcm`: kept objects. `h` is the first 32 hex digits of
//!   the SHA-256 of the SOP Instance UID and `hh` its first two (256
//!   directories at most). File names carry no PHI (a UID can embed dates
//!   and serial numbers); a forwarder finds the file of a stored row from
//!   its control id, the SOP Instance UID. A resend of the same instance
//!   replaces its file.
//!
//! # Invariants
//!
//! - **A file under its stable name is complete and durable**: written under
//!   `.partial`, fsync'd, renamed, and its directory fsync'd. The listener
//!   answers success only after that *and* the store's commit of the header.
//! - **Quota** (`keep_files_max_bytes`): the bytes of kept files plus the
//!   bytes written so far by objects in progress never exceed it. When a
//!   fragment needs room, the **oldest kept files are deleted**. Why evict
//!   rather than refuse: the spool is a convenience copy (retention deletes
//!   its files anyway), while the header in the store is what the success
//!   status vouches for; refusing with 0xA700 would stop a modality's whole
//!   queue because of a copy. Only an object that cannot fit even with every
//!   kept file deleted (larger than the quota, or the objects in progress
//!   together) is refused with 0xA700: a success would promise a file that
//!   does not exist. A C-STORE does not announce its size, so such an object
//!   is found out as it streams, and the files deleted to make room for its
//!   first part stay deleted: the directory never holds more than the quota.
//! - **Retention** (`keep_files_retention`): a file older than it is deleted
//!   — at open, after each kept object, and by the listener's timer
//!   ([`sweep_interval`]). The age is the file's modification time: when it
//!   was received.
//! - **Bounded memory**: one fragment at a time (at most `max_pdu` bytes),
//!   and an index entry of about 100 bytes per kept file (20 GiB of 0.5 MB CT
//!   slices: 40 000 entries, 4 MB).
//!
//! # Design
//!
//! The `Index` (pure: no I/O, tested alone) orders kept files by age and
//! counts used and reserved bytes. Every rename, eviction and retention
//! delete happens under its lock, so a resend replacing a file is never
//! undone by a concurrent eviction of the older copy. File I/O runs on
//! tokio's blocking pool, one fragment per task; a task that outlives its
//! association (aborted at shutdown) still removes its partial file and
//! returns its reservation, because both belong to `Pending`'s `Drop`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use wardlink_config::KeepFiles;

use super::part10::FileMeta;

/// The directory of objects in progress, inside the spool.
const PARTIAL: &str = ".partial";
/// Mode of the spool's directories.
const DIR_MODE: u32 = 0o700;
/// Mode of the spool's files.
const FILE_MODE: u32 = 0o600;

/// Why the spool could not keep an object (answered 0xA700), or could not
/// be opened (the source does not start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    // The OS error is part of the message (not a `source`): these are
    // logged with `%e` on one line, and the error names its file.
    /// The spool directory cannot be created, secured or read.
    #[error("spool directory {}: {error}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Creating, writing, syncing or renaming a spool file failed.
    #[error("spool file {}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The object does not fit even with every kept file deleted.
    #[error(
        "the object needs more room than keep_files_max_bytes ({max} bytes) leaves beside the \
         objects in progress ({needed} bytes of it so far)"
    )]
    OverQuota {
        /// Bytes of this object so far, the fragment that did not fit included.
        needed: u64,
        /// The quota.
        max: u64,
    },
}

/// How often the listener applies the retention: a quarter of it, between
/// 250 ms and a minute, so a file outlives its retention by at most that.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

/// A kept file's identity: the first 16 bytes of the SHA-256 of its SOP
/// Instance UID.
type FileId = [u8; 16];

fn file_id(sop_instance: &str) -> FileId {
    let digest = Sha256::digest(sop_instance.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

fn hex(id: &FileId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the kept file of a SOP Instance UID is in the spool directory
/// `dir` (whether or not it exists): `dir/hh/h.dcm`.
pub fn kept_path(dir: &Path, sop_instance: &str) -> PathBuf {
    dir.join(relative(&file_id(sop_instance)))
}

/// `hh/h.dcm` for an id, relative to the spool directory.
fn relative(id: &FileId) -> PathBuf {
    let h = hex(id);
    PathBuf::from(&h[..2]).join(format!("{h}.dcm"))
}

/// The id of a file name `h.dcm` in directory `hh`, if it is one.
fn parse_name(dir: &str, name: &str) -> Option<FileId> {
    let h = name.strip_suffix(".dcm")?;
    if h.len() != 32 || !h.starts_with(dir) || dir.len() != 2 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        let pair = h.get(2 * i..2 * i + 2)?;
        if !pair
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(id)
}

/// The kept files ordered by age, and the byte counts of the quota.
///
/// Design: `used` is the bytes of the files in `by_age`; `reserved` the
/// bytes written so far by objects in progress, which become `used` when
/// their file is kept. The quota holds for `used + reserved`. Worked
/// example, quota 100: kept files A (40, oldest) and B (40); an object in
/// progress reserves 15 (used 80 + reserved 15 = 95), then 10 more: 105 >
/// 100, so A is evicted (used 40, reserved 25). An object reserving 101 at
/// once is refused without evicting anything: it could never fit.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Kept files, oldest first: (received at, insertion number) → (id, bytes).
    by_age: BTreeMap<(SystemTime, u64), (FileId, u64)>,
    /// Where each id is in `by_age`.
    by_id: HashMap<FileId, (SystemTime, u64)>,
    /// Bytes of the kept files.
    used: u64,
    /// Bytes written by objects in progress.
    reserved: u64,
    /// Insertion counter: ties in `by_age` keep their order.
    seq: u64,
}

impl Index {
    /// Records a kept file; a file of the same id is replaced (the rename
    /// overwrote it) and its bytes are freed.
    pub(crate) fn insert(&mut self, id: FileId, at: SystemTime, bytes: u64) {
        self.remove(&id);
        self.seq += 1;
        let key = (at, self.seq);
        self.by_age.insert(key, (id, bytes));
        self.by_id.insert(id, key);
        self.used += bytes;
    }

    /// Forgets a kept file; its bytes if it was there.
    pub(crate) fn remove(&mut self, id: &FileId) -> Option<u64> {
        let key = self.by_id.remove(id)?;
        let (_, bytes) = self.by_age.remove(&key)?;
        self.used = self.used.saturating_sub(bytes);
        Some(bytes)
    }

    fn pop_oldest(&mut self) -> Option<FileId> {
        let (_, (id, bytes)) = self.by_age.pop_first()?;
        self.by_id.remove(&id);
        self.used = self.used.saturating_sub(bytes);
        Some(id)
    }

    /// Makes room for `n` more bytes of an object in progress: the ids of
    /// the kept files to delete for it, oldest first. `None` (and nothing
    /// changed) when the objects in progress alone would exceed `max`.
    pub(crate) fn reserve(&mut self, n: u64, max: u64) -> Option<Vec<FileId>> {
        let wanted = self.reserved.checked_add(n)?;
        if wanted > max {
            return None;
        }
        let mut evicted = Vec::new();
        while self.used.saturating_add(wanted) > max {
            // `used > 0` here since `wanted <= max`, so there is a file to pop.
            let Some(id) = self.pop_oldest() else { break };
            evicted.push(id);
        }
        self.reserved = wanted;
        Some(evicted)
    }

    /// Returns `n` reserved bytes (an object aborted, or kept: then
    /// [`Index::insert`] counts them as used).
    pub(crate) fn release(&mut self, n: u64) {
        self.reserved = self.reserved.saturating_sub(n);
    }

    /// The kept files to delete so that `used + reserved <= max` (after the
    /// quota was lowered), oldest first.
    pub(crate) fn trim(&mut self, max: u64) -> Vec<FileId> {
        let mut evicted = Vec::new();
        while self.used.saturating_add(self.reserved) > max {
            let Some(id) = self.pop_oldest() else { break };
            evicted.push(id);
        }
        evicted
    }

    /// The kept files received at or before `now - retention`, oldest first.
    pub(crate) fn expire(&mut self, now: SystemTime, retention: Duration) -> Vec<FileId> {
        let Some(cutoff) = now.checked_sub(retention) else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        while let Some((&(at, _), _)) = self.by_age.first_key_value() {
            if at > cutoff {
                break;
            }
            if let Some(id) = self.pop_oldest() {
                expired.push(id);
            }
        }
        expired
    }

    /// Kept files.
    pub(crate) fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Bytes of kept files and of objects in progress.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.used, self.reserved)
    }
}

/// One source's spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    partial: PathBuf,
    max_bytes: u64,
    retention: Duration,
    index: Mutex<Index>,
    /// Partial file names: `<run>-<n>`, `run` = when this spool was opened
    /// (so a partial file of a previous instance, still being dropped after
    /// a reload, never shares a name with one of this instance).
    run: u128,
    next: AtomicU64,
}

fn dir_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |error| SpoolError::Dir {
        path: path.to_owned(),
        error,
    }
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |error| SpoolError::File {
        path: path.to_owned(),
        error,
    }
}

/// Creates `path` (and missing parents) with mode 0700 if it is missing.
fn make_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// fsync a directory, so that a rename or a new entry in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Calls `found` with each kept file in `dir` (id, modified, length);
/// anything else in the directory is left alone.
fn scan(dir: &Path, mut found: impl FnMut(FileId, SystemTime, u64)) -> Result<(), SpoolError> {
    for entry in std::fs::read_dir(dir).map_err(dir_error(dir))? {
        let entry = entry.map_err(dir_error(dir))?;
        let Some(fan) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if fan.len() != 2 || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let fan_path = entry.path();
        for file in std::fs::read_dir(&fan_path).map_err(dir_error(&fan_path))? {
            let file = file.map_err(dir_error(&fan_path))?;
            let Some(id) = file.file_name().to_str().and_then(|n| parse_name(&fan, n)) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_file() {
                found(
                    id,
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    meta.len(),
                );
            }
        }
    }
    Ok(())
}

/// The kept files in the spool directory `dir` and their bytes, read from
/// the disk (for `wardlink status`, a process apart from the daemon's
/// [`Spool`]). A missing directory holds nothing.
///
/// # Errors
/// [`SpoolError::Dir`] when the directory exists but cannot be read.
pub fn usage_on_disk(dir: &Path) -> Result<(usize, u64), SpoolError> {
    if !dir.exists() {
        return Ok((0, 0));
    }
    let (mut files, mut bytes) = (0_usize, 0_u64);
    scan(dir, |_, _, len| {
        files += 1;
        bytes += len;
    })?;
    Ok((files, bytes))
}

impl Spool {
    /// Opens the spool of `keep`, creating its directory (mode 0700; an
    /// existing one is set to 0700), removing the partial files a previous
    /// run left, indexing the kept files, and deleting those beyond the
    /// quota or the retention. Blocking I/O.
    ///
    /// # Errors
    /// [`SpoolError::Dir`] when the directory cannot be created, secured or
    /// read.
    pub fn open(keep: &KeepFiles) -> Result<Spool, SpoolError> {
        let dir = keep.dir.clone();
        let partial = dir.join(PARTIAL);
        make_dir(&dir).map_err(dir_error(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(dir_error(&dir))?;
        make_dir(&partial).map_err(dir_error(&partial))?;
        for entry in std::fs::read_dir(&partial).map_err(dir_error(&partial))? {
            let entry = entry.map_err(dir_error(&partial))?;
            let path = entry.path();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "Cannot remove a partial spool file");
            }
        }
        let mut index = Index::default();
        scan(&dir, |id, at, len| index.insert(id, at, len))?;
        let run = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let spool = Spool {
            dir,
            partial,
            max_bytes: keep.max_bytes,
            retention: keep.retention,
            index: Mutex::new(index),
            run,
            next: AtomicU64::new(0),
        };
        {
            let mut index = spool.lock();
            let over = index.trim(spool.max_bytes);
            spool.delete(&over, "over keep_files_max_bytes");
        }
        spool.sweep();
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The retention of kept files.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Kept files, their bytes, and the bytes of objects in progress.
    pub fn usage(&self) -> (usize, u64, u64) {
        let index = self.lock();
        let (used, reserved) = index.bytes();
        (index.len(), used, reserved)
    }

    /// Where the kept file of a SOP Instance UID is (whether or not it exists).
    pub fn path_of(&self, sop_instance: &str) -> PathBuf {
        kept_path(&self.dir, sop_instance)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves counts that are at worst
        // off by one object: keep going rather than poison every store.
        match self.index.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Deletes kept files already taken out of the index. Called with the
    /// index locked, so that no rename to the same name runs in between.
    fn delete(&self, ids: &[FileId], why: &str) {
        for id in ids {
            let path = self.dir.join(relative(id));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), why, "Deleted a kept DICOM file");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), why, error = %e, "Cannot delete a kept DICOM file");
                }
            }
        }
    }

    /// Deletes the kept files older than the retention; how many. Blocking.
    pub fn sweep(&self) -> usize {
        let index = &mut *self.lock();
        let expired = index.expire(SystemTime::now(), self.retention);
        self.delete(&expired, "older than keep_files_retention");
        expired.len()
    }

    /// Reserves `n` bytes for an object in progress, deleting the oldest
    /// kept files if needed. Blocking.
    fn reserve(&self, n: u64, so_far: u64) -> Result<(), SpoolError> {
        let index = &mut *self.lock();
        let Some(evicted) = index.reserve(n, self.max_bytes) else {
            return Err(SpoolError::OverQuota {
                needed: so_far + n,
                max: self.max_bytes,
            });
        };
        if !evicted.is_empty() {
            tracing::info!(
                dir = %self.dir.display(),
                deleted = evicted.len(),
                "DICOM spool at keep_files_max_bytes: deleted the oldest kept files"
            );
            self.delete(&evicted, "oldest, for room under keep_files_max_bytes");
        }
        Ok(())
    }

    fn release(&self, n: u64) {
        self.lock().release(n);
    }

    /// Starts the file of one object: a partial file holding the Part 10
    /// header of `meta`. Never fails: a failure is kept in the returned
    /// [`SpoolFile`] and reported by [`SpoolFile::keep`], so the data set
    /// is still read to its end and the association goes on.
    pub async fn begin(self: &Arc<Self>, meta: &FileMeta<'_>) -> SpoolFile {
        let header = meta.header();
        let spool = self.clone();
        let started = tokio::task::spawn_blocking(move || Pending::create(spool, &header)).await;
        SpoolFile {
            state: match started {
                Ok(Ok(p)) => State::Writing(p),
                Ok(Err(e)) => State::Failed(e),
                Err(e) => State::Failed(task_failed(&self.partial, e)),
            },
        }
    }
}

fn task_failed(path: &Path, e: tokio::task::JoinError) -> SpoolError {
    SpoolError::File {
        path: path.to_owned(),
        error: io::Error::other(format!("spool task failed: {e}")),
    }
}

/// A partial file being written. Dropped before [`Pending::commit`], it
/// deletes the file and returns its reservation.
#[derive(Debug)]
struct Pending {
    spool: Arc<Spool>,
    path: PathBuf,
    file: File,
    /// Bytes written (and reserved): the file's length.
    written: u64,
    /// Renamed to its stable name: nothing to clean up.
    kept: bool,
}

impl Pending {
    fn create(spool: Arc<Spool>, header: &[u8]) -> Result<Pending, SpoolError> {
        let n = spool.next.fetch_add(1, Ordering::Relaxed);
        let path = spool.partial.join(format!("{}-{n}.part", spool.run));
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
        };
        let file = match create() {
            // The directory went away (removed, a disk remounted): made
            // again, so the spool recovers without a restart.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                make_dir(&spool.partial).map_err(dir_error(&spool.partial))?;
                create()
            }
            other => other,
        }
        .map_err(file_error(&path))?;
        let mut pending = Pending {
            spool,
            path,
            file,
            written: 0,
            kept: false,
        };
        pending.append(header)?;
        Ok(pending)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let n = bytes.len() as u64;
        self.spool.reserve(n, self.written)?;
        // Reserved from here on: `Drop` returns it whether or not the write works.
        self.written += n;
        self.file.write_all(bytes).map_err(file_error(&self.path))
    }

    /// fsync, rename to the stable name of `id`, fsync the directory.
    fn commit(mut self, id: FileId) -> Result<u64, SpoolError> {
        self.file.sync_all().map_err(file_error(&self.path))?;
        let spool = self.spool.clone();
        let target = spool.dir.join(relative(&id));
        let fan = target.parent().unwrap_or(&spool.dir).to_owned();
        if !fan.is_dir() {
            make_dir(&fan).map_err(dir_error(&fan))?;
            sync_dir(&spool.dir).map_err(dir_error(&spool.dir))?;
        }
        {
            let index = &mut *spool.lock();
            std::fs::rename(&self.path, &target).map_err(file_error(&target))?;
            self.kept = true;
            index.release(self.written);
            index.insert(id, SystemTime::now(), self.written);
            let expired = index.expire(SystemTime::now(), spool.retention);
            spool.delete(&expired, "older than keep_files_retention");
        }
        sync_dir(&fan).map_err(dir_error(&fan))?;
        Ok(self.written)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "Cannot remove a partial spool file");
            }
        }
        self.spool.release(self.written);
    }
}

#[derive(Debug)]
enum State {
    Writing(Pending),
    Failed(SpoolError),
    /// Between states, while a blocking task holds the file.
    Busy,
}

/// The file of one object in progress. Dropped before [`SpoolFile::keep`]
/// (an A-ABORT, a closed socket, a malformed data set, a refusal), it leaves
/// nothing behind.
#[derive(Debug)]
pub struct SpoolFile {
    state: State,
}

impl SpoolFile {
    /// Appends the next fragment of the data set. A failure (disk full,
    /// permissions, over the quota) deletes the partial file and is kept for
    /// [`SpoolFile::keep`]; later fragments are then ignored.
    pub async fn append(&mut self, fragment: Vec<u8>) {
        let mut pending = match std::mem::replace(&mut self.state, State::Busy) {
            State::Writing(p) => p,
            other => {
                // Failed (or Busy after a cancelled append): stays so.
                self.state = other;
                return;
            }
        };
        let path = pending.path.clone();
        let done = tokio::task::spawn_blocking(move || {
            let r = pending.append(&fragment);
            (pending, r)
        })
        .await;
        self.state = match done {
            Ok((pending, Ok(()))) => State::Writing(pending),
            // Dropping `pending` deletes the partial file.
            Ok((_, Err(e))) => State::Failed(e),
            Err(e) => State::Failed(task_failed(&path, e)),
        };
    }

    /// Makes the file durable under the stable name of `sop_instance`.
    ///
    /// # Errors
    /// The first failure of this object's file (it is gone then).
    pub async fn keep(self, sop_instance: &str) -> Result<KeptFile, SpoolError> {
        let pending = match self.state {
            State::Writing(p) => p,
            State::Failed(e) => return Err(e),
            State::Busy => {
                return Err(SpoolError::File {
                    path: PathBuf::from(PARTIAL),
                    error: io::Error::other("an earlier write did not finish"),
                })
            }
        };
        let id = file_id(sop_instance);
        let spool = pending.spool.clone();
        let path = pending.path.clone();
        let bytes = tokio::task::spawn_blocking(move || pending.commit(id))
            .await
            .map_err(|e| task_failed(&path, e))??;
        Ok(KeptFile { spool, id, bytes })
    }
}

/// A file kept under its stable name.
#[derive(Debug)]
pub struct KeptFile {
    spool: Arc<Spool>,
    id: FileId,
    /// Its length.
    pub bytes: u64,
}

impl KeptFile {
    /// Its path.
    pub fn path(&self) -> PathBuf {
        self.spool.dir.join(relative(&self.id))
    }

    /// Deletes it again: the store refused the object's header, so the
    /// sender gets a failure and sends again; no file may outlive that
    /// (a resend writes it anew).
    pub async fn discard(self) {
        let KeptFile { spool, id, .. } = self;
        let _ = tokio::task::spawn_blocking(move || {
            let index = &mut *spool.lock();
            if index.remove(&id).is_some() {
                spool.delete(&[id], "the store refused the object");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn id(n: u8) -> FileId {
        [n; 16]
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reserve_evicts_the_oldest_until_the_object_fits() {
        let mut index = Index::default();
        index.insert(id(1), at(10), 40);
        index.insert(id(2), at(20), 40);
        assert_eq!(index.reserve(15, 100), Some(Vec::<FileId>::new()));
        assert_eq!(index.bytes(), (80, 15));
        // 80 + 25 > 100: the oldest goes.
        assert_eq!(index.reserve(10, 100), Some(vec![id(1)]));
        assert_eq!(index.bytes(), (40, 25));
        // Kept: the reservation becomes used.
        index.release(25);
        index.insert(id(3), at(30), 25);
        assert_eq!(index.bytes(), (65, 0));
        // Needs everything: both older files go, oldest first.
        assert_eq!(index.reserve(100, 100), Some(vec![id(2), id(3)]));
        assert_eq!(index.bytes(), (0, 100));
        // More than the quota beside what is in progress: refused, nothing changes.
        assert_eq!(index.reserve(1, 100), None);
        assert_eq!(index.bytes(), (0, 100));
        index.release(100);
        assert_eq!(index.reserve(101, 100), None);
        assert_eq!(index.reserve(u64::MAX, 100), None);
        assert_eq!(index.bytes(), (0, 0));
    }

    #[test]
    fn a_resend_replaces_its_file_and_frees_the_old_bytes() {
        let mut index = Index::default();
        index.insert(id(1), at(10), 40);
        index.insert(id(2), at(20), 30);
        index.insert(id(1), at(30), 50);
        assert_eq!(index.len(), 2);
        assert_eq!(index.bytes(), (80, 0));
        // id 1 is now the newest: id 2 is evicted first.
        assert_eq!(index.reserve(30, 100), Some(vec![id(2)]));
        assert_eq!(index.remove(&id(1)), Some(50));
        assert_eq!(index.remove(&id(1)), None);
        assert_eq!(index.bytes(), (0, 30));
    }

    #[test]
    fn expire_and_trim() {
        let mut index = Index::default();
        index.insert(id(1), at(100), 10);
        index.insert(id(2), at(200), 10);
        index.insert(id(3), at(300), 10);
        assert_eq!(
            index.expire(at(150), Duration::from_secs(100)),
            Vec::<FileId>::new()
        );
        // Received at or before 300 - 100.
        assert_eq!(
            index.expire(at(300), Duration::from_secs(100)),
            vec![id(1), id(2)]
        );
        assert_eq!(
            index.expire(at(0), Duration::from_secs(100)),
            Vec::<FileId>::new()
        );
        index.insert(id(4), at(400), 10);
        index.insert(id(5), at(500), 10);
        assert_eq!(index.trim(25), vec![id(3)]);
        assert_eq!(index.bytes(), (20, 0));
    }

    #[test]
    fn names_are_hashes_and_parse_back() {
        let i = file_id("1.2.840.113619.2.55.3.604688119");
        let rel = relative(&i);
        let (fan, name) = (
            rel.parent().and_then(Path::to_str).unwrap_or_default(),
            rel.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        );
        assert_eq!(fan.len(), 2);
        assert_eq!(name.len(), 32 + 4);
        assert!(!name.contains("1.2.840"));
        assert_eq!(parse_name(fan, name), Some(i));
        assert_eq!(parse_name("00", name), None, "wrong directory");
        assert_eq!(parse_name(fan, &name.to_uppercase()), None);
        assert_eq!(parse_name(fan, "x.dcm"), None);
    }

    fn keep(dir: &Path, max_bytes: u64) -> KeepFiles {
        KeepFiles {
            dir: dir.join("spool"),
            max_bytes,
            retention: Duration::from_secs(3600),
        }
    }

    fn meta() -> FileMeta<'static> {
        FileMeta {
            sop_class: super::super::uids::CT_IMAGE,
            sop_instance: "1.2.3",
            transfer_syntax: super::super::uids::EXPLICIT_VR_LE,
            calling_ae: "CT1",
            private: None,
        }
    }

    #[tokio::test]
    async fn a_kept_file_is_the_header_then_the_fragments_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&keep(tmp.path(), 1 << 20)).unwrap());
        let mut file = spool.begin(&meta()).await;
        file.append(b"abc".to_vec()).await;
        file.append(b"defg".to_vec()).await;
        let kept = file.keep("1.2.3").await.unwrap();
        let bytes = std::fs::read(kept.path()).unwrap();
        let header = meta().header();
        assert_eq!(&bytes[..header.len()], &header[..]);
        assert_eq!(&bytes[header.len()..], b"abcdefg");
        assert_eq!(kept.bytes, bytes.len() as u64);
        assert_eq!(kept.path(), spool.path_of("1.2.3"));
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&kept.path()), 0o600);
        assert_eq!(mode(spool.dir()), 0o700);
        assert_eq!(mode(kept.path().parent().unwrap_or(spool.dir())), 0o700);
        assert_eq!(spool.usage(), (1, bytes.len() as u64, 0));
        // Nothing left in .partial.
        assert_eq!(
            std::fs::read_dir(spool.dir().join(PARTIAL))
                .map(Iterator::count)
                .unwrap_or(9),
            0
        );
        // Reopened: the file is indexed again.
        drop(spool);
        let spool = Spool::open(&keep(tmp.path(), 1 << 20)).unwrap();
        assert_eq!(spool.usage(), (1, bytes.len() as u64, 0));
        // Discarded: gone.
        let spool = Arc::new(spool);
        let mut file = spool.begin(&meta()).await;
        file.append(b"x".to_vec()).await;
        let kept = file.keep("9.9").await.unwrap();
        let path = kept.path();
        assert!(path.exists());
        kept.discard().await;
        assert!(!path.exists());
        assert_eq!(spool.usage().0, 1);
    }

    #[tokio::test]
    async fn a_dropped_file_leaves_nothing_and_returns_its_reservation() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&keep(tmp.path(), 1 << 20)).unwrap());
        let mut file = spool.begin(&meta()).await;
        file.append(vec![7; 1000]).await;
        assert!(spool.usage().2 > 1000);
        assert_eq!(
            std::fs::read_dir(spool.dir().join(PARTIAL))
                .map(Iterator::count)
                .unwrap_or(0),
            1
        );
        drop(file);
        assert_eq!(spool.usage(), (0, 0, 0));
        assert_eq!(
            std::fs::read_dir(spool.dir().join(PARTIAL))
                .map(Iterator::count)
                .unwrap_or(9),
            0
        );
    }

    #[tokio::test]
    async fn over_quota_the_oldest_go_and_a_too_large_object_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let spool = Arc::new(Spool::open(&keep(tmp.path(), max)).unwrap());
        let mut paths = Vec::new();
        for n in 0..5 {
            let mut file = spool.begin(&meta()).await;
            file.append(vec![n; 300_000]).await;
            let kept = file.keep(&format!("1.2.{n}")).await.unwrap();
            paths.push(kept.path());
        }
        let exists: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(
            exists,
            [false, false, true, true, true],
            "three fit in 1 MiB"
        );
        let (files, used, reserved) = spool.usage();
        assert_eq!((files, reserved), (3, 0));
        assert!(used <= max);
        let mut file = spool.begin(&meta()).await;
        file.append(vec![0; max as usize]).await;
        match file.keep("1.2.99").await {
            Err(SpoolError::OverQuota { max: m, .. }) => assert_eq!(m, max),
            other => panic!("{other:?}"),
        }
        // One fragment larger than the quota: refused before deleting anything.
        assert_eq!(spool.usage(), (3, used, 0));
        // A lower quota at the next open trims the oldest (by modification
        // time, which the file system may round: set them apart).
        drop(spool);
        for (n, path) in paths[2..].iter().enumerate() {
            let when = SystemTime::now() - Duration::from_secs(30 - 10 * n as u64);
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        let spool = Spool::open(&keep(tmp.path(), 700_000)).unwrap();
        assert_eq!(spool.usage().0, 2);
        assert!(!paths[2].exists() && paths[3].exists());
    }

    #[tokio::test]
    async fn an_unwritable_spool_fails_the_object_and_recovers() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&keep(tmp.path(), 1 << 20)).unwrap());
        // Root ignores permissions: break the directory itself instead.
        let partial = spool.dir().join(PARTIAL);
        std::fs::remove_dir(&partial).unwrap();
        std::fs::write(&partial, b"not a directory").unwrap();
        let mut file = spool.begin(&meta()).await;
        file.append(b"abc".to_vec()).await;
        match file.keep("1.2.3").await {
            Err(SpoolError::File { path, .. }) => assert!(path.starts_with(&partial)),
            other => panic!("{other:?}"),
        }
        assert_eq!(spool.usage(), (0, 0, 0));
        std::fs::remove_file(&partial).unwrap();
        make_dir(&partial).unwrap();
        let mut file = spool.begin(&meta()).await;
        file.append(b"abc".to_vec()).await;
        assert!(file.keep("1.2.3").await.is_ok());
        // The whole directory removed: made again (0700), the index goes on.
        std::fs::remove_dir_all(spool.dir()).unwrap();
        let mut file = spool.begin(&meta()).await;
        file.append(b"abc".to_vec()).await;
        let kept = file.keep("1.2.4").await.unwrap();
        assert!(kept.path().is_file());
        let mode = std::fs::metadata(spool.dir())
            .map(|m| m.mode() & 0o777)
            .unwrap();
        assert_eq!(mode, 0o700);
    }

    /// Many objects at once, some aborted, some too large, over a small
    /// quota: afterwards nothing is reserved, the index counts exactly the
    /// files on disk, and they fit the quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_objects_keep_the_accounting_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let spool = Arc::new(Spool::open(&keep(tmp.path(), max)).unwrap());
        // At most 8 at once, as a listener's max_associations would.
        let slots = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::new();
        for n in 0..48u32 {
            let spool = spool.clone();
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                let mut file = spool.begin(&meta()).await;
                // 20 kB to 460 kB in 10 kB fragments; one in 16 is over the quota.
                let fragments = if n % 16 == 5 {
                    120
                } else {
                    2 + (n % 45) as usize
                };
                for _ in 0..fragments {
                    file.append(vec![n as u8; 10_000]).await;
                    tokio::task::yield_now().await;
                }
                match n % 7 {
                    // Aborted: dropped unfinished.
                    0 => None,
                    // Some instances twice: a resend replaces its file.
                    _ => Some(file.keep(&format!("1.2.{}", n % 40)).await.is_ok()),
                }
            }));
        }
        let mut kept = 0;
        for t in tasks {
            if t.await.unwrap() == Some(true) {
                kept += 1;
            }
        }
        // How many fit depends on the interleaving (objects in progress are
        // never evicted, so a large one can crowd out others): the
        // accounting must be exact whatever it was.
        assert!(kept >= 1, "{kept}");
        let (files, used, reserved) = spool.usage();
        assert_eq!(reserved, 0);
        assert!(used <= max, "{used}");
        let on_disk: Vec<u64> = std::fs::read_dir(spool.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != PARTIAL)
            .flat_map(|fan| std::fs::read_dir(fan.path()).unwrap().flatten())
            .map(|f| f.metadata().unwrap().len())
            .collect();
        assert_eq!(on_disk.len(), files);
        assert_eq!(on_disk.iter().sum::<u64>(), used);
        assert_eq!(
            std::fs::read_dir(spool.dir().join(PARTIAL))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn open_removes_partial_files_and_ignores_strangers() {
        let tmp = tempfile::tempdir().unwrap();
        let k = keep(tmp.path(), 1 << 20);
        std::fs::create_dir_all(k.dir.join(PARTIAL)).unwrap();
        std::fs::create_dir_all(k.dir.join("ab")).unwrap();
        std::fs::write(k.dir.join(PARTIAL).join("1-0.part"), b"half").unwrap();
        std::fs::write(k.dir.join("ab").join("notes.txt"), b"x").unwrap();
        std::fs::write(k.dir.join("README"), b"x").unwrap();
        let spool = Spool::open(&k).unwrap();
        assert_eq!(spool.usage(), (0, 0, 0));
        assert!(!k.dir.join(PARTIAL).join("1-0.part").exists());
        assert!(k.dir.join("ab").join("notes.txt").exists());
    }

    #[test]
    fn sweep_intervals() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(7 * 86400)),
            Duration::from_secs(60)
        );
    }
}
