//! Tests of the partition log, each in its own temporary directory.

use super::segment::{BATCH_HEADER_LEN, HEADER_LEN};
use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A small segment size: a handful of batches per segment.
const SMALL: u64 = 300;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 64,
        retention_ms: None,
        retention_bytes: None,
        flush: FlushPolicy::Never,
    }
}

fn open(dir: &Path, config: LogConfig) -> (PartitionLog, Recovery) {
    PartitionLog::open(dir, config).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// The opaque bytes of the `n`th batch a test appends: lengths vary, so batch boundaries
/// are irregular.
fn payload(n: u64) -> Vec<u8> {
    format!("batch {n};")
        .repeat(1 + (n % 5) as usize)
        .into_bytes()
}

/// The batches a log should hold, in order.
type Model = Vec<FetchedBatch>;

fn next_offset(model: &Model) -> Option<u64> {
    model
        .last()
        .map(|b| b.base_offset + u64::from(b.record_count))
}

/// The producer of the `k`th batch a test appends: none for a third of them (appended with
/// [`PartitionLog::append`]), else one of four producers.
fn producer(k: u64, sequence: u32) -> Option<ProducerBatch> {
    (!k.is_multiple_of(3)).then_some(ProducerBatch {
        producer_id: 100 + k % 4,
        base_sequence: sequence,
    })
}

/// Appends `n` batches (1 to 3 records each, timestamp 1000 × their number, some with a
/// producer) in `epoch`, checking the offsets assigned, and records them in `model`.
fn append_batches(log: &mut PartitionLog, model: &mut Model, n: usize, epoch: u32) {
    for _ in 0..n {
        let k = log.log_end_offset() * 7 + model.len() as u64;
        let bytes = payload(k);
        let record_count = 1 + (k % 3) as u32;
        let max_timestamp_ms = 1000 * (model.len() as u64 + 1);
        let end = log.log_end_offset();
        if let Some(next) = next_offset(model) {
            assert_eq!(end, next, "the log end follows the last batch");
        }
        let producer = producer(k, 1000 + model.len() as u32);
        let info = match producer {
            None => log.append(&bytes, record_count, max_timestamp_ms, epoch),
            Some(_) => log.append_batch(
                &bytes,
                &BatchMeta {
                    record_count,
                    max_timestamp_ms,
                    leader_epoch: epoch,
                    producer,
                    // Half of them as a follower would.
                    base_offset: k.is_multiple_of(2).then_some(end),
                },
            ),
        }
        .unwrap();
        assert_eq!(
            info,
            AppendInfo {
                base_offset: end,
                last_offset: end + u64::from(record_count) - 1,
                log_end_offset: end + u64::from(record_count),
            }
        );
        assert_eq!(log.log_end_offset(), info.log_end_offset);
        model.push(FetchedBatch {
            base_offset: end,
            record_count,
            leader_epoch: epoch,
            max_timestamp_ms,
            producer,
            bytes,
        });
        if let Some(p) = producer {
            assert_eq!(
                log.last_producer_batch(p.producer_id),
                Some(ProducerEntry {
                    base_sequence: p.base_sequence,
                    base_offset: end,
                    record_count,
                    leader_epoch: epoch,
                })
            );
        }
    }
}

/// Checks everything `read` can say about the log against `model`, its index and its
/// producer state.
fn check_log(log: &PartitionLog, model: &Model) {
    check_reads(log, model);
    check_index(log);
    check_producers(log, model);
}

/// The producer state a log holding `model` in the segments now in `dir` must have: the
/// last batches (a window) of each producer in the last two segments, but for batches in
/// a `damaged` range (lost on this replica).
fn expected_producers(
    dir: &Path,
    model: &Model,
    damaged: &[DamagedRange],
) -> BTreeMap<u64, ProducerWindow> {
    let bases = segment_bases(dir);
    let floor = bases[bases.len().saturating_sub(2)];
    let mut producers = BTreeMap::new();
    let lost = |offset| damaged.iter().any(|r| r.contains(offset));
    for batch in model
        .iter()
        .filter(|b| b.base_offset >= floor && !lost(b.base_offset))
    {
        if let Some(p) = batch.producer {
            producers
                .entry(p.producer_id)
                .or_insert_with(ProducerWindow::default)
                .push(ProducerEntry {
                    base_sequence: p.base_sequence,
                    base_offset: batch.base_offset,
                    record_count: batch.record_count,
                    leader_epoch: batch.leader_epoch,
                });
        }
    }
    producers
}

/// Checks the producer state of `log` against `model`, through the public lookup too.
fn check_producers(log: &PartitionLog, model: &Model) {
    let expected = expected_producers(log.dir(), model, log.damage());
    assert_eq!(log.producers, expected, "producer state");
    for id in 0..110 {
        assert_eq!(
            log.last_producer_batch(id),
            expected.get(&id).and_then(ProducerWindow::last),
            "{id}"
        );
    }
}

/// Checks the range of the log and a read from every offset (which must start with the
/// batch holding it and return the rest) against `model`.
fn check_reads(log: &PartitionLog, model: &Model) {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    match model.first() {
        Some(first) => assert_eq!(start, first.base_offset, "log start"),
        None => assert_eq!(start, end, "an empty log"),
    }
    if let Some(next) = next_offset(model) {
        assert_eq!(end, next, "log end");
    }
    let mut first = 0;
    for offset in start..end {
        while offset >= model[first].base_offset + u64::from(model[first].record_count) {
            first += 1;
        }
        let batches = log.read(offset, usize::MAX).unwrap();
        assert!(
            batches == model[first..],
            "read from offset {offset}: got {} batches starting at {:?}",
            batches.len(),
            batches.first().map(|b| b.base_offset)
        );
    }
    assert_eq!(log.read(end, usize::MAX).unwrap(), vec![]);
    assert_out_of_range(log.read(end + 1, 1).unwrap_err(), end + 1);
    if start > 0 {
        assert_out_of_range(log.read(start - 1, 1).unwrap_err(), start - 1);
        assert_out_of_range(log.read(0, 1).unwrap_err(), 0);
    }
}

/// Checks that every in-memory index entry points at the batch it names, inside the
/// segment.
fn check_index(log: &PartitionLog) {
    for segment in &log.segments {
        for entry in &segment.index {
            let pos = u64::from(entry.position);
            assert!(pos < segment.size, "{}: {entry:?}", segment.path.display());
            let header = segment.header_at(pos).unwrap();
            assert_eq!(
                header.base_offset,
                segment.base + u64::from(entry.rel_offset),
                "{}: {entry:?}",
                segment.path.display()
            );
        }
    }
}

fn assert_out_of_range(err: LogError, expected: u64) {
    match err {
        LogError::OffsetOutOfRange { offset, .. } => assert_eq!(offset, expected),
        other => panic!("expected OffsetOutOfRange for {expected}, got {other:?}"),
    }
}

fn corrupt_path(err: LogError) -> PathBuf {
    match err {
        LogError::Corrupt { path, .. } => path,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn seg(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment::file_name(base))
}

fn idx(dir: &Path, base: u64) -> PathBuf {
    dir.join(index::file_name(base))
}

/// The base offsets of the segment files in `dir`.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::SEGMENTS.parse(e.unwrap().file_name().to_str()?))
        .collect();
    bases.sort_unstable();
    bases
}

fn frame_len(batch: &FetchedBatch) -> u64 {
    BATCH_HEADER_LEN + batch.bytes.len() as u64
}

/// The indexes in `model` of the batches of the segment starting at `base`, and the byte
/// position of each.
fn layout(dir: &Path, model: &Model, base: u64) -> Vec<(usize, u64)> {
    let bases = segment_bases(dir);
    let end = bases
        .iter()
        .find(|&&b| b > base)
        .copied()
        .unwrap_or(u64::MAX);
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    for (i, batch) in model.iter().enumerate() {
        if batch.base_offset >= base && batch.base_offset < end {
            out.push((i, pos));
            pos += frame_len(batch);
        }
    }
    out
}

fn flip_bit(path: &Path, at: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Copies the files of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A log of `n` batches in epoch 1 with small segments, closed; returns its model.
fn build(dir: &Path, segment_bytes: u64, n: usize) -> Model {
    let (mut log, _) = open(dir, config(segment_bytes));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, n, 1);
    log.flush().unwrap();
    model
}

#[test]
fn missing_directory_is_a_fresh_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/topic-0");
    let (log, recovery) = open(&dir, LogConfig::default());
    assert_eq!(
        recovery,
        Recovery {
            log_start_offset: 0,
            log_end_offset: 0,
            truncated_bytes: 0,
            segments: 1,
        }
    );
    assert_eq!(log.dir(), dir);
    assert_eq!(segment_bases(&dir), vec![0]);
    assert_eq!(log.epoch_start_offsets(), vec![]);
    check_log(&log, &Vec::new());
    assert_out_of_range(log.read(1, 100).unwrap_err(), 1);
}

#[test]
fn append_and_read_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = open(tmp.path(), config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 40, 1);
    let bases = segment_bases(tmp.path());
    assert!(bases.len() >= 5, "small segments roll: {bases:?}");
    // Every segment starts with a batch and stays within its size.
    for &base in &bases {
        assert!(model.iter().any(|b| b.base_offset == base), "{base}");
        assert!(file_len(&seg(tmp.path(), base)) <= SMALL);
    }
    check_log(&log, &model);

    // max_bytes counts the batch bytes; at least one batch comes back.
    let from = model[3].base_offset + u64::from(model[3].record_count) - 1;
    assert_eq!(log.read(from, 0).unwrap(), model[3..4]);
    assert_eq!(log.read(from, 1).unwrap(), model[3..4]);
    for k in 1..=12 {
        let budget: usize = model[3..3 + k].iter().map(|b| b.bytes.len()).sum();
        assert_eq!(log.read(from, budget).unwrap(), model[3..3 + k], "{k}");
        let fewer = if k == 1 {
            &model[3..4]
        } else {
            &model[3..3 + k - 1]
        };
        assert_eq!(log.read(from, budget - 1).unwrap(), fewer, "{k}");
    }

    // A batch larger than a segment gets a segment of its own, and is still read whole.
    let big = vec![0xa5; 1000];
    let end = log.log_end_offset();
    let info = log.append(&big, 5, 99_000, 1).unwrap();
    assert_eq!(info.base_offset, end);
    model.push(FetchedBatch {
        base_offset: end,
        record_count: 5,
        leader_epoch: 1,
        max_timestamp_ms: 99_000,
        producer: None,
        bytes: big,
    });
    append_batches(&mut log, &mut model, 1, 1);
    let bases = segment_bases(tmp.path());
    assert_eq!(bases[bases.len() - 2..], [end, end + 5]);
    assert_eq!(log.read(end + 2, 10).unwrap(), model[40..41]);
    check_log(&log, &model);
}

#[test]
fn appends_are_refused_without_changing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = open(tmp.path(), config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 3, 7);

    let err = log.append(b"x", 0, 1, 7).unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
    let huge = vec![0u8; MAX_BATCH_BYTES as usize + 1];
    let err = log.append(&huge, 1, 1, 7).unwrap_err();
    assert!(matches!(err, LogError::BatchTooLarge { .. }), "{err:?}");
    let err = log.append(b"x", 1, 1, 6).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::EpochRegression {
                epoch: 6,
                last: 7,
                ..
            }
        ),
        "{err:?}"
    );
    // None of that poisoned the log.
    append_batches(&mut log, &mut model, 2, 7);
    check_log(&log, &model);
    drop(log);
    let (log, _) = open(tmp.path(), config(SMALL));
    check_log(&log, &model);

    for bad in [
        LogConfig {
            segment_bytes: 0,
            ..config(SMALL)
        },
        LogConfig {
            segment_bytes: MAX_SEGMENT_BYTES + 1,
            ..config(SMALL)
        },
        LogConfig {
            flush: FlushPolicy::EveryBatches(0),
            ..config(SMALL)
        },
    ] {
        let err = PartitionLog::open(tmp.path(), bad).unwrap_err();
        assert!(matches!(err, LogError::InvalidConfig { .. }), "{err:?}");
    }
}

#[test]
fn reopen_after_flush_returns_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build(tmp.path(), SMALL, 30);
    let segments = segment_bases(tmp.path()).len();
    let (mut log, recovery) = open(tmp.path(), config(SMALL));
    assert_eq!(
        recovery,
        Recovery {
            log_start_offset: 0,
            log_end_offset: next_offset(&model).unwrap(),
            truncated_bytes: 0,
            segments,
        }
    );
    assert_eq!(log.flushed_offset(), log.log_end_offset());
    check_log(&log, &model);

    // Appending continues where the log ended, and survives another reopen.
    let mut model = model;
    append_batches(&mut log, &mut model, 10, 2);
    log.flush().unwrap();
    drop(log);
    let (log, recovery) = open(tmp.path(), config(SMALL));
    assert_eq!(recovery.truncated_bytes, 0);
    check_log(&log, &model);
    assert_eq!(
        log.epoch_start_offsets(),
        vec![(1, 0), (2, model[30].base_offset)]
    );
}

#[test]
fn flush_policies_move_the_flushed_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let always = LogConfig {
        flush: FlushPolicy::Always,
        ..config(SMALL)
    };
    let (mut log, _) = open(&tmp.path().join("always"), always);
    let mut model = Vec::new();
    for _ in 0..12 {
        append_batches(&mut log, &mut model, 1, 1);
        assert_eq!(log.flushed_offset(), log.log_end_offset());
    }

    let never = config(1 << 20);
    let (mut log, _) = open(&tmp.path().join("never"), never);
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 5, 1);
    assert_eq!(log.flushed_offset(), 0);
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), log.log_end_offset());
    log.flush().unwrap(); // nothing to flush is fine

    let every3 = LogConfig {
        flush: FlushPolicy::EveryBatches(3),
        ..config(1 << 20)
    };
    let (mut log, _) = open(&tmp.path().join("every3"), every3);
    let mut model = Vec::new();
    let mut flushed = Vec::new();
    for _ in 0..7 {
        append_batches(&mut log, &mut model, 1, 1);
        flushed.push(log.flushed_offset());
    }
    let end = |i: usize| next_offset(&model[..=i].to_vec()).unwrap();
    assert_eq!(flushed, vec![0, 0, end(2), end(2), end(2), end(5), end(5)]);

    // Rolling syncs the old segment, so the flushed offset reaches the new one's base.
    let (mut log, _) = open(&tmp.path().join("roll"), config(SMALL));
    let mut model = Vec::new();
    while segment_bases(log.dir()).len() < 2 {
        append_batches(&mut log, &mut model, 1, 1);
    }
    let bases = segment_bases(log.dir());
    assert_eq!(log.flushed_offset(), bases[1]);
    drop(log);
    let (log, _) = open(&tmp.path().join("roll"), config(SMALL));
    assert_eq!(log.flushed_offset(), log.log_end_offset());
}

#[test]
fn torn_tail_at_every_byte_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine, SMALL, 12);
    let last_base = *segment_bases(&pristine).last().unwrap();
    let last_path = seg(&pristine, last_base);
    let (last_batch, last_pos) = *layout(&pristine, &model, last_base).last().unwrap();
    assert_eq!(last_batch, model.len() - 1);
    let len = file_len(&last_path);
    assert_eq!(last_pos + frame_len(&model[last_batch]), len);
    let kept = model[..last_batch].to_vec();

    for cut in last_pos..len {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&pristine, &dir);
        fs::OpenOptions::new()
            .write(true)
            .open(seg(&dir, last_base))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (mut log, recovery) = open(&dir, config(SMALL));
        assert_eq!(recovery.truncated_bytes, cut - last_pos, "cut at {cut}");
        assert_eq!(recovery.log_end_offset, model[last_batch].base_offset);
        assert_eq!(file_len(&seg(&dir, last_base)), last_pos);
        check_log(&log, &kept);

        let mut model = kept.clone();
        append_batches(&mut log, &mut model, 2, 1);
        assert_eq!(model[last_batch].base_offset, recovery.log_end_offset);
        drop(log);
        let (log, recovery) = open(&dir, config(SMALL));
        assert_eq!(recovery.truncated_bytes, 0);
        check_log(&log, &model);
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn flipped_bit_in_the_last_batch_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine, SMALL, 12);
    let last_base = *segment_bases(&pristine).last().unwrap();
    let (last_batch, last_pos) = *layout(&pristine, &model, last_base).last().unwrap();
    let frame = frame_len(&model[last_batch]);
    // Every byte of the batch: its length, CRC, offsets, count, epoch, timestamp, payload.
    for at in last_pos..last_pos + frame {
        let dir = tmp.path().join(format!("flip-{at}"));
        copy_dir(&pristine, &dir);
        flip_bit(&seg(&dir, last_base), at, (at % 8) as u8);
        let (log, recovery) = open(&dir, config(SMALL));
        assert_eq!(recovery.truncated_bytes, frame, "flip at byte {at}");
        check_log(&log, &model[..last_batch].to_vec());
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// The error of a read that met a damaged batch: its file and first offset.
fn damaged_at(err: LogError) -> (PathBuf, u64) {
    match err {
        LogError::Damaged {
            path, first_offset, ..
        } => (path, first_offset),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn damage_in_an_earlier_segment_is_found_by_a_read_or_a_full_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine, 800, 40);
    let bases = segment_bases(&pristine);
    // Segment 1 must not be one of the last two, which are always scanned whole.
    assert!(bases.len() >= 4, "{bases:?}");
    let batches = layout(&pristine, &model, bases[1]);
    assert!(batches.len() >= 6);
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&pristine, &dir);
        dir
    };
    // (Damage in its first or last batch, which open always checks, is in tests::damage.)

    // A batch in the middle is trusted at open (that is what the index is for), and
    // found by the read that reaches it.
    let (middle, middle_pos) = batches[2];
    let dir = fresh("middle");
    flip_bit(&seg(&dir, bases[1]), middle_pos + 33, 1);
    let (log, _) = open(&dir, config(800));
    assert!(log.damage().is_empty());
    let first = model[middle].base_offset;
    let err = log.read(first, usize::MAX).unwrap_err();
    assert_eq!(damaged_at(err), (seg(&dir, bases[1]), first));
    let err = log.read(0, usize::MAX).unwrap_err();
    assert_eq!(damaged_at(err), (seg(&dir, bases[1]), first));
    assert_eq!(log.read(0, 1).unwrap(), model[0..1]);
    drop(log);
    // Without an index the segment is scanned whole, and the damage is found at open.
    let before = file_len(&seg(&dir, bases[1]));
    fs::remove_file(idx(&dir, bases[1])).unwrap();
    let (log, recovery) = open(&dir, config(800));
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(file_len(&seg(&dir, bases[1])), before);
    let range = &log.damage()[0];
    assert_eq!(log.damage().len(), 1);
    assert_eq!(
        (range.first_offset, range.end_offset),
        (first, model[middle + 1].base_offset)
    );

    // So is the second last segment, always (the producer state is read from it).
    let second_last = bases[bases.len() - 2];
    let batches = layout(&pristine, &model, second_last);
    assert!(batches.len() >= 3);
    let dir = fresh("second last");
    flip_bit(&seg(&dir, second_last), batches[1].1 + 33, 1);
    let (log, _) = open(&dir, config(800));
    let range = &log.damage()[0];
    assert_eq!(range.path, seg(&dir, second_last));
    assert_eq!(range.first_offset, model[batches[1].0].base_offset);
    check_producers(&log, &model);
}

#[test]
fn damage_in_an_earlier_segment_before_only_empty_ones_is_a_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let model = build(tmp.path(), SMALL, 10);
    let bases = segment_bases(tmp.path());
    let (mut log, _) = open(tmp.path(), config(SMALL));
    // Empty the last segment: the one before it now ends the log.
    let last_base = *bases.last().unwrap();
    log.truncate_to(last_base).unwrap();
    drop(log);
    let previous = bases[bases.len() - 2];
    let (batch, pos) = *layout(tmp.path(), &model, previous).last().unwrap();
    flip_bit(&seg(tmp.path(), previous), pos + 34, 2);
    let (log, recovery) = open(tmp.path(), config(SMALL));
    assert_eq!(recovery.truncated_bytes, frame_len(&model[batch]));
    assert_eq!(recovery.segments, bases.len() - 1);
    assert!(!seg(tmp.path(), last_base).exists());
    check_log(&log, &model[..batch].to_vec());
}

#[test]
fn missing_or_garbage_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 600, 80);
    let bases = segment_bases(dir);
    assert!(bases.len() >= 6, "{bases:?}");
    let originals: Vec<Vec<u8>> = bases[..bases.len() - 1]
        .iter()
        .map(|&b| fs::read(idx(dir, b)).unwrap())
        .collect();
    assert!(originals.iter().all(|o| o.len() >= 3 * 8));

    // Missing.
    fs::remove_file(idx(dir, bases[0])).unwrap();
    // Garbage.
    fs::write(idx(dir, bases[1]), [0xab; 13]).unwrap();
    // Well formed but wrong: every position one byte off.
    let mut shifted = originals[2].clone();
    for entry in shifted.chunks_exact_mut(8) {
        let pos = u32::from_le_bytes(entry[4..8].try_into().unwrap()) + 1;
        entry[4..8].copy_from_slice(&pos.to_le_bytes());
    }
    fs::write(idx(dir, bases[2]), shifted).unwrap();
    // One wrong entry in the middle: not noticed at open, noticed (and worked around) by
    // the read that uses it.
    let mut one_off = originals[3].clone();
    let pos = u32::from_le_bytes(one_off[12..16].try_into().unwrap()) + 1;
    one_off[12..16].copy_from_slice(&pos.to_le_bytes());
    fs::write(idx(dir, bases[3]), &one_off).unwrap();
    // A last entry that names another batch than the one at its position (as a stale
    // index could): rebuilt, not mistaken for a hole in the offsets.
    let mut renamed = originals[4].clone();
    let at = renamed.len() - 8;
    let rel = u32::from_le_bytes(renamed[at..at + 4].try_into().unwrap()) + 1;
    renamed[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    fs::write(idx(dir, bases[4]), renamed).unwrap();
    // The active segment's index file is never used.
    fs::write(idx(dir, *bases.last().unwrap()), [1, 2, 3]).unwrap();

    let (log, recovery) = open(dir, config(600));
    assert_eq!(recovery.truncated_bytes, 0);
    // (The wrong entry stays in memory: every read that uses it works around it.)
    check_reads(&log, &model);
    for i in [0, 1, 2, 4] {
        assert_eq!(
            fs::read(idx(dir, bases[i])).unwrap(),
            originals[i],
            "index {i}"
        );
    }
    assert_eq!(fs::read(idx(dir, bases[3])).unwrap(), one_off);
    drop(log);

    // A fully scanned segment's index equals the one appending built.
    for &base in &bases[..3] {
        fs::remove_file(idx(dir, base)).unwrap();
    }
    fs::write(idx(dir, bases[3]), &originals[3]).unwrap();
    let (log, _) = open(dir, config(600));
    for i in 0..3 {
        assert_eq!(
            fs::read(idx(dir, bases[i])).unwrap(),
            originals[i],
            "index {i}"
        );
    }
    check_log(&log, &model);
}

#[test]
fn truncate_to_removes_batches_and_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 10, 1);
    append_batches(&mut log, &mut model, 10, 2);
    append_batches(&mut log, &mut model, 10, 4);
    let starts: Vec<u64> = model.iter().map(|b| b.base_offset).collect();
    let start = |i: usize| starts[i];
    let all_epochs = vec![(1, 0), (2, start(10)), (4, start(20))];
    assert_eq!(log.epoch_start_offsets(), all_epochs);

    // Refusals change nothing.
    let multi = model.iter().position(|b| b.record_count > 1).unwrap();
    let err = log.truncate_to(start(multi) + 1).unwrap_err();
    assert!(
        matches!(err, LogError::NotBatchBoundary { batch_base, .. } if batch_base == start(multi)),
        "{err:?}"
    );
    let end = log.log_end_offset();
    assert_out_of_range(log.truncate_to(end + 1).unwrap_err(), end + 1);
    log.truncate_to(end).unwrap(); // a no-op
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), all_epochs);

    // Within the epoch 4 batches: the epochs stay.
    log.truncate_to(start(25)).unwrap();
    model.truncate(25);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), all_epochs);
    assert!(segment_bases(dir).iter().all(|&b| b <= start(25)));
    assert_eq!(log.flushed_offset(), log.log_end_offset());

    // At the first batch of epoch 4: it goes.
    log.truncate_to(start(20)).unwrap();
    model.truncate(20);
    assert_eq!(log.epoch_start_offsets(), all_epochs[..2]);
    // Across several segments.
    let before = segment_bases(dir).len();
    log.truncate_to(start(12)).unwrap();
    model.truncate(12);
    assert!(segment_bases(dir).len() < before);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), all_epochs[..2]);

    // Appending continues at the cut, in a new epoch.
    append_batches(&mut log, &mut model, 8, 5);
    assert_eq!(model[12].base_offset, start(12));
    let epochs = vec![(1, 0), (2, start(10)), (5, start(12))];
    assert_eq!(log.epoch_start_offsets(), epochs);
    check_log(&log, &model);
    drop(log);
    let (mut log, recovery) = open(dir, config(SMALL));
    assert_eq!(recovery.truncated_bytes, 0);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), epochs);

    // To a segment's first batch: that segment stays, empty, as the active one.
    let bases = segment_bases(dir);
    let base = bases[1];
    let at = model.iter().position(|b| b.base_offset == base).unwrap();
    log.truncate_to(base).unwrap();
    model.truncate(at);
    assert_eq!(segment_bases(dir), bases[..2]);
    check_log(&log, &model);
    drop(log);
    let (mut log, _) = open(dir, config(SMALL));
    check_log(&log, &model);

    // Everything.
    log.truncate_to(0).unwrap();
    model.clear();
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), vec![]);
    append_batches(&mut log, &mut model, 3, 1);
    assert_eq!(model[0].base_offset, 0);
    assert_eq!(log.epoch_start_offsets(), vec![(1, 0)]);
    drop(log);
    let (log, _) = open(dir, config(SMALL));
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), vec![(1, 0)]);
}

#[test]
fn epochs_are_recovered_with_or_without_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    for epoch in [1, 3, 4, 9] {
        append_batches(&mut log, &mut model, 7, epoch);
    }
    let epochs = log.epoch_start_offsets();
    assert_eq!(epochs.len(), 4);
    let end = log.log_end_offset();
    drop(log);
    let checkpoint = dir.join(epochs::FILE_NAME);
    let good = fs::read(&checkpoint).unwrap();

    let reopen = || {
        let (log, _) = open(dir, config(SMALL));
        check_log(&log, &model);
        assert_eq!(log.epoch_start_offsets(), epochs);
        drop(log);
        assert_eq!(fs::read(&checkpoint).unwrap(), good, "checkpoint rewritten");
    };
    reopen();
    fs::remove_file(&checkpoint).unwrap();
    reopen();
    fs::write(&checkpoint, b"PEHRAEPO garbage").unwrap();
    reopen();
    // A checkpoint written for a batch that never made it to disk.
    let mut ahead = epochs.clone();
    ahead.push((12, end));
    epochs::store(dir, &ahead).unwrap();
    reopen();
    // A checkpoint that misses the epoch of the log start.
    epochs::store(dir, &epochs[2..]).unwrap();
    reopen();
}

#[test]
fn retention_by_age_deletes_old_segments_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let retention_ms = 10_000;
    let config = LogConfig {
        retention_ms: Some(retention_ms),
        ..config(SMALL)
    };
    let (mut log, _) = open(dir, config.clone());
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 20, 1);
    append_batches(&mut log, &mut model, 20, 2);
    let bases = segment_bases(dir);
    assert!(bases.len() >= 6, "{bases:?}");
    // The newest timestamp of segment 2 is its last batch's.
    let (last_of_2, _) = *layout(dir, &model, bases[2]).last().unwrap();
    let newest = model[last_of_2].max_timestamp_ms;

    assert_eq!(log.apply_retention(newest + retention_ms).unwrap(), 2);
    assert_eq!(segment_bases(dir), bases[2..]);
    assert!(!idx(dir, bases[0]).exists() && !idx(dir, bases[1]).exists());
    assert_eq!(log.log_start_offset(), bases[2]);
    let first = model
        .iter()
        .position(|b| b.base_offset == bases[2])
        .unwrap();
    model.drain(..first);
    check_log(&log, &model);
    assert_out_of_range(log.read(bases[2] - 1, 100).unwrap_err(), bases[2] - 1);
    assert_out_of_range(log.truncate_to(bases[1]).unwrap_err(), bases[1]);

    assert_eq!(log.apply_retention(newest + retention_ms + 1).unwrap(), 1);
    assert_eq!(log.log_start_offset(), bases[3]);
    assert_eq!(log.apply_retention(newest).unwrap(), 0);

    // Far in the future: everything but the active segment.
    let last_base = *bases.last().unwrap();
    assert_eq!(log.apply_retention(u64::MAX).unwrap(), bases.len() - 4);
    assert_eq!(segment_bases(dir), vec![last_base]);
    assert_eq!(log.apply_retention(u64::MAX).unwrap(), 0);
    let first = model
        .iter()
        .position(|b| b.base_offset == last_base)
        .unwrap();
    model.drain(..first);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), vec![(2, last_base)]);

    append_batches(&mut log, &mut model, 5, 2);
    drop(log);
    let (log, recovery) = open(dir, config);
    assert_eq!(recovery.log_start_offset, last_base);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), vec![(2, last_base)]);
}

#[test]
fn retention_by_bytes_keeps_at_most_that_many() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limit = 1000;
    let config = LogConfig {
        retention_bytes: Some(limit),
        ..config(SMALL)
    };
    let (mut log, _) = open(dir, config.clone());
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 40, 1);
    let bases = segment_bases(dir);
    let sizes = |dir: &Path| -> Vec<u64> {
        segment_bases(dir)
            .iter()
            .map(|&b| file_len(&seg(dir, b)))
            .collect()
    };
    let before = sizes(dir);
    assert!(before.iter().sum::<u64>() > limit);

    let deleted = log.apply_retention(0).unwrap();
    let after = sizes(dir);
    assert_eq!(after[..], before[deleted..]);
    assert!(after.iter().sum::<u64>() <= limit);
    assert!(after.iter().sum::<u64>() + before[deleted - 1] > limit);
    assert_eq!(log.log_start_offset(), bases[deleted]);
    let first = model
        .iter()
        .position(|b| b.base_offset == bases[deleted])
        .unwrap();
    model.drain(..first);
    check_log(&log, &model);
    assert_eq!(log.apply_retention(0).unwrap(), 0);

    // A limit below the active segment's size keeps the active segment.
    drop(log);
    let tiny = LogConfig {
        retention_bytes: Some(0),
        ..config
    };
    let (mut log, _) = open(dir, tiny);
    log.apply_retention(0).unwrap();
    assert_eq!(segment_bases(dir), vec![*bases.last().unwrap()]);
}

#[test]
fn foreign_or_inconsistent_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    build(&pristine, SMALL, 20);
    let bases = segment_bases(&pristine);

    // Not a segment.
    let dir = tmp.path().join("foreign");
    copy_dir(&pristine, &dir);
    let mut bytes = fs::read(seg(&dir, bases[1])).unwrap();
    bytes[0] = b'X';
    fs::write(seg(&dir, bases[1]), bytes).unwrap();
    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    assert!(
        matches!(&err, LogError::NotOurs { path } if *path == seg(&dir, bases[1])),
        "{err:?}"
    );

    // A future format version.
    let dir = tmp.path().join("version");
    copy_dir(&pristine, &dir);
    flip_bit(&seg(&dir, bases[0]), 9, 0);
    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    assert!(
        matches!(err, LogError::UnsupportedVersion { version: 258, .. }),
        "{err:?}"
    );

    // A missing segment in the middle: a hole in the offsets.
    let dir = tmp.path().join("hole");
    copy_dir(&pristine, &dir);
    fs::remove_file(seg(&dir, bases[2])).unwrap();
    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    assert_eq!(corrupt_path(err), seg(&dir, bases[3]));

    // A segment whose name does not match its first batch.
    let dir = tmp.path().join("renamed");
    copy_dir(&pristine, &dir);
    let last = *bases.last().unwrap();
    fs::rename(seg(&dir, last), seg(&dir, last + 1)).unwrap();
    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    assert_eq!(corrupt_path(err), seg(&dir, last + 1));

    // Leftovers of interrupted creations are removed; unknown files are left alone.
    let dir = tmp.path().join("leftovers");
    copy_dir(&pristine, &dir);
    let tmp_seg = dir.join(format!("{}.tmp", segment::file_name(9999)));
    let orphan_index = idx(&dir, 9999);
    fs::write(&tmp_seg, b"PEHRALOG").unwrap();
    fs::write(&orphan_index, b"").unwrap();
    fs::write(dir.join("notes.txt"), b"hi").unwrap();
    open(&dir, config(SMALL));
    assert!(!tmp_seg.exists() && !orphan_index.exists());
    assert!(dir.join("notes.txt").exists());
}

/// Small segments, and retention deleting every segment but the active one when applied at
/// `u64::MAX`.
fn retaining() -> LogConfig {
    LogConfig {
        retention_ms: Some(1),
        ..config(SMALL)
    }
}

/// The metadata of a batch of one record in `epoch`, with no producer.
fn meta(epoch: u32) -> BatchMeta {
    BatchMeta {
        record_count: 1,
        max_timestamp_ms: 5,
        leader_epoch: epoch,
        producer: None,
        base_offset: None,
    }
}

/// Appends one batch with `producer_id` and `base_sequence` (2 records) and records it.
fn append_produced(
    log: &mut PartitionLog,
    model: &mut Model,
    epoch: u32,
    producer_id: u64,
    base_sequence: u32,
) -> ProducerEntry {
    let producer = Some(ProducerBatch {
        producer_id,
        base_sequence,
    });
    let bytes = payload(model.len() as u64);
    let info = log
        .append_batch(
            &bytes,
            &BatchMeta {
                record_count: 2,
                producer,
                ..meta(epoch)
            },
        )
        .unwrap();
    model.push(FetchedBatch {
        base_offset: info.base_offset,
        record_count: 2,
        leader_epoch: epoch,
        max_timestamp_ms: 5,
        producer,
        bytes,
    });
    ProducerEntry {
        base_sequence,
        base_offset: info.base_offset,
        record_count: 2,
        leader_epoch: epoch,
    }
}

/// Appends one batch of one record without a producer and records it.
fn append_plain(log: &mut PartitionLog, model: &mut Model, epoch: u32) {
    let bytes = payload(model.len() as u64);
    let info = log.append(&bytes, 1, 5, epoch).unwrap();
    model.push(FetchedBatch {
        base_offset: info.base_offset,
        record_count: 1,
        leader_epoch: epoch,
        max_timestamp_ms: 5,
        producer: None,
        bytes,
    });
}

#[test]
fn producer_identity_round_trips_through_read_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 30, 1);
    // The extremes of both fields, and a producer id next to the reserved one.
    append_produced(&mut log, &mut model, 1, 0, 0);
    append_produced(&mut log, &mut model, 1, u64::MAX - 1, u32::MAX);
    append_batches(&mut log, &mut model, 3, 1);
    let with = model.iter().filter(|b| b.producer.is_some()).count();
    assert!(with > 5 && with < model.len(), "a mix: {with}");
    assert!(segment_bases(dir).len() >= 4);
    check_log(&log, &model);
    let end = log.log_end_offset();
    assert_eq!(
        log.read(end - 7, usize::MAX)
            .unwrap()
            .first()
            .unwrap()
            .producer,
        model
            .iter()
            .rev()
            .find(|b| b.base_offset <= end - 7)
            .unwrap()
            .producer
    );
    drop(log);
    let (log, _) = open(dir, config(SMALL));
    check_log(&log, &model);
    // Older segments lost their producers from the state, not from the batches.
    let first = log.read(0, 1).unwrap();
    assert_eq!(first, model[..1]);

    // The producer identity is covered by the CRC: a flip there is a torn batch.
    let last_base = *segment_bases(dir).last().unwrap();
    let (last, pos) = *layout(dir, &model, last_base).last().unwrap();
    drop(log);
    flip_bit(&seg(dir, last_base), pos + 32, 0);
    let (log, recovery) = open(dir, config(SMALL));
    assert_eq!(recovery.truncated_bytes, frame_len(&model[last]));
    check_log(&log, &model[..last].to_vec());
}

#[test]
fn the_reserved_producer_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = open(tmp.path(), config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 3, 1);
    let err = log
        .append_batch(
            b"x",
            &BatchMeta {
                producer: Some(ProducerBatch {
                    producer_id: u64::MAX,
                    base_sequence: 0,
                }),
                ..meta(1)
            },
        )
        .unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch { .. }), "{err:?}");
    check_log(&log, &model);
}

#[test]
fn append_batch_at_the_wrong_offset_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 12, 2);
    append_produced(&mut log, &mut model, 2, 7, 40);
    let end = log.log_end_offset();
    let sizes = |dir: &Path| -> Vec<u64> {
        segment_bases(dir)
            .iter()
            .map(|&b| file_len(&seg(dir, b)))
            .collect()
    };
    let before = sizes(dir);
    let checkpoint = fs::read(dir.join(epochs::FILE_NAME)).unwrap();
    for expected in [0, end - 1, end + 1, u64::MAX] {
        let err = log
            .append_batch(
                b"follower",
                &BatchMeta {
                    // A new epoch and a producer: neither may be recorded.
                    leader_epoch: 3,
                    producer: Some(ProducerBatch {
                        producer_id: 7,
                        base_sequence: 41,
                    }),
                    base_offset: Some(expected),
                    ..meta(3)
                },
            )
            .unwrap_err();
        match &err {
            LogError::OffsetMismatch {
                dir: d,
                expected: e,
                log_end,
            } => {
                assert_eq!((d.as_path(), *e, *log_end), (dir, expected, end));
            }
            other => panic!("expected OffsetMismatch, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("{expected}")), "{err}");
    }
    assert_eq!(sizes(dir), before);
    assert_eq!(fs::read(dir.join(epochs::FILE_NAME)).unwrap(), checkpoint);
    assert_eq!(log.epoch_start_offsets().last().unwrap().0, 2);
    assert_eq!(log.last_producer_batch(7).unwrap().base_sequence, 40);
    check_log(&log, &model);
    // The right offset is taken, and the log was not poisoned.
    let info = log
        .append_batch(
            b"follower",
            &BatchMeta {
                base_offset: Some(end),
                ..meta(3)
            },
        )
        .unwrap();
    assert_eq!(info.base_offset, end);

    // An empty log starting at 0 is not where a leader's batch at 500 goes.
    let (mut empty, _) = open(&dir.join("empty"), config(SMALL));
    let err = empty
        .append_batch(
            b"x",
            &BatchMeta {
                base_offset: Some(500),
                ..meta(1)
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OffsetMismatch {
                expected: 500,
                log_end: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(empty.log_end_offset(), 0);
    assert_eq!(empty.last_epoch(), None);
}

#[test]
fn a_producers_last_batches_are_found_by_sequence_across_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(1 << 20));
    let mut model = Vec::new();
    let entries: Vec<ProducerEntry> = (0..PRODUCER_WINDOW as u32 + 2)
        .map(|i| append_produced(&mut log, &mut model, 1, 9, i * 2))
        .collect();
    let check = |log: &PartitionLog| {
        // The oldest two fell out of the window; the rest are found by their sequence.
        assert_eq!(log.producer_batch(9, 0), None);
        assert_eq!(log.producer_batch(9, 2), None);
        for entry in &entries[2..] {
            assert_eq!(log.producer_batch(9, entry.base_sequence), Some(*entry));
        }
        assert_eq!(log.producer_batch(9, 3), None, "no batch starts there");
        assert_eq!(log.producer_batch(8, 4), None, "another producer");
    };
    check(&log);
    check_log(&log, &model);
    drop(log);
    let (log, _) = open(dir, config(1 << 20));
    check(&log);
}

#[test]
fn last_producer_batch_follows_appends_reopen_truncation_and_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Large segments first: everything stays in one segment.
    let (mut log, _) = open(dir, config(1 << 20));
    let mut model = Vec::new();
    assert_eq!(log.last_producer_batch(1), None);
    let a1 = append_produced(&mut log, &mut model, 1, 1, 0);
    let b1 = append_produced(&mut log, &mut model, 1, 2, 10);
    append_batches(&mut log, &mut model, 2, 1);
    let a2 = append_produced(&mut log, &mut model, 2, 1, 2);
    let a3 = append_produced(&mut log, &mut model, 2, 1, 4);
    assert_eq!(log.last_producer_batch(1), Some(a3));
    assert_eq!(log.last_producer_batch(2), Some(b1));
    assert_eq!(log.last_producer_batch(3), None);
    assert_eq!(
        (a2.leader_epoch, a2.base_sequence, a2.record_count),
        (2, 2, 2)
    );
    check_log(&log, &model);
    drop(log);
    let (mut log, _) = open(dir, config(1 << 20));
    assert_eq!(log.last_producer_batch(1), Some(a3));
    assert_eq!(log.last_producer_batch(2), Some(b1));
    check_log(&log, &model);

    // Truncating a producer's last batch falls back to its previous one.
    log.truncate_to(a3.base_offset).unwrap();
    model.pop();
    assert_eq!(log.last_producer_batch(1), Some(a2));
    assert_eq!(log.last_producer_batch(2), Some(b1));
    log.truncate_to(a2.base_offset).unwrap();
    model.pop();
    assert_eq!(log.last_producer_batch(1), Some(a1));
    check_log(&log, &model);
    // ... or forgets the producer if it has none left.
    log.truncate_to(b1.base_offset).unwrap();
    model.truncate(1);
    assert_eq!(log.last_producer_batch(1), Some(a1));
    assert_eq!(log.last_producer_batch(2), None);
    check_log(&log, &model);
    drop(log);
    let (mut log, _) = open(dir, config(1 << 20));
    assert_eq!(log.last_producer_batch(1), Some(a1));
    assert_eq!(log.last_producer_batch(2), None);

    log.reset_to(1000).unwrap();
    assert_eq!(log.last_producer_batch(1), None);
    assert!(log.producers.is_empty());
    let c = append_produced(&mut log, &mut Vec::new(), 4, 1, 77);
    assert_eq!(c.base_offset, 1000);
    assert_eq!(log.last_producer_batch(1), Some(c));
    drop(log);
    let (log, _) = open(dir, config(1 << 20));
    assert_eq!(log.last_producer_batch(1), Some(c));
}

#[test]
fn producer_state_covers_the_last_two_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, retaining());
    let mut model = Vec::new();
    // Producer 1 appends only in the first segment; the other batches have no producer.
    let early = append_produced(&mut log, &mut model, 1, 1, 0);
    append_plain(&mut log, &mut model, 1);
    assert_eq!(segment_bases(dir).len(), 1);
    // A second segment: producer 1 is still known.
    while segment_bases(dir).len() < 2 {
        append_plain(&mut log, &mut model, 1);
    }
    assert_eq!(log.last_producer_batch(1), Some(early));
    check_log(&log, &model);
    drop(log);
    let (mut log, _) = open(dir, retaining());
    assert_eq!(log.last_producer_batch(1), Some(early));
    // A third: it is forgotten, as a reopen would.
    while segment_bases(dir).len() < 3 {
        append_plain(&mut log, &mut model, 1);
    }
    assert_eq!(log.last_producer_batch(1), None);
    check_log(&log, &model);
    drop(log);
    let (mut log, _) = open(dir, retaining());
    assert_eq!(log.last_producer_batch(1), None);
    check_log(&log, &model);

    // Truncating away the last segment brings the first back into the state.
    let bases = segment_bases(dir);
    let at = model
        .iter()
        .position(|b| b.base_offset == bases[2])
        .unwrap();
    log.truncate_to(bases[2]).unwrap();
    model.truncate(at);
    assert_eq!(
        log.last_producer_batch(1),
        None,
        "two segments still follow it"
    );
    let at = model
        .iter()
        .position(|b| b.base_offset == bases[1])
        .unwrap()
        + 1;
    log.truncate_to(model[at].base_offset).unwrap();
    model.truncate(at);
    // Segment 2 is gone: segments 0 and 1 are the last two. (No batch cut had a producer:
    // it is the change of segments that brings producer 1 back.)
    assert_eq!(segment_bases(dir), bases[..2]);
    assert_eq!(log.last_producer_batch(1), Some(early));
    check_log(&log, &model);

    // Many segments, several epochs, truncations and retention keep it equal to what a
    // reopen builds (check_log compares it with the batches of the last two segments).
    append_batches(&mut log, &mut model, 40, 2);
    check_log(&log, &model);
    let cut = model.len() - 9;
    log.truncate_to(model[cut].base_offset).unwrap();
    model.truncate(cut);
    check_log(&log, &model);
    append_batches(&mut log, &mut model, 15, 3);
    // Producer 5 appends in the second last segment only; retention takes it.
    let only = append_produced(&mut log, &mut model, 3, 5, 0);
    let bases = segment_bases(dir);
    while segment_bases(dir).len() == bases.len() {
        append_batches(&mut log, &mut model, 1, 3);
    }
    assert_eq!(log.last_producer_batch(5), Some(only));
    let deleted = log.apply_retention(u64::MAX).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.last_producer_batch(5), None);
    let start = log.log_start_offset();
    model.retain(|b| b.base_offset >= start);
    check_log(&log, &model);
    drop(log);
    let (log, _) = open(dir, retaining());
    check_log(&log, &model);
}

#[test]
fn end_offset_for_epoch_and_last_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, retaining());
    // Empty.
    for epoch in [0, 1, u32::MAX] {
        assert_eq!(log.end_offset_for_epoch(epoch), None);
    }
    assert_eq!(log.last_epoch(), None);

    // A single epoch.
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 4, 3);
    let end = log.log_end_offset();
    assert_eq!(log.last_epoch(), Some(3));
    assert_eq!(log.end_offset_for_epoch(2), None, "below all");
    assert_eq!(log.end_offset_for_epoch(3), Some((3, end)));
    assert_eq!(log.end_offset_for_epoch(4), Some((3, end)), "above all");
    assert_eq!(log.end_offset_for_epoch(u32::MAX), Some((3, end)));

    // Several: 3 from 0, 5 from s5, 9 from s9.
    let s5 = log.log_end_offset();
    append_batches(&mut log, &mut model, 10, 5);
    let s9 = log.log_end_offset();
    append_batches(&mut log, &mut model, 6, 9);
    let end = log.log_end_offset();
    let expect = |log: &PartitionLog| {
        assert_eq!(log.last_epoch(), Some(9));
        assert_eq!(log.end_offset_for_epoch(0), None, "below all");
        assert_eq!(log.end_offset_for_epoch(2), None, "below all");
        assert_eq!(log.end_offset_for_epoch(3), Some((3, s5)));
        assert_eq!(log.end_offset_for_epoch(4), Some((3, s5)), "between");
        assert_eq!(log.end_offset_for_epoch(5), Some((5, s9)));
        assert_eq!(log.end_offset_for_epoch(8), Some((5, s9)), "between");
        assert_eq!(log.end_offset_for_epoch(9), Some((9, end)));
        assert_eq!(log.end_offset_for_epoch(10), Some((9, end)), "above all");
    };
    expect(&log);
    drop(log);
    let (mut log, _) = open(dir, retaining());
    expect(&log);

    // Truncating epoch 9 away makes epoch 5 the last, ending at the log end.
    log.truncate_to(s9).unwrap();
    assert_eq!(log.last_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(9), Some((5, s9)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, s5)));
    // Retention removing epoch 3's batches: it is no longer in the log.
    let bases = segment_bases(dir);
    let kept = log.apply_retention(u64::MAX).unwrap();
    assert_eq!(kept, bases.len() - 1);
    let start = log.log_start_offset();
    assert!(start > s5, "{start} {s5}");
    assert_eq!(log.end_offset_for_epoch(3), None);
    assert_eq!(log.end_offset_for_epoch(4), None);
    assert_eq!(log.end_offset_for_epoch(5), Some((5, s9)));
    // Reset: empty again.
    log.reset_to(s9 + 100).unwrap();
    assert_eq!(log.end_offset_for_epoch(5), None);
    assert_eq!(log.last_epoch(), None);
}

#[test]
fn reset_to_then_append_then_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 30, 1);
    append_batches(&mut log, &mut model, 5, 2);
    assert!(segment_bases(dir).len() >= 4);
    let start = log.log_end_offset() + 1234;

    log.reset_to(start).unwrap();
    assert_eq!(segment_bases(dir), vec![start]);
    assert_eq!(file_len(&seg(dir, start)), HEADER_LEN);
    let leftovers: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".log") && n != epochs::FILE_NAME)
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "no index, marker or tmp file"
    );
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), start);
    assert_eq!(log.flushed_offset(), start);
    assert_eq!(log.epoch_start_offsets(), vec![]);
    model.clear();
    check_log(&log, &model);
    assert_out_of_range(log.read(start - 1, 10).unwrap_err(), start - 1);

    append_batches(&mut log, &mut model, 20, 3);
    assert_eq!(model[0].base_offset, start);
    assert_eq!(log.epoch_start_offsets(), vec![(3, start)]);
    check_log(&log, &model);
    drop(log);
    let (mut log, recovery) = open(dir, config(SMALL));
    assert_eq!(recovery.log_start_offset, start);
    assert_eq!(recovery.truncated_bytes, 0);
    check_log(&log, &model);
    assert_eq!(log.epoch_start_offsets(), vec![(3, start)]);

    // To offsets inside the log, to the base of a segment it has (the new segment takes
    // the same name), and below it.
    for to in [model[3].base_offset, log.log_start_offset(), 7] {
        let bases = segment_bases(dir);
        if to == log.log_start_offset() {
            assert!(bases.contains(&to));
        }
        log.reset_to(to).unwrap();
        assert_eq!(segment_bases(dir), vec![to]);
        model.clear();
        check_log(&log, &model);
        append_batches(&mut log, &mut model, 8, 4);
        drop(log);
        log = open(dir, config(SMALL)).0;
        assert_eq!(log.log_start_offset(), to);
        check_log(&log, &model);
    }
}

/// A log of several segments and epochs in `dir`, with its checkpoint; closed.
fn build_for_reset(dir: &Path) -> Model {
    let (mut log, _) = open(dir, config(SMALL));
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 20, 1);
    append_batches(&mut log, &mut model, 10, 2);
    assert!(segment_bases(dir).len() >= 4);
    model
}

/// Opens `dir` and checks it holds the empty log of a finished reset to `start`.
fn expect_reset(dir: &Path, start: u64) {
    let (mut log, recovery) = open(dir, config(SMALL));
    assert_eq!(
        (recovery.log_start_offset, recovery.log_end_offset),
        (start, start)
    );
    assert_eq!(segment_bases(dir), vec![start]);
    assert!(!dir.join(reset::FILE_NAME).exists());
    assert!(!dir.join(format!("{}.tmp", reset::FILE_NAME)).exists());
    for base in [0, start] {
        assert!(!idx(dir, base).exists());
    }
    assert_eq!(log.epoch_start_offsets(), vec![]);
    assert_eq!(epochs::load(dir).unwrap(), epochs::Loaded::Valid(vec![]));
    check_log(&log, &Vec::new());
    let mut model = Vec::new();
    append_batches(&mut log, &mut model, 3, 7);
    drop(log);
    let (log, _) = open(dir, config(SMALL));
    check_log(&log, &model);
}

#[test]
fn a_crash_during_reset_to_leaves_the_old_log_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build_for_reset(&pristine);
    let bases = segment_bases(&pristine);
    let end = next_offset(&model).unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&pristine, &dir);
        dir
    };

    // The marker was being written: the old log.
    let dir = fresh("marker-tmp");
    fs::write(
        dir.join(format!("{}.tmp", reset::FILE_NAME)),
        b"PEHRARST\x01",
    )
    .unwrap();
    let (log, _) = open(&dir, config(SMALL));
    check_log(&log, &model);
    assert!(!dir.join(format!("{}.tmp", reset::FILE_NAME)).exists());
    drop(log);

    // The marker is durable, nothing deleted yet; to past the end and to below the start.
    for start in [end + 50, 0, bases[2]] {
        let dir = fresh(&format!("marked-{start}"));
        reset::store(&dir, start).unwrap();
        expect_reset(&dir, start);
    }

    // The oldest segments (and some indexes) deleted.
    for deleted in 1..bases.len() {
        let dir = fresh(&format!("deleted-{deleted}"));
        reset::store(&dir, end + 50).unwrap();
        for &base in &bases[..deleted] {
            fs::remove_file(seg(&dir, base)).unwrap();
        }
        if deleted < bases.len() - 1 {
            fs::remove_file(idx(&dir, bases[deleted])).unwrap();
        }
        expect_reset(&dir, end + 50);
    }

    // Everything deleted; the new segment being created, or created; the checkpoint
    // emptied or not.
    for (created, checkpoint) in [(false, false), (true, false), (true, true)] {
        let dir = fresh(&format!("created-{created}-{checkpoint}"));
        let start = end + 50;
        reset::store(&dir, start).unwrap();
        for &base in &bases {
            fs::remove_file(seg(&dir, base)).unwrap();
            let _ = fs::remove_file(idx(&dir, base));
        }
        let header = fs::read(seg(&pristine, 0)).unwrap()[..HEADER_LEN as usize].to_vec();
        if created {
            fs::write(seg(&dir, start), &header).unwrap();
        } else {
            fs::write(
                dir.join(format!("{}.tmp", segment::file_name(start))),
                &header,
            )
            .unwrap();
        }
        if checkpoint {
            epochs::store(&dir, &[]).unwrap();
        }
        expect_reset(&dir, start);
    }

    // A damaged marker: where the reset was going is unknown; nothing is touched.
    let dir = fresh("damaged");
    reset::store(&dir, end + 50).unwrap();
    flip_bit(&dir.join(reset::FILE_NAME), 14, 1);
    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    assert_eq!(corrupt_path(err), dir.join(reset::FILE_NAME));
    assert_eq!(segment_bases(&dir), bases);
}

#[test]
fn a_version_1_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic-3");
    fs::create_dir(&dir).unwrap();
    // A version 1 segment with one batch: 32-byte batch header, payload "v1".
    let mut bytes = b"PEHRALOG".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    let mut covered = Vec::new();
    covered.extend_from_slice(&0u64.to_le_bytes()); // base_offset
    covered.extend_from_slice(&1u32.to_le_bytes()); // record_count
    covered.extend_from_slice(&1u32.to_le_bytes()); // leader_epoch
    covered.extend_from_slice(&42u64.to_le_bytes()); // max_timestamp_ms
    covered.extend_from_slice(b"v1");
    bytes.extend_from_slice(&(covered.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&covered).to_le_bytes());
    bytes.extend_from_slice(&covered);
    fs::write(seg(&dir, 0), &bytes).unwrap();
    epochs::store(&dir, &[(1, 0)]).unwrap();
    let checkpoint = fs::read(dir.join(epochs::FILE_NAME)).unwrap();

    let err = PartitionLog::open(&dir, config(SMALL)).unwrap_err();
    match &err {
        LogError::OldFormat {
            path,
            dir: d,
            version,
            supported,
        } => {
            assert_eq!(path, &seg(&dir, 0));
            assert_eq!(d, &dir);
            assert_eq!((*version, *supported), (1, 2));
        }
        other => panic!("expected OldFormat, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        "version 1".to_owned(),
        "only version 2".to_owned(),
        "delete the partition directory".to_owned(),
        dir.display().to_string(),
        "older Pehra version".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
    // Nothing was changed.
    assert_eq!(fs::read(seg(&dir, 0)).unwrap(), bytes);
    assert_eq!(fs::read(dir.join(epochs::FILE_NAME)).unwrap(), checkpoint);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

    // Also behind a current segment.
    let mixed = tmp.path().join("mixed");
    let model = build(&mixed, SMALL, 10);
    let next = next_offset(&model).unwrap();
    fs::write(seg(&mixed, next), &bytes[..HEADER_LEN as usize]).unwrap();
    let err = PartitionLog::open(&mixed, config(SMALL)).unwrap_err();
    assert!(
        matches!(&err, LogError::OldFormat { path, version: 1, .. } if *path == seg(&mixed, next)),
        "{err:?}"
    );
}

mod damage;
