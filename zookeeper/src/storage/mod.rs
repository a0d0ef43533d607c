//! Durable storage of the mini-zookeeper: a write-ahead log with group commit, plus
//! snapshots.
//!
//! The storage keeps opaque byte records, each tagged with its zxid; the server encodes its
//! transactions and its tree snapshots (CBOR) and this module knows nothing about znodes.
//! Everything is synchronous std I/O, meant to run on a dedicated thread (or in
//! `spawn_blocking`).
//!
//! # Use
//!
//! [`Storage::open`] recovers the directory and returns what to replay: the newest valid
//! snapshot and the log records after it. Then the server [`append`](Storage::append)s every
//! transaction of a batch and calls [`sync`](Storage::sync) once for the whole batch (group
//! commit) before acknowledging any of them. When
//! [`log_bytes_since_snapshot`](Storage::log_bytes_since_snapshot) passes its threshold it
//! calls [`snapshot`](Storage::snapshot) with the encoded tree.
//!
//! Zxids are contiguous: the first record of a fresh directory has zxid 1 and every record
//! after has the previous zxid + 1 (so a hole in the log is always detectable).
//!
//! After an error from [`append`](Storage::append) or [`sync`](Storage::sync) that came from
//! the file system, the `Storage` refuses all further work ([`StorageError::Poisoned`]): what
//! reached the disk is unknown (a failed fsync may have dropped dirty pages), so the process
//! must reopen the directory, which recovers to the last valid record.
//!
//! # On-disk format
//!
//! A data directory holds log segments and snapshots; other files are ignored (and
//! `*.tmp` leftovers of an interrupted creation are removed on open). Numbers are little
//! endian; names carry zxids as 20-digit zero-padded decimals so they sort by name.
//!
//! **Log segment** `log.<zxid of its first record>`, e.g. `log.00000000000000000001`:
//!
//! ```text
//! header:  magic "PEHRAWAL" (8 bytes) | version: u32 = 1
//! record:  len: u32 | crc: u32 | zxid: u64 | payload: len bytes
//! record:  ...
//! ```
//!
//! `len` is the payload length (at most [`MAX_RECORD_LEN`], 64 MiB); `crc` is the CRC-32
//! (IEEE) of the 8 zxid bytes followed by the payload. A segment is created atomically (its
//! header is written to a temporary file, synced, renamed into place, and the directory is
//! synced), so its header is never torn; a log-named file without the magic is refused
//! ([`StorageError::NotOurs`]). A new segment starts with the first record written after a
//! snapshot.
//!
//! **Snapshot** `snapshot.<zxid it covers up to>`:
//!
//! ```text
//! magic "PEHRASNP" (8) | version: u32 = 1 | zxid: u64 | len: u64 | crc: u32 | state: len bytes
//! ```
//!
//! `crc` is the CRC-32 of zxid, len (both as their 8 LE bytes) and the state. Written
//! atomically: temporary file, fsync, rename, fsync of the directory.
//!
//! # Recovery
//!
//! 1. The newest snapshot that verifies is the base (if the newest is damaged it is skipped
//!    with a warning and the previous one is used; the log still holds everything after the
//!    previous snapshot). No snapshot: the base is zxid 0.
//! 2. Segments are read in order. Records up to the base zxid are skipped; the first record
//!    after it must be base + 1 and every later one the previous + 1: a gap or decrease is
//!    [`StorageError::Corrupt`].
//! 3. A record that is truncated, has an impossible length or fails its CRC is a **torn
//!    tail** only if no valid record follows it: nothing in the rest of its file parses as
//!    a record whose CRC checks out and whose zxid fits (after the damaged record's, and at
//!    most one zxid per 16 bytes further on), and no later segment holds records. A torn
//!    tail is cut: the file is truncated to the end of the last good record and synced, and
//!    the bytes cut are reported in [`Recovery::truncated_bytes`]. That is what a crash in
//!    the middle of writing a batch leaves behind (nothing is written after a record being
//!    written, and none of the cut records had been acknowledged: acknowledgement follows
//!    `sync`). A last record that fails its CRC with nothing after it is indistinguishable
//!    from a torn write, and is cut too.
//! 4. If a valid record follows the damage, in the same segment or a later one, it is
//!    corruption in the middle of the log: [`StorageError::CorruptWal`], a one-line error
//!    naming the file, the byte position, the last good zxid before the damage and how
//!    many records lie after it, and nothing is changed. Cutting there would drop
//!    acknowledged records (it once lost 107 of 200). To start anyway the operator restores
//!    a backup, or opts in with [`RecoveryOptions::recover_truncate_wal`] set to that last
//!    good zxid (`pehra zookeeper --recover-truncate-wal N`), which cuts the log there,
//!    deletes the later segments and logs what it deleted with `tracing::error!`. (One
//!    case may be a false alarm: after a power loss in the middle of a group commit, the
//!    unsynced pages of that batch can reach the disk out of order and leave a bad record
//!    followed by a good one, none of them acknowledged. The error's count of records
//!    after the damage tells: a few, all of the last batch, are safe to cut.) Exception:
//!    when every record the damage could have held lies within the base snapshot, nothing
//!    needed is lost, so it is only logged and the records after it are read.
//! 5. A damaged snapshot newer than the base is a hard error if the log does not reach its
//!    zxid (the changes it covered would be lost).
//!
//! Segments left without records are deleted. A missing or empty directory is a fresh start.
//!
//! # Retention
//!
//! After writing snapshot `S` while the previous snapshot was `P`, snapshots other than `S`
//! and `P` are deleted, and so are the segments all of whose records are `<= P`. The
//! newest snapshot can thus be lost to corruption and recovered from `P` plus the log.

mod open;
mod snapshot;
mod wal;

#[cfg(test)]
mod tests;

pub use wal::MAX_RECORD_LEN;

use pehra_storage::{IoError, Listing, Plan, Poison};
use snapshot::SNAPSHOTS;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use wal::Segment;
use wal::SEGMENTS;

/// Appended bytes are written to the segment (without syncing) once the buffer holds this
/// many, so that a huge batch does not sit in memory twice.
const FLUSH_THRESHOLD: usize = 1024 * 1024;

/// An error of the durable storage. Every variant names the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done (e.g. "fsync").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file named like a log segment does not start with the segment header.
    #[error(
        "{path} is not a Pehra {what} (bad or missing header); refusing to use this directory"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What its name says it is.
        what: &'static str,
    },
    /// A file was written in a format version this build does not know.
    #[error("{path} has format version {version}; this build reads only version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The stored data is damaged in a way that would lose acknowledged changes.
    #[error("corrupt storage in {path}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The write-ahead log is damaged (a record is torn or fails its CRC check) and valid
    /// records follow the damage: not a torn tail but corruption, which cutting would turn
    /// into lost acknowledged changes. [`Storage::open`] refuses to start;
    /// [`RecoveryOptions::recover_truncate_wal`] set to `last_good_zxid` cuts the log there.
    #[error(
        "{path}: the write-ahead log is damaged at byte {position} ({detail}), yet valid records \
         follow it, up to zxid {last_zxid_after} in {last_path}, so this is not a torn tail: \
         refusing to start rather than drop acknowledged changes. Restore the data directory \
         from a backup, or start once with --recover-truncate-wal {last_good_zxid} to cut the \
         log after zxid {last_good_zxid}, losing the {} records after it (zxids {} to \
         {last_zxid_after})",
        .last_zxid_after - .last_good_zxid,
        .last_good_zxid + 1
    )]
    CorruptWal {
        /// The damaged segment.
        path: PathBuf,
        /// The byte position of the damaged record in it.
        position: u64,
        /// What is wrong with it.
        detail: String,
        /// The zxid of the last good record before the damage.
        last_good_zxid: u64,
        /// The largest zxid of the valid records after the damage.
        last_zxid_after: u64,
        /// The segment holding the record `last_zxid_after`.
        last_path: PathBuf,
    },
    /// [`Storage::append`] was given a zxid other than the next one.
    #[error("{dir}: cannot append zxid {got}: the next zxid must be {expected}")]
    ZxidOrder {
        /// The data directory.
        dir: PathBuf,
        /// The zxid that must come next.
        expected: u64,
        /// The zxid given.
        got: u64,
    },
    /// [`Storage::snapshot`] was given an unusable zxid.
    #[error("{dir}: cannot snapshot at zxid {zxid}: {reason}")]
    BadSnapshotZxid {
        /// The data directory.
        dir: PathBuf,
        /// The zxid given.
        zxid: u64,
        /// Why it is refused.
        reason: String,
    },
    /// A record payload is larger than [`MAX_RECORD_LEN`].
    #[error("{dir}: a record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The data directory.
        dir: PathBuf,
        /// The payload length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// An earlier write or sync failed, so the state of the log on disk is unknown.
    #[error(
        "{dir}: storage unusable after an earlier write or sync failure; reopen it to recover"
    )]
    Poisoned {
        /// The data directory.
        dir: PathBuf,
    },
}

/// Writes snapshot files (atomically) from any thread; see [`Storage::snapshot_writer`].
#[derive(Debug, Clone)]
pub struct SnapshotWriter {
    dir: PathBuf,
}

impl SnapshotWriter {
    /// Writes `snapshot.<zxid>` holding `state`: temporary file, fsync, rename, fsync of
    /// the directory. Not yet in use until [`Storage::install_snapshot`].
    pub fn write(&self, zxid: u64, state: &[u8]) -> Result<(), StorageError> {
        snapshot::write(&self.dir, zxid, state).map(|_| ())
    }
}

/// Builds the mapping of an `io::Error` to [`StorageError::Io`] for `op` on `path`.
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> StorageError + 'a {
    let io_err = pehra_storage::io_err(op, path);
    move |source| io_err(source).into()
}

/// Makes the entries of `dir` (creations, renames, deletions) durable.
fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    Ok(pehra_storage::fsync_dir(dir)?)
}

impl From<IoError> for StorageError {
    fn from(e: IoError) -> Self {
        StorageError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// What [`Storage::open`] found on disk: the state to rebuild before serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The newest valid snapshot: (zxid it covers up to, its bytes).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Log records after the snapshot's zxid, in order: (zxid, payload).
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut from a torn log tail, or by [`RecoveryOptions::recover_truncate_wal`] (0 if
    /// nothing was cut).
    pub truncated_bytes: u64,
}

/// The file holding the highest zxid records cut on request reached, until the log
/// has placeholders up to it (see [`Storage::open_with`]).
const ZXID_FLOOR: &str = "zxid-floor";

/// What [`Storage::reserve`] secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Bytes of records (16 bytes of header each + payload) that can be appended now
    /// without allocating disk space (`u64::MAX`: the file system cannot reserve, so no
    /// limit is known).
    pub bytes: u64,
    /// Why no more could be reserved (the disk is full), if so.
    pub full: Option<String>,
}

/// How [`Storage::open_with`] treats damage it would otherwise refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// Cut the log after this zxid if, and only if, it is the last good record before
    /// damage that [`StorageError::CorruptWal`] reports: the valid records after the damage
    /// are lost (deleted, with every later segment). A zxid that is not that one changes
    /// nothing and the open fails as without it; a log that needs no cut ignores it. For an
    /// operator who has read the error and chosen to lose those records
    /// (`pehra zookeeper --recover-truncate-wal N`).
    pub recover_truncate_wal: Option<u64>,
}

/// The write-ahead log and snapshots of one data directory.
///
/// One `Storage` per directory and per process: nothing stops two processes from opening
/// the same directory, and they would corrupt it.
#[derive(Debug)]
pub struct Storage {
    /// The data directory.
    dir: PathBuf,
    /// The segment appended to; `None` until the first write after open or a snapshot.
    current: Option<Segment>,
    /// Encoded records not yet written to `current`.
    buf: Vec<u8>,
    /// Whether `current` holds written but not yet synced bytes.
    dirty: bool,
    /// The zxid of the last record appended (or of the base when none was).
    last_appended: u64,
    /// The zxid of the last record made durable (or of the base).
    last_durable: u64,
    /// The zxid of the snapshot recovery would start from.
    snapshot_zxid: Option<u64>,
    /// Encoded bytes of the records after the snapshot.
    bytes_since_snapshot: u64,
    /// Whether an I/O error left the log in an unknown state.
    poison: Poison,
}

impl Storage {
    /// Opens (creating if needed) the data directory, recovers, and is ready to append after the last valid record.
    ///
    /// See the [module documentation](self) for what recovery does and which damage is a
    /// hard error.
    pub fn open(dir: &Path) -> Result<(Storage, Recovery), StorageError> {
        Self::open_with(dir, &RecoveryOptions::default())
    }

    /// [`open`](Self::open), with a way past [`StorageError::CorruptWal`]: see
    /// [`RecoveryOptions`].
    pub fn open_with(
        dir: &Path,
        options: &RecoveryOptions,
    ) -> Result<(Storage, Recovery), StorageError> {
        pehra_storage::create_dir_durably(dir, "create the data directory")?;
        let survey = open::survey(dir)?;
        let opened = open::plan(survey, options)?;
        // Only now change files: a refusal above leaves the directory as it was.
        opened.plan.apply(dir)?;
        let current = match &opened.append_to {
            Some((path, len)) => Some(Segment::open_at(path, *len)?),
            None => None,
        };
        let mut storage = Storage {
            dir: dir.to_owned(),
            current,
            buf: Vec::new(),
            dirty: false,
            last_appended: opened.last_zxid,
            last_durable: opened.last_zxid,
            snapshot_zxid: opened.snapshot.as_ref().map(|(zxid, _)| *zxid),
            bytes_since_snapshot: opened.bytes_since_snapshot,
            poison: Poison::default(),
        };
        let recovery = Recovery {
            snapshot: opened.snapshot,
            records: opened.records,
            truncated_bytes: opened.truncated_bytes,
        };
        let mut recovery = recovery;
        storage.keep_zxids_above_the_floor(&mut recovery.records)?;
        Ok((storage, recovery))
    }

    /// Appends one record (zxids strictly increasing, else error). Buffered: not durable until `sync`.
    ///
    /// The zxid must be exactly [`last_zxid`](Self::last_zxid) + 1 counting the records
    /// appended since (1 in a fresh directory): recovery treats a hole as corruption, so
    /// one is refused here ([`StorageError::ZxidOrder`]), as is a payload over
    /// [`MAX_RECORD_LEN`]. Neither refusal changes anything.
    pub fn append(&mut self, zxid: u64, payload: &[u8]) -> Result<(), StorageError> {
        self.check_usable()?;
        if payload.len() > MAX_RECORD_LEN as usize {
            return Err(StorageError::RecordTooLarge {
                dir: self.dir.clone(),
                len: payload.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let expected = self.last_appended.wrapping_add(1);
        if zxid != expected || expected == 0 {
            return Err(StorageError::ZxidOrder {
                dir: self.dir.clone(),
                expected,
                got: zxid,
            });
        }
        wal::encode_record(&mut self.buf, zxid, payload);
        self.last_appended = zxid;
        self.bytes_since_snapshot += wal::RECORD_HEADER_LEN + payload.len() as u64;
        if self.buf.len() >= FLUSH_THRESHOLD {
            let written = self.write_buf();
            return self.poison_on_error(written);
        }
        Ok(())
    }

    /// Makes every appended record durable (write + fdatasync). One sync covers a whole batch: group commit.
    ///
    /// A failure poisons the storage (see the [module documentation](self)).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let synced = self.write_buf().and_then(|()| {
            if self.dirty {
                let segment = self.current.as_mut().expect("dirty implies a segment");
                segment
                    .file
                    .sync_data()
                    .map_err(io_err("fdatasync", &segment.path))?;
                self.dirty = false;
            }
            Ok(())
        });
        self.poison_on_error(synced)?;
        self.last_durable = self.last_appended;
        Ok(())
    }

    /// Writes a snapshot covering all records up to `zxid` (atomically: temp file, fsync, rename, fsync dir), then starts a new log segment and deletes segments and snapshots no longer needed (keep the previous snapshot and the segments after it, so one corrupt newest snapshot can still be recovered from the previous one + logs).
    ///
    /// Syncs the log first. `zxid` must not be past the last appended record (the records
    /// after it, if any, stay in the log) and must be newer than the current snapshot
    /// ([`StorageError::BadSnapshotZxid`] otherwise). Resets
    /// [`log_bytes_since_snapshot`](Self::log_bytes_since_snapshot) to 0.
    pub fn snapshot(&mut self, zxid: u64, state: &[u8]) -> Result<(), StorageError> {
        self.sync()?;
        let refuse = |reason: String| StorageError::BadSnapshotZxid {
            dir: self.dir.clone(),
            zxid,
            reason,
        };
        if zxid > self.last_durable {
            return Err(refuse(format!(
                "the log only reaches zxid {}: append the records up to the snapshot's zxid first",
                self.last_durable
            )));
        }
        if let Some(current) = self.snapshot_zxid.filter(|&current| zxid <= current) {
            return Err(refuse(format!(
                "it is not newer than the current snapshot at zxid {current}"
            )));
        }
        snapshot::write(&self.dir, zxid, state)?;
        self.take_into_use(zxid)
    }

    /// Starts over from a state taken elsewhere: another ensemble member's tree at `zxid`,
    /// shipped by Raft to a member that lost its data or fell behind the Raft log's cut.
    /// Writes it as a snapshot (atomically, as [`Storage::snapshot`]), deletes every log
    /// segment and older snapshot (all they hold is before `zxid`), and continues the log
    /// at `zxid + 1`. Durable when it returns. `zxid` must be past the last appended
    /// record ([`StorageError::BadSnapshotZxid`] otherwise: this storage has it already).
    pub fn restart_from_snapshot(&mut self, zxid: u64, state: &[u8]) -> Result<(), StorageError> {
        self.sync()?;
        if zxid <= self.last_appended {
            return Err(StorageError::BadSnapshotZxid {
                dir: self.dir.clone(),
                zxid,
                reason: format!(
                    "the log already reaches zxid {}: nothing to start over from",
                    self.last_appended
                ),
            });
        }
        snapshot::write(&self.dir, zxid, state)?;
        // From here a crash leaves the new snapshot with older files beside it, which
        // recovery reads past (their records are all before the snapshot).
        let listing = self.list()?;
        let mut plan = Plan::new();
        let old_snapshots = listing.numbered(SNAPSHOTS).into_iter();
        plan.remove_all(
            old_snapshots
                .filter(|(old, _)| *old != zxid)
                .chain(listing.numbered(SEGMENTS))
                .map(|(_, path)| path),
        );
        plan.apply(&self.dir)?;
        self.snapshot_zxid = Some(zxid);
        self.current = None;
        self.last_appended = zxid;
        self.last_durable = zxid;
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    /// A writer for snapshot files that works on any thread, so a large state can be
    /// encoded and written without holding up appends; [`Storage::install_snapshot`] then
    /// takes the file into use.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            dir: self.dir.clone(),
        }
    }

    /// Takes into use a snapshot at `zxid` that a [`SnapshotWriter`] wrote (completely:
    /// `write` returned): starts a new log segment and deletes what the snapshot makes
    /// unnecessary, as [`Storage::snapshot`] does. The zxid must be durable and newer than
    /// the current snapshot. Records appended after `zxid` meanwhile stay in the log.
    pub fn install_snapshot(&mut self, zxid: u64) -> Result<(), StorageError> {
        self.check_usable()?;
        let refuse = |reason: String| StorageError::BadSnapshotZxid {
            dir: self.dir.clone(),
            zxid,
            reason,
        };
        if zxid > self.last_durable {
            return Err(refuse(format!(
                "the log is durable only up to zxid {}",
                self.last_durable
            )));
        }
        if let Some(current) = self.snapshot_zxid.filter(|&current| zxid <= current) {
            return Err(refuse(format!(
                "it is not newer than the current snapshot at zxid {current}"
            )));
        }
        self.take_into_use(zxid)
    }

    fn take_into_use(&mut self, zxid: u64) -> Result<(), StorageError> {
        let previous = self.snapshot_zxid.replace(zxid);
        self.current = None;
        self.bytes_since_snapshot = 0;
        self.prune(zxid, previous)
    }

    /// Bytes appended to the log since the last snapshot (the caller snapshots when this grows past a threshold).
    ///
    /// Counts encoded records (payload + 16 bytes each), appended whether or not synced yet.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    /// If a `zxid-floor` file says zxids once reached past the log's end (records cut by
    /// [`RecoveryOptions::recover_truncate_wal`]), appends empty placeholder records up to
    /// it (also to `records`, for the replay) and syncs them, then removes the file: the
    /// next zxid is above every zxid ever handed out, so no reader sees zxids go back.
    fn keep_zxids_above_the_floor(
        &mut self,
        records: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let path = self.dir.join(ZXID_FLOOR);
        let floor = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| StorageError::Corrupt {
                    path: path.clone(),
                    detail: format!("not a zxid ({e}): {text:?}"),
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if floor > self.last_appended {
            tracing::error!(
                "the log ends at zxid {} but zxids reached {floor} before records were cut: \
                 zxids {} to {floor} are skipped (empty records), so zxids never go back",
                self.last_appended,
                self.last_appended + 1
            );
            for zxid in self.last_appended + 1..=floor {
                self.append(zxid, &[])?;
                records.push((zxid, Vec::new()));
            }
            self.sync()?;
        }
        let mut plan = Plan::new();
        plan.remove_all([path]);
        Ok(plan.apply(&self.dir)?)
    }

    /// Makes sure the next `want` bytes of records can be written without allocating
    /// disk space: the segment they go to exists, and its space is reserved ahead of them
    /// (`fallocate` keeping the file's length, so a crash leaves no padding to cut).
    ///
    /// Returns how many bytes can be appended before space must be reserved again
    /// ([`Room::bytes`]). With the disk full it reserves what it can (nothing) and says why
    /// ([`Room::full`]): records within the room are still safe to append, and a later
    /// call succeeds once space returns. Nothing is poisoned: no write was attempted. On
    /// a file system that cannot reserve space the room is unlimited (writes then meet a
    /// full disk as an I/O error, which poisons). Call it with nothing buffered (after
    /// [`sync`](Self::sync)).
    pub fn reserve(&mut self, want: u64) -> Room {
        if self.poison.is_poisoned() {
            return Room {
                bytes: 0,
                full: Some("the log failed earlier".into()),
            };
        }
        if self.current.is_none() {
            match Segment::create(&self.dir, self.last_appended + 1) {
                Ok(segment) => self.current = Some(segment),
                Err(e) => {
                    return Room {
                        bytes: 0,
                        full: Some(e.to_string()),
                    }
                }
            }
        }
        let segment = self.current.as_mut().expect("just ensured");
        let goal = segment.end + want;
        if segment.reserved_to < goal {
            let from = segment.reserved_to.max(segment.end);
            match rustix::fs::fallocate(
                &segment.file,
                rustix::fs::FallocateFlags::KEEP_SIZE,
                from,
                goal - from,
            ) {
                Ok(()) => segment.reserved_to = goal,
                Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                    return Room {
                        bytes: segment.reserved_to.saturating_sub(segment.end),
                        full: Some(format!(
                            "cannot reserve {} bytes for the log in {}: {}",
                            goal - from,
                            segment.path.display(),
                            std::io::Error::from(e)
                        )),
                    };
                }
                Err(_) => {
                    // No reservation on this file system: as before, unlimited.
                    return Room {
                        bytes: u64::MAX,
                        full: None,
                    };
                }
            }
        }
        Room {
            bytes: segment.reserved_to - segment.end,
            full: None,
        }
    }

    /// The last durable zxid.
    ///
    /// After [`open`](Self::open): the last recovered record's zxid, or the snapshot's if
    /// larger, or 0 for a fresh directory.
    pub fn last_zxid(&self) -> u64 {
        self.last_durable
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments and snapshots in the data directory.
    fn list(&self) -> Result<Listing, StorageError> {
        Ok(pehra_storage::list(&self.dir, &[SEGMENTS, SNAPSHOTS], &[])?)
    }

    /// Refuses work once poisoned.
    fn check_usable(&self) -> Result<(), StorageError> {
        self.poison.check(|| StorageError::Poisoned {
            dir: self.dir.clone(),
        })
    }

    /// Poisons the storage if `result` is an error.
    fn poison_on_error<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        self.poison.on_error(result)
    }

    /// Writes the buffered records to the current segment (creating it if needed), unsynced.
    fn write_buf(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let first = wal::first_zxid_in(&self.buf);
            self.current = Some(Segment::create(&self.dir, first)?);
        }
        let segment = self.current.as_mut().expect("just ensured");
        self.dirty = true;
        segment
            .file
            .write_all(&self.buf)
            .map_err(io_err("write", &segment.path))?;
        segment.end += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 4 * FLUSH_THRESHOLD {
            self.buf.shrink_to(FLUSH_THRESHOLD);
        }
        Ok(())
    }

    /// After snapshot `newest` replaced `previous`: deletes the other snapshots and the
    /// segments that only hold records up to `previous`, oldest first.
    fn prune(&self, newest: u64, previous: Option<u64>) -> Result<(), StorageError> {
        let listing = self.list()?;
        let mut doomed: Vec<PathBuf> = listing
            .numbered(SNAPSHOTS)
            .into_iter()
            .filter(|(zxid, _)| *zxid != newest && Some(*zxid) != previous)
            .map(|(_, path)| path)
            .collect();
        if let Some(previous) = previous {
            // Segment i holds zxids first_i ..= first_{i+1} - 1.
            let segments = listing.numbered(SEGMENTS);
            doomed.extend(
                segments
                    .windows(2)
                    .take_while(|pair| pair[1].0 <= previous.saturating_add(1))
                    .map(|pair| pair[0].1.clone()),
            );
        }
        let mut plan = Plan::new();
        plan.remove_all(doomed);
        Ok(plan.apply(&self.dir)?)
    }
}
