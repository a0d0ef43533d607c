//! Tests of the write-ahead log and snapshots, each in its own temporary directory.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A payload whose length varies with the zxid, so record boundaries are irregular.
fn payload(zxid: u64) -> Vec<u8> {
    format!("txn {zxid};")
        .repeat(1 + (zxid % 4) as usize)
        .into_bytes()
}

/// The encoded size of the record for `zxid` with [`payload`].
fn record_len(zxid: u64) -> u64 {
    wal::RECORD_HEADER_LEN + payload(zxid).len() as u64
}

/// `(zxid, payload(zxid))` for every zxid in `zxids`.
fn expected(zxids: impl IntoIterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    zxids.into_iter().map(|z| (z, payload(z))).collect()
}

/// Makes `floor` the durable content of the `zxid-floor` file of `dir`.
fn write_zxid_floor(dir: &Path, floor: u64) -> Result<(), StorageError> {
    let floor = format!("{floor}\n");
    Ok(pehra_storage::file::replace_durably(
        dir,
        ZXID_FLOOR,
        floor.as_bytes(),
    )?)
}

fn open(dir: &Path) -> (Storage, Recovery) {
    Storage::open(dir).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// Appends `zxids` with [`payload`] and syncs once.
fn append_sync(storage: &mut Storage, zxids: impl IntoIterator<Item = u64>) {
    for z in zxids {
        storage.append(z, &payload(z)).unwrap();
    }
    storage.sync().unwrap();
}

fn seg(dir: &Path, first: u64) -> PathBuf {
    dir.join(wal::file_name(first))
}

fn snap(dir: &Path, zxid: u64) -> PathBuf {
    dir.join(snapshot::file_name(zxid))
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// The byte offset at which the record for `zxid` starts in a segment beginning at `first`.
fn offset_of(first: u64, zxid: u64) -> u64 {
    wal::LOG_HEADER_LEN + (first..zxid).map(record_len).sum::<u64>()
}

/// Writes a segment by hand (header + the given records), to build odd logs.
fn write_segment(dir: &Path, name_zxid: u64, records: &[u64]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&wal::LOG_MAGIC);
    bytes.extend_from_slice(&wal::LOG_VERSION.to_le_bytes());
    for &z in records {
        wal::encode_record(&mut bytes, z, &payload(z));
    }
    fs::write(seg(dir, name_zxid), bytes).unwrap();
}

fn corrupt_detail(err: StorageError) -> (PathBuf, String) {
    match err {
        StorageError::Corrupt { path, detail } => (path, detail),
        // Damage with valid records after it: the same refusal, with a way to recover.
        StorageError::CorruptWal { path, detail, .. } => (path, detail),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn missing_directory_is_a_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/data");
    let (storage, recovery) = open(&dir);
    assert!(dir.is_dir());
    assert_eq!(recovery.snapshot, None);
    assert!(recovery.records.is_empty());
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(storage.last_zxid(), 0);
    assert_eq!(storage.log_bytes_since_snapshot(), 0);
    assert_eq!(storage.dir(), dir);
    // Nothing is written until there is something to write.
    assert!(names(&dir).is_empty());
}

#[test]
fn append_sync_reopen_returns_every_record_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    for batch in 0..10 {
        append_sync(&mut storage, batch * 10 + 1..=batch * 10 + 10);
        assert_eq!(storage.last_zxid(), batch * 10 + 10);
    }
    let bytes: u64 = (1..=100).map(record_len).sum();
    assert_eq!(storage.log_bytes_since_snapshot(), bytes);
    drop(storage);

    let (mut storage, recovery) = open(tmp.path());
    assert_eq!(recovery.records, expected(1..=100));
    assert_eq!(recovery.snapshot, None);
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(storage.last_zxid(), 100);
    assert_eq!(storage.log_bytes_since_snapshot(), bytes);

    // Appending continues in the same segment after a reopen.
    append_sync(&mut storage, 101..=110);
    drop(storage);
    let (storage, recovery) = open(tmp.path());
    assert_eq!(recovery.records, expected(1..=110));
    assert_eq!(storage.last_zxid(), 110);
    assert_eq!(names(tmp.path()), vec![wal::file_name(1)]);
}

#[test]
fn records_are_durable_only_after_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    append_sync(&mut storage, 1..=3);
    storage.append(4, &payload(4)).unwrap();
    storage.append(5, &payload(5)).unwrap();
    assert_eq!(storage.last_zxid(), 3, "appended but not synced");
    drop(storage); // without sync: the buffered records are not written
    let (mut storage, recovery) = open(tmp.path());
    assert_eq!(recovery.records, expected(1..=3));
    assert_eq!(recovery.truncated_bytes, 0);
    storage.append(4, &payload(4)).unwrap();
    storage.sync().unwrap();
    assert_eq!(storage.last_zxid(), 4);
    storage.sync().unwrap(); // an empty sync is fine
}

#[test]
fn append_refuses_out_of_order_zxids_and_huge_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    let err = storage.append(2, b"x").unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::ZxidOrder {
                expected: 1,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
    storage.append(1, b"a").unwrap();
    for bad in [0, 1, 3, 100] {
        let err = storage.append(bad, b"x").unwrap_err();
        assert!(
            matches!(err, StorageError::ZxidOrder { expected: 2, .. }),
            "{err:?}"
        );
    }
    let huge = vec![0u8; MAX_RECORD_LEN as usize + 1];
    let err = storage.append(2, &huge).unwrap_err();
    assert!(
        matches!(err, StorageError::RecordTooLarge { .. }),
        "{err:?}"
    );
    // Refusals change nothing and do not poison the storage.
    storage.append(2, b"b").unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, recovery) = open(tmp.path());
    assert_eq!(
        recovery.records,
        vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
}

#[test]
fn large_batches_are_flushed_early_and_synced() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    let big = vec![7u8; 300 * 1024];
    for z in 1..=10 {
        storage.append(z, &big).unwrap();
    }
    storage.sync().unwrap();
    drop(storage);
    let (storage, recovery) = open(tmp.path());
    assert_eq!(recovery.records.len(), 10);
    assert!(recovery.records.iter().all(|(_, p)| *p == big));
    assert_eq!(storage.last_zxid(), 10);
}

#[test]
fn torn_tail_at_every_offset_recovers_the_whole_records() {
    const N: u64 = 8;
    // The pristine segment.
    let pristine = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(pristine.path());
    append_sync(&mut storage, 1..=N);
    drop(storage);
    let bytes = fs::read(seg(pristine.path(), 1)).unwrap();
    let ends: Vec<u64> = (1..=N).map(|z| offset_of(1, z + 1)).collect();
    assert_eq!(*ends.last().unwrap(), bytes.len() as u64);

    // Every offset inside the last record, and a few inside earlier ones (the first
    // included, which leaves the segment without records).
    let mut cuts: Vec<u64> = (offset_of(1, N)..offset_of(1, N + 1)).collect();
    for z in [1, 2, 5] {
        let start = offset_of(1, z);
        cuts.extend([start + 1, start + 15, start + 16, offset_of(1, z + 1) - 1]);
    }
    for cut in cuts {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(seg(tmp.path(), 1), &bytes[..cut as usize]).unwrap();
        let whole = ends.iter().filter(|&&end| end <= cut).count() as u64;
        let good_len = offset_of(1, whole + 1);

        let (mut storage, recovery) = open(tmp.path());
        assert_eq!(recovery.records, expected(1..=whole), "cut at {cut}");
        assert_eq!(recovery.truncated_bytes, cut - good_len, "cut at {cut}");
        assert_eq!(storage.last_zxid(), whole, "cut at {cut}");
        if whole > 0 {
            assert_eq!(fs::metadata(seg(tmp.path(), 1)).unwrap().len(), good_len);
        } else {
            assert!(
                names(tmp.path()).is_empty(),
                "cut at {cut}: empty segment deleted"
            );
        }

        append_sync(&mut storage, whole + 1..=whole + 2);
        drop(storage);
        let (storage, recovery) = open(tmp.path());
        assert_eq!(recovery.records, expected(1..=whole + 2), "cut at {cut}");
        assert_eq!(recovery.truncated_bytes, 0, "cut at {cut}");
        assert_eq!(storage.last_zxid(), whole + 2);
    }
}

#[test]
fn damage_in_the_last_record_is_cut() {
    const N: u64 = 6;
    let pristine = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(pristine.path());
    append_sync(&mut storage, 1..=N);
    drop(storage);
    let bytes = fs::read(seg(pristine.path(), 1)).unwrap();
    let last = offset_of(1, N);
    // len (a high bit: impossible length; a low bit: truncated or bad CRC), crc, zxid, payload.
    for (at, bit) in [
        (3, 7),
        (0, 0),
        (0, 1),
        (5, 2),
        (9, 0),
        (15, 7),
        (16, 0),
        (25, 5),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = seg(tmp.path(), 1);
        fs::write(&path, &bytes).unwrap();
        flip_bit(&path, last + at, bit);
        let (mut storage, recovery) = open(tmp.path());
        assert_eq!(recovery.records, expected(1..N), "flip at +{at} bit {bit}");
        assert_eq!(recovery.truncated_bytes, record_len(N));
        assert_eq!(storage.last_zxid(), N - 1);
        append_sync(&mut storage, N..=N);
        drop(storage);
        let (_, recovery) = open(tmp.path());
        assert_eq!(recovery.records, expected(1..=N));
    }
}

/// Builds two segments without a snapshot: `log.1` (1..=5) and `log.6` (6..=10).
fn two_segments_no_snapshot(dir: &Path) {
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=5);
    storage.snapshot(5, b"s5").unwrap();
    append_sync(&mut storage, 6..=10);
    drop(storage);
    fs::remove_file(snap(dir, 5)).unwrap();
    assert_eq!(names(dir), vec![wal::file_name(1), wal::file_name(6)]);
}

#[test]
fn records_span_segments() {
    let tmp = tempfile::tempdir().unwrap();
    two_segments_no_snapshot(tmp.path());
    let (mut storage, recovery) = open(tmp.path());
    assert_eq!(recovery.records, expected(1..=10));
    append_sync(&mut storage, 11..=12);
    drop(storage);
    let (_, recovery) = open(tmp.path());
    assert_eq!(recovery.records, expected(1..=12));
    assert_eq!(
        names(tmp.path()),
        vec![wal::file_name(1), wal::file_name(6)]
    );
}

#[test]
fn damage_in_an_older_segment_followed_by_records_is_a_hard_error() {
    let tmp = tempfile::tempdir().unwrap();
    two_segments_no_snapshot(tmp.path());
    let path = seg(tmp.path(), 1);
    let before = fs::read(&path).unwrap();
    flip_bit(&path, offset_of(1, 3) + 20, 3);
    let err = Storage::open(tmp.path()).unwrap_err();
    let message = err.to_string();
    let (at, detail) = corrupt_detail(err);
    assert_eq!(at, path);
    assert!(message.contains("log.00000000000000000001"), "{message}");
    assert!(message.contains("log.00000000000000000006"), "{message}");
    assert!(detail.contains("CRC"), "{detail}");
    // Nothing was cut.
    let mut after = fs::read(&path).unwrap();
    after[offset_of(1, 3) as usize + 20] ^= 1 << 3;
    assert_eq!(after, before);

    // A torn (truncated) older segment followed by records is just as bad.
    let tmp = tempfile::tempdir().unwrap();
    two_segments_no_snapshot(tmp.path());
    let path = seg(tmp.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (at, _) = corrupt_detail(Storage::open(tmp.path()).unwrap_err());
    assert_eq!(at, path);
}

/// `1..=5`, snapshot 5, `6..=10`, snapshot 10, `11..=15`: leaves snapshots 5 and 10 and
/// segments `log.6` and `log.11`.
fn three_generations(dir: &Path) {
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=5);
    storage.snapshot(5, b"s5").unwrap();
    append_sync(&mut storage, 6..=10);
    storage.snapshot(10, b"s10").unwrap();
    append_sync(&mut storage, 11..=15);
    drop(storage);
    let mut want = vec![
        wal::file_name(6),
        wal::file_name(11),
        snapshot::file_name(5),
        snapshot::file_name(10),
    ];
    want.sort();
    assert_eq!(names(dir), want);
}

#[test]
fn damage_in_a_needed_segment_with_a_damaged_newest_snapshot_is_a_hard_error() {
    let tmp = tempfile::tempdir().unwrap();
    three_generations(tmp.path());
    flip_bit(&snap(tmp.path(), 10), 33, 0);
    flip_bit(&seg(tmp.path(), 6), offset_of(6, 8) + 18, 1);
    let message = Storage::open(tmp.path()).unwrap_err().to_string();
    assert!(message.contains("log.00000000000000000006"), "{message}");
    assert!(message.contains("log.00000000000000000011"), "{message}");
}

#[test]
fn damage_in_a_segment_the_snapshot_covers_is_only_logged() {
    let tmp = tempfile::tempdir().unwrap();
    three_generations(tmp.path());
    flip_bit(&seg(tmp.path(), 6), offset_of(6, 8) + 18, 1);
    let (mut storage, recovery) = open(tmp.path());
    assert_eq!(recovery.snapshot, Some((10, b"s10".to_vec())));
    assert_eq!(recovery.records, expected(11..=15));
    assert_eq!(recovery.truncated_bytes, 0);
    // The next snapshot's retention deletes the damaged segment.
    storage.snapshot(15, b"s15").unwrap();
    assert!(!seg(tmp.path(), 6).exists());
}

#[test]
fn snapshot_drops_old_records_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=10);
    storage.snapshot(10, b"s10").unwrap();
    assert_eq!(storage.log_bytes_since_snapshot(), 0);
    assert_eq!(storage.last_zxid(), 10);
    // The first snapshot keeps the whole log (nothing older to fall back on).
    assert!(seg(dir, 1).exists());
    append_sync(&mut storage, 11..=20);
    assert_eq!(
        storage.log_bytes_since_snapshot(),
        (11..=20).map(record_len).sum::<u64>()
    );
    storage.snapshot(20, b"s20").unwrap();
    append_sync(&mut storage, 21..=25);
    drop(storage);
    // log.1 only held records up to the previous snapshot (10).
    assert!(!seg(dir, 1).exists());
    assert!(seg(dir, 11).exists() && seg(dir, 21).exists());
    assert!(snap(dir, 10).exists() && snap(dir, 20).exists());

    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((20, b"s20".to_vec())));
    assert_eq!(recovery.records, expected(21..=25));
    assert_eq!(storage.last_zxid(), 25);
    assert_eq!(
        storage.log_bytes_since_snapshot(),
        (21..=25).map(record_len).sum::<u64>()
    );

    storage.snapshot(25, b"s25").unwrap();
    drop(storage);
    let mut want = vec![
        wal::file_name(21),
        snapshot::file_name(20),
        snapshot::file_name(25),
    ];
    want.sort();
    assert_eq!(names(dir), want);
    let (storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((25, b"s25".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(storage.last_zxid(), 25);
}

#[test]
fn damaged_newest_snapshot_falls_back_to_the_previous_one_losing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    three_generations(dir);
    for (at, bit) in [(0, 0), (13, 2), (21, 0), (29, 4), (33, 6)] {
        let path = snap(dir, 10);
        let pristine = fs::read(&path).unwrap();
        flip_bit(&path, at, bit);
        let (storage, recovery) = open(dir);
        assert_eq!(recovery.snapshot, Some((5, b"s5".to_vec())), "flip at {at}");
        assert_eq!(recovery.records, expected(6..=15), "flip at {at}");
        assert_eq!(storage.last_zxid(), 15);
        drop(storage);
        fs::write(&path, pristine).unwrap();
    }
}

#[test]
fn after_a_fallback_the_next_snapshot_removes_the_damaged_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    three_generations(dir);
    fs::write(snap(dir, 10), b"garbage").unwrap();
    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((5, b"s5".to_vec())));
    assert_eq!(recovery.records, expected(6..=15));
    storage.snapshot(15, b"s15").unwrap();
    append_sync(&mut storage, 16..=17);
    drop(storage);
    assert!(!snap(dir, 10).exists());
    assert!(snap(dir, 5).exists(), "the previous valid snapshot is kept");
    let (_, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((15, b"s15".to_vec())));
    assert_eq!(recovery.records, expected(16..=17));
}

#[test]
fn damaged_newest_snapshot_the_log_does_not_cover_is_a_hard_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    three_generations(dir);
    fs::remove_file(seg(dir, 11)).unwrap();
    // Tear log.6 so it ends at 8, below the damaged snapshot's 10.
    let path = seg(dir, 6);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(offset_of(6, 9) + 5)
        .unwrap();
    flip_bit(&snap(dir, 10), 33, 0);
    let (at, detail) = corrupt_detail(Storage::open(dir).unwrap_err());
    assert_eq!(at, snap(dir, 10));
    assert!(detail.contains("only reaches zxid 8"), "{detail}");
    // A hard error changes no file: the torn tail is still there.
    assert_eq!(fs::metadata(&path).unwrap().len(), offset_of(6, 9) + 5);
}

#[test]
fn snapshot_refuses_bad_zxids() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    append_sync(&mut storage, 1..=5);
    storage.append(6, &payload(6)).unwrap();
    // 6 is synced by the snapshot itself, 7 is ahead of the log.
    let err = storage.snapshot(7, b"x").unwrap_err();
    assert!(
        matches!(err, StorageError::BadSnapshotZxid { zxid: 7, .. }),
        "{err:?}"
    );
    storage.snapshot(6, b"s6").unwrap();
    for zxid in [5, 6] {
        let err = storage.snapshot(zxid, b"x").unwrap_err();
        assert!(
            matches!(err, StorageError::BadSnapshotZxid { .. }),
            "{err:?}"
        );
    }
    drop(storage);
    let (_, recovery) = open(tmp.path());
    assert_eq!(recovery.snapshot, Some((6, b"s6".to_vec())));
}

#[test]
fn snapshot_behind_the_log_keeps_the_records_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=10);
    storage.snapshot(7, b"s7").unwrap();
    assert_eq!(storage.last_zxid(), 10);
    append_sync(&mut storage, 11..=12);
    storage.snapshot(11, b"s11").unwrap();
    drop(storage);
    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((11, b"s11".to_vec())));
    assert_eq!(recovery.records, expected(12..=12));
    append_sync(&mut storage, 13..=13);
    drop(storage);
    fs::remove_file(snap(dir, 11)).unwrap();
    let (_, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((7, b"s7".to_vec())));
    assert_eq!(recovery.records, expected(8..=13));
}

#[test]
fn reopening_right_after_a_snapshot_starts_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=4);
    storage.snapshot(4, b"s4").unwrap();
    drop(storage);
    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((4, b"s4".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(storage.log_bytes_since_snapshot(), 0);
    append_sync(&mut storage, 5..=6);
    drop(storage);
    assert!(seg(dir, 5).exists());
    let (_, recovery) = open(dir);
    assert_eq!(recovery.records, expected(5..=6));
}

#[test]
fn foreign_file_named_like_a_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = seg(tmp.path(), 1);
    fs::write(&path, b"this is not a write-ahead log at all").unwrap();
    let err = Storage::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StorageError::NotOurs { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a Pehra log segment"), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        b"this is not a write-ahead log at all",
        "left untouched"
    );

    // Too short for a header.
    fs::write(&path, b"PEH").unwrap();
    let err = Storage::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StorageError::NotOurs { .. }), "{err:?}");
}

#[test]
fn unknown_format_versions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    append_sync(&mut storage, 1..=2);
    drop(storage);
    flip_bit(&seg(tmp.path(), 1), 9, 0);
    let err = Storage::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::UnsupportedVersion {
                version: 257,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(tmp.path());
    append_sync(&mut storage, 1..=2);
    storage.snapshot(2, b"s2").unwrap();
    drop(storage);
    flip_bit(&snap(tmp.path(), 2), 9, 0);
    let err = Storage::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, StorageError::UnsupportedVersion { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("snapshot.00000000000000000002"));
}

#[test]
fn other_files_are_ignored_and_temporary_leftovers_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("README"), b"hello").unwrap();
    fs::write(dir.join("log.abc"), b"junk").unwrap();
    fs::write(dir.join("log.1"), b"junk").unwrap();
    fs::write(dir.join(format!("{}.tmp", wal::file_name(1))), b"PEHRA").unwrap();
    fs::write(dir.join(format!("{}.tmp", snapshot::file_name(9))), b"half").unwrap();
    let (mut storage, recovery) = open(dir);
    assert!(recovery.records.is_empty() && recovery.snapshot.is_none());
    append_sync(&mut storage, 1..=1);
    drop(storage);
    assert_eq!(
        names(dir),
        vec![
            "README".to_string(),
            "log.00000000000000000001".into(),
            "log.1".into(),
            "log.abc".into()
        ]
    );
}

#[test]
fn header_only_segments_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_segment(dir, 1, &[1, 2, 3]);
    // A crash right after a new segment was created, before its first record was durable.
    write_segment(dir, 4, &[]);
    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.records, expected(1..=3));
    assert!(!seg(dir, 4).exists());
    append_sync(&mut storage, 4..=4);
    drop(storage);
    let (_, recovery) = open(dir);
    assert_eq!(recovery.records, expected(1..=4));

    // Behind a torn tail too; but a foreign short file is not deleted.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_segment(dir, 1, &[1, 2, 3]);
    let path = seg(dir, 1);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    write_segment(dir, 3, &[]);
    fs::write(seg(dir, 4), b"foreign").unwrap();
    let err = Storage::open(dir).unwrap_err();
    assert!(matches!(err, StorageError::NotOurs { .. }), "{err:?}");
    assert!(seg(dir, 3).exists() && seg(dir, 4).exists());
    fs::remove_file(seg(dir, 4)).unwrap();
    let (_, recovery) = open(dir);
    assert_eq!(recovery.records, expected(1..=2));
    assert_eq!(recovery.truncated_bytes, record_len(3) - 1);
    assert_eq!(names(dir), vec![wal::file_name(1)]);
}

/// Segments written by hand: (name zxid, record zxids) each.
type Layout = &'static [(u64, &'static [u64])];

#[test]
fn zxid_gaps_and_decreases_are_errors() {
    let cases: &[(Layout, &str)] = &[
        (&[(1, &[1, 2, 4])], "missing"),
        (&[(1, &[1, 2, 2])], "must increase"),
        (&[(1, &[1, 3, 2])], "missing"),
        (&[(1, &[1, 2]), (3, &[4, 5])], "name says 3"),
        (&[(1, &[1, 2]), (4, &[4, 5])], "missing"),
        (&[(1, &[1, 2, 3]), (3, &[3, 4])], "must increase"),
        (&[(3, &[3, 4])], "log starts at zxid 3"),
    ];
    for (segments, what) in cases {
        let tmp = tempfile::tempdir().unwrap();
        for (name, records) in *segments {
            write_segment(tmp.path(), *name, records);
        }
        let (_, detail) = corrupt_detail(Storage::open(tmp.path()).unwrap_err());
        assert!(detail.contains(what), "{segments:?}: {detail}");
    }
}

#[test]
fn a_gap_inside_the_snapshot_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_segment(dir, 1, &[1, 2, 3]);
    write_segment(dir, 8, &[8, 9, 10]);
    snapshot::write(dir, 7, b"s7").unwrap();
    let (storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((7, b"s7".to_vec())));
    assert_eq!(recovery.records, expected(8..=10));
    assert_eq!(storage.last_zxid(), 10);
    // ...but not one just after it.
    snapshot::write(dir, 6, b"s6").unwrap();
    fs::remove_file(snap(dir, 7)).unwrap();
    let (_, detail) = corrupt_detail(Storage::open(dir).unwrap_err());
    assert!(detail.contains("records 7 to 7 are missing"), "{detail}");
}

#[test]
fn a_snapshot_written_aside_is_installed_while_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = open(dir.path());
    append_sync(&mut storage, 1..=10);
    let writer = storage.snapshot_writer();
    // Written on another thread while records 11..=15 are appended.
    let handle = std::thread::spawn(move || writer.write(10, b"state at 10"));
    append_sync(&mut storage, 11..=15);
    handle.join().unwrap().unwrap();
    storage.install_snapshot(10).unwrap();
    assert!(
        storage.install_snapshot(10).is_err(),
        "not newer than the current one"
    );
    assert!(
        storage.install_snapshot(99).is_err(),
        "ahead of the durable log"
    );
    append_sync(&mut storage, 16..=16);
    drop(storage);
    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.snapshot, Some((10, b"state at 10".to_vec())));
    assert_eq!(
        recovery.records,
        expected(11..=16),
        "records after the snapshot survive"
    );
}

/// A log of `1..=n` in one segment, synced in batches of 4 (as group commit would).
fn one_segment(dir: &Path, n: u64) {
    let (mut storage, _) = open(dir);
    for start in (1..=n).step_by(4) {
        append_sync(&mut storage, start..=(start + 3).min(n));
    }
}

fn corrupt_wal(err: StorageError) -> (PathBuf, u64, u64, u64) {
    match err {
        StorageError::CorruptWal {
            path,
            position,
            last_good_zxid,
            last_zxid_after,
            ..
        } => (path, position, last_good_zxid, last_zxid_after),
        other => panic!("expected CorruptWal, got {other:?}"),
    }
}

#[test]
fn damage_in_the_middle_of_the_last_segment_is_refused_naming_the_file() {
    const N: u64 = 20;
    let pristine = tempfile::tempdir().unwrap();
    one_segment(pristine.path(), N);
    let bytes = fs::read(seg(pristine.path(), 1)).unwrap();
    // In record 7, 10 or 15: len (a high bit: an impossible length; a low one: a length
    // that runs into the next record), crc, zxid and payload; all have valid records after.
    for (zxid, at, bit) in [
        (7, 20, 3),
        (7, 3, 7),
        (7, 0, 0),
        (7, 1, 2),
        (10, 5, 0),
        (10, 9, 1),
        (15, 16, 6),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let path = seg(tmp.path(), 1);
        fs::write(&path, &bytes).unwrap();
        let at = offset_of(1, zxid) + at;
        flip_bit(&path, at, bit);
        let err = Storage::open(tmp.path()).unwrap_err();
        let message = err.to_string();
        let (found, position, last_good, last_after) = corrupt_wal(err);
        let what = format!("record {zxid}, byte {at} bit {bit}: {message}");
        assert_eq!(found, path, "{what}");
        assert_eq!(position, offset_of(1, zxid), "{what}");
        assert_eq!(last_good, zxid - 1, "{what}");
        assert_eq!(last_after, N, "{what}");
        assert!(!message.contains('\n'), "one line: {what}");
        assert!(message.contains(&path.display().to_string()), "{what}");
        assert!(
            message.contains(&format!("byte {}", offset_of(1, zxid))),
            "{what}"
        );
        assert!(
            message.contains(&format!("--recover-truncate-wal {}", zxid - 1)),
            "{what}"
        );
        assert!(
            message.contains(&format!("{} records", N - zxid + 1)),
            "{what}"
        );
        // Nothing was cut or deleted.
        let mut after = fs::read(&path).unwrap();
        after[at as usize] ^= 1 << bit;
        assert_eq!(after, bytes, "{what}");
    }
}

#[test]
fn recover_truncate_wal_cuts_only_at_the_zxid_it_names() {
    const N: u64 = 12;
    let tmp = tempfile::tempdir().unwrap();
    one_segment(tmp.path(), N);
    let path = seg(tmp.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    flip_bit(&path, offset_of(1, 5) + 18, 4);
    let damaged = fs::read(&path).unwrap();
    // Another zxid than the last good one is refused, and changes nothing.
    for wrong in [3, 5, N] {
        let options = RecoveryOptions {
            recover_truncate_wal: Some(wrong),
        };
        let err = Storage::open_with(tmp.path(), &options).unwrap_err();
        let (found, _, last_good, _) = corrupt_wal(err);
        assert_eq!((found.as_path(), last_good), (path.as_path(), 4));
        assert_eq!(fs::read(&path).unwrap(), damaged);
    }
    let options = RecoveryOptions {
        recover_truncate_wal: Some(4),
    };
    let (mut storage, recovery) = Storage::open_with(tmp.path(), &options).unwrap();
    // Zxids never go back: the cut ones (5 to N) become empty placeholders, so the next
    // zxid is N + 1, never one a client may have seen for a lost change.
    let placeholders: Vec<(u64, Vec<u8>)> = (5..=N).map(|z| (z, Vec::new())).collect();
    let mut want = expected(1..=4);
    want.extend(placeholders.iter().cloned());
    assert_eq!(recovery.records, want);
    assert_eq!(recovery.truncated_bytes, len - offset_of(1, 5));
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        offset_of(1, 5) + 16 * (N - 4),
        "cut, then the placeholders"
    );
    assert_eq!(storage.last_zxid(), N);
    assert!(!tmp.path().join(ZXID_FLOOR).exists(), "done with the floor");
    append_sync(&mut storage, N + 1..=N + 2);
    drop(storage);
    // The option does nothing to a log that needs no cut.
    let (storage, recovery) = Storage::open_with(tmp.path(), &options).unwrap();
    let mut want = expected(1..=4);
    want.extend(placeholders);
    want.extend(expected(N + 1..=N + 2));
    assert_eq!(recovery.records, want);
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(storage.last_zxid(), N + 2);
}

#[test]
fn a_crash_after_a_requested_cut_still_keeps_zxids_from_going_back() {
    // The floor file was made durable, the cut done, and the placeholders never written.
    let tmp = tempfile::tempdir().unwrap();
    one_segment(tmp.path(), 4);
    write_zxid_floor(tmp.path(), 9).unwrap();
    let (storage, recovery) = Storage::open(tmp.path()).unwrap();
    assert_eq!(storage.last_zxid(), 9);
    assert_eq!(recovery.records.len(), 9);
    assert!(recovery.records[4..].iter().all(|(_, p)| p.is_empty()));
    drop(storage);
    // A floor at or below the log's end changes nothing and goes.
    write_zxid_floor(tmp.path(), 3).unwrap();
    let (storage, recovery) = Storage::open(tmp.path()).unwrap();
    assert_eq!((storage.last_zxid(), recovery.records.len()), (9, 9));
    assert!(!tmp.path().join(ZXID_FLOOR).exists());
}

#[test]
fn damage_before_a_later_segment_names_the_recovery_too() {
    let tmp = tempfile::tempdir().unwrap();
    two_segments_no_snapshot(tmp.path());
    flip_bit(&seg(tmp.path(), 1), offset_of(1, 3) + 20, 3);
    let err = Storage::open(tmp.path()).unwrap_err();
    let message = err.to_string();
    let (path, position, last_good, last_after) = corrupt_wal(err);
    assert_eq!(path, seg(tmp.path(), 1));
    assert_eq!((position, last_good, last_after), (offset_of(1, 3), 2, 10));
    assert!(message.contains("--recover-truncate-wal 2"), "{message}");
    // Cutting there also deletes the later segment.
    let options = RecoveryOptions {
        recover_truncate_wal: Some(2),
    };
    let (storage, recovery) = Storage::open_with(tmp.path(), &options).unwrap();
    let mut want = expected(1..=2);
    want.extend((3..=10).map(|z| (z, Vec::new())));
    assert_eq!(recovery.records, want, "zxids 3 to 10 kept as placeholders");
    assert_eq!(storage.last_zxid(), 10);
    assert_eq!(names(tmp.path()), vec![wal::file_name(1)]);
}

#[test]
fn reserved_room_shrinks_with_appends_and_a_reserved_segment_reopens_without_padding() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    let room = s.reserve(1 << 20);
    assert_eq!(
        room,
        Room {
            bytes: 1 << 20,
            full: None
        }
    );
    append_sync(&mut s, 1..=3);
    let used: u64 = (1..=3).map(record_len).sum();
    let room = s.reserve(0);
    assert_eq!(room.bytes, (1 << 20) - used, "what the records took");
    assert_eq!(s.reserve(1 << 20).bytes, 1 << 20, "topped up");
    // The reservation keeps the file's length: a restart finds no tail to cut.
    drop(s);
    let (mut s, recovery) = open(tmp.path());
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(recovery.records, expected(1..=3));
    append_sync(&mut s, 4..=4);
}

#[test]
fn a_restart_from_a_snapshot_taken_elsewhere_continues_the_log_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=5);
    storage.snapshot(3, b"s3").unwrap();
    // Not past what the log has: refused, nothing changed.
    let e = storage.restart_from_snapshot(5, b"s5").unwrap_err();
    assert!(e.to_string().contains("already reaches zxid 5"), "{e}");
    assert_eq!(storage.last_zxid(), 5);
    storage.restart_from_snapshot(40, b"s40").unwrap();
    assert_eq!(storage.last_zxid(), 40);
    assert_eq!(names(dir), vec![snapshot::file_name(40)]);
    append_sync(&mut storage, 41..=42);
    drop(storage);
    let (storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((40, b"s40".to_vec())));
    assert_eq!(recovery.records, expected(41..=42));
    assert_eq!(storage.last_zxid(), 42);
}

#[test]
fn a_crash_in_a_restart_from_a_snapshot_recovers_the_snapshot() {
    // The snapshot written, the old files not yet deleted.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut storage, _) = open(dir);
    append_sync(&mut storage, 1..=5);
    drop(storage);
    snapshot::write(dir, 40, b"s40").unwrap();
    let (mut storage, recovery) = open(dir);
    assert_eq!(recovery.snapshot, Some((40, b"s40".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(storage.last_zxid(), 40);
    append_sync(&mut storage, 41..=41);
    drop(storage);
    let (_, recovery) = open(dir);
    assert_eq!(recovery.records, expected(41..=41));
}
