//! Damage in the middle of a log: kept, recorded, refused on read, found by the scrub and
//! healed by a repair. A torn tail is still cut.

use super::*;

/// A segment size that keeps every batch of these tests in one (active) segment.
const BIG: u64 = 1 << 20;

/// The single recorded damaged range of `log`.
fn only_range(log: &PartitionLog) -> DamagedRange {
    match log.damage() {
        [range] => range.clone(),
        other => panic!("expected one damaged range, got {other:?}"),
    }
}

/// The offsets a [`LogError::Damaged`] reports.
fn damaged_offsets(err: LogError) -> (PathBuf, u64, Option<u64>) {
    match err {
        LogError::Damaged {
            path,
            first_offset,
            end_offset,
            ..
        } => (path, first_offset, end_offset),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

/// Checks that `log` holds `model` around the damaged batches `model[bad]`: reads from
/// before the damage stop at it, reads inside it fail, reads after it work.
fn check_damaged_reads(log: &PartitionLog, model: &Model, bad: std::ops::Range<usize>) {
    let first = model[bad.start].base_offset;
    let end = next_offset(&model[..bad.end].to_vec()).unwrap();
    assert_eq!(log.read(0, usize::MAX).unwrap(), model[..bad.start]);
    for offset in first..end {
        let (_, from, to) = damaged_offsets(log.read(offset, usize::MAX).unwrap_err());
        assert_eq!((from, to), (first, Some(end)), "read at {offset}");
    }
    for (i, batch) in model.iter().enumerate().skip(bad.end) {
        assert_eq!(log.read(batch.base_offset, usize::MAX).unwrap(), model[i..]);
    }
}

#[test]
fn a_flipped_byte_mid_active_segment_keeps_every_batch_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine, BIG, 30);
    assert_eq!(segment_bases(&pristine), vec![0], "one (active) segment");
    let path = seg(&pristine, 0);
    let len = file_len(&path);
    let (bad, pos) = layout(&pristine, &model, 0)[10];
    let frame = frame_len(&model[bad]);
    // Every byte of the batch: its length (some flips make it run past the end of the
    // file, as a torn write would), CRC, offsets, count, epoch, timestamp, producer, payload.
    for at in pos..pos + frame {
        let dir = tmp.path().join(format!("flip-{at}"));
        copy_dir(&pristine, &dir);
        flip_bit(&seg(&dir, 0), at, (at % 8) as u8);
        let (log, recovery) = open(&dir, config(BIG));
        let what = format!("flip at byte {at}");
        assert_eq!(recovery.truncated_bytes, 0, "{what}");
        assert_eq!(file_len(&seg(&dir, 0)), len, "{what}: nothing cut");
        assert_eq!(log.log_end_offset(), next_offset(&model).unwrap(), "{what}");
        let range = only_range(&log);
        assert_eq!(range.path, seg(&dir, 0), "{what}");
        assert_eq!(range.position, pos, "{what}");
        assert_eq!(range.end_position, pos + frame, "{what}");
        assert_eq!(range.first_offset, model[bad].base_offset, "{what}");
        assert_eq!(range.end_offset, model[bad + 1].base_offset, "{what}");
        check_damaged_reads(&log, &model, bad..bad + 1);
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_damaged_log_appends_reopens_and_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut model = build(dir, BIG, 30);
    let (bad, pos) = layout(dir, &model, 0)[12];
    flip_bit(&seg(dir, 0), pos + 47, 5);
    let (mut log, _) = open(dir, config(BIG));
    let range = only_range(&log);
    // Appends go on after the damage.
    append_batches(&mut log, &mut model, 3, 2);
    log.flush().unwrap();
    check_damaged_reads(&log, &model, bad..bad + 1);
    drop(log);
    let (mut log, recovery) = open(dir, config(BIG));
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(only_range(&log), range);
    check_damaged_reads(&log, &model, bad..bad + 1);
    assert_eq!(log.last_epoch(), Some(2));
    check_producers(&log, &model);

    // A repair must cover exactly the damaged offsets; a refusal changes nothing.
    let wrong = [&model[bad..bad + 2], &model[bad - 1..bad + 1], &[]];
    for batches in wrong {
        let err = log.repair(range.first_offset, batches).unwrap_err();
        assert!(matches!(err, LogError::InvalidBatch { .. }), "{err:?}");
        assert_eq!(only_range(&log), range);
    }
    let err = log.repair(range.first_offset + 1, &model[bad..bad + 1]);
    assert!(matches!(err, Err(LogError::InvalidBatch { .. })), "{err:?}");
    // The batches a healthy replica serves heal it.
    log.repair(range.first_offset, &model[bad..bad + 1])
        .unwrap();
    assert!(log.damage().is_empty());
    check_log(&log, &model);
    drop(log);
    let (log, recovery) = open(dir, config(BIG));
    assert_eq!(recovery.truncated_bytes, 0);
    assert!(log.damage().is_empty());
    check_log(&log, &model);
    assert_eq!(
        log.epoch_start_offsets(),
        vec![(1, 0), (2, model[30].base_offset)]
    );
}

#[test]
fn a_repair_may_bring_batches_framed_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, BIG, 20);
    let (bad, pos) = layout(dir, &model, 0)[5];
    // Two batches damaged at once.
    flip_bit(&seg(dir, 0), pos + 50, 1);
    flip_bit(&seg(dir, 0), pos + frame_len(&model[bad]) + 50, 1);
    let (mut log, _) = open(dir, config(BIG));
    let range = only_range(&log);
    assert_eq!(range.first_offset, model[bad].base_offset);
    assert_eq!(range.end_offset, model[bad + 2].base_offset);
    check_damaged_reads(&log, &model, bad..bad + 2);
    // The healthy replica holds the same offsets as one larger batch.
    let merged = FetchedBatch {
        base_offset: model[bad].base_offset,
        record_count: model[bad].record_count + model[bad + 1].record_count,
        leader_epoch: 1,
        max_timestamp_ms: model[bad + 1].max_timestamp_ms,
        producer: None,
        bytes: b"one larger batch from the leader".repeat(3),
    };
    log.repair(range.first_offset, std::slice::from_ref(&merged))
        .unwrap();
    let mut healed = model[..bad].to_vec();
    healed.push(merged);
    healed.extend_from_slice(&model[bad + 2..]);
    check_reads(&log, &healed);
    check_index(&log);
    drop(log);
    let (log, _) = open(dir, config(BIG));
    assert!(log.damage().is_empty());
    check_reads(&log, &healed);
}

#[test]
fn a_torn_tail_after_damage_is_cut_and_the_damage_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, BIG, 20);
    let batches = layout(dir, &model, 0);
    let (bad, pos) = batches[4];
    let (last, last_pos) = *batches.last().unwrap();
    flip_bit(&seg(dir, 0), pos + 47, 0);
    fs::OpenOptions::new()
        .write(true)
        .open(seg(dir, 0))
        .unwrap()
        .set_len(last_pos + 7)
        .unwrap();
    let (log, recovery) = open(dir, config(BIG));
    assert_eq!(recovery.truncated_bytes, 7);
    assert_eq!(log.log_end_offset(), model[last].base_offset);
    assert_eq!(only_range(&log).first_offset, model[bad].base_offset);
    check_damaged_reads(&log, &model[..last].to_vec(), bad..bad + 1);
}

#[test]
fn truncating_at_the_damage_clears_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, BIG, 20);
    let (bad, pos) = layout(dir, &model, 0)[8];
    flip_bit(&seg(dir, 0), pos + 45, 2);
    let (mut log, _) = open(dir, config(BIG));
    let range = only_range(&log);
    // Not inside the damaged range: where its batches start is unknown.
    let err = log.truncate_to(range.end_offset).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err:?}");
    assert_eq!(log.log_end_offset(), next_offset(&model).unwrap());
    log.truncate_to(range.first_offset).unwrap();
    assert!(log.damage().is_empty());
    check_log(&log, &model[..bad].to_vec());
    drop(log);
    let (log, _) = open(dir, config(BIG));
    assert!(log.damage().is_empty());
    check_log(&log, &model[..bad].to_vec());
}

/// Damages a segment file.
type Damager = Box<dyn Fn(&Path)>;

#[test]
fn damage_in_an_earlier_segment_is_recorded_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine, 800, 40);
    let bases = segment_bases(&pristine);
    assert!(bases.len() >= 4, "{bases:?}");
    let sizes: Vec<u64> = bases
        .iter()
        .map(|&b| file_len(&seg(&pristine, b)))
        .collect();
    let batches = layout(&pristine, &model, bases[1]);
    let (first, _) = batches[0];
    let (last, last_pos) = *batches.last().unwrap();
    let end = next_offset(&model[..=last].to_vec()).unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&pristine, &dir);
        dir
    };
    // (how to damage segment 1, the batches damaged)
    let cases: [(&str, Damager, std::ops::Range<usize>); 3] = [
        (
            "last batch",
            Box::new(move |p: &Path| flip_bit(p, last_pos + 40, 3)),
            last..last + 1,
        ),
        (
            "first batch",
            Box::new(|p: &Path| flip_bit(p, HEADER_LEN + 35, 0)),
            first..first + 1,
        ),
        (
            "truncated",
            Box::new(move |p: &Path| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(last_pos + 5)
                    .unwrap()
            }),
            last..last + 1,
        ),
    ];
    for (what, damage, bad) in cases {
        let dir = fresh(what);
        damage(&seg(&dir, bases[1]));
        let before: Vec<u64> = bases.iter().map(|&b| file_len(&seg(&dir, b))).collect();
        let (mut log, recovery) = open(&dir, config(800));
        assert_eq!(recovery.truncated_bytes, 0, "{what}");
        let after: Vec<u64> = bases.iter().map(|&b| file_len(&seg(&dir, b))).collect();
        assert_eq!(before, after, "{what}: nothing cut");
        let range = only_range(&log);
        assert_eq!(range.path, seg(&dir, bases[1]), "{what}");
        assert_eq!(range.first_offset, model[bad.start].base_offset, "{what}");
        assert_eq!(range.end_offset, model[bad.end].base_offset, "{what}");
        assert_eq!(log.log_end_offset(), next_offset(&model).unwrap(), "{what}");
        check_damaged_reads(&log, &model, bad.clone());
        log.repair(range.first_offset, &model[bad]).unwrap();
        assert!(log.damage().is_empty(), "{what}");
        check_log(&log, &model);
        drop(log);
        let sizes_now: Vec<u64> = bases.iter().map(|&b| file_len(&seg(&dir, b))).collect();
        assert_eq!(sizes_now, sizes, "{what}: repaired in place");
        let (log, _) = open(&dir, config(800));
        assert!(log.damage().is_empty(), "{what}");
        check_log(&log, &model);
    }
    assert_eq!(
        model[last].base_offset + u64::from(model[last].record_count),
        end
    );
}

#[test]
fn a_read_of_a_batch_damaged_after_open_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, BIG, 10);
    let (log, _) = open(dir, config(BIG));
    let (bad, pos) = layout(dir, &model, 0)[6];
    // Damage while the log is open: the active segment, found by the read's CRC check.
    flip_bit(&seg(dir, 0), pos + 50, 4);
    let (path, first, _) = damaged_offsets(log.read(model[bad].base_offset, 1).unwrap_err());
    assert_eq!((path, first), (seg(dir, 0), model[bad].base_offset));
    let (_, first, _) = damaged_offsets(log.read(0, usize::MAX).unwrap_err());
    assert_eq!(first, model[bad].base_offset);
    assert_eq!(
        log.read(model[bad + 1].base_offset, usize::MAX).unwrap(),
        model[bad + 1..]
    );
}

#[test]
fn the_scrub_finds_damage_that_open_did_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 800, 40);
    let bases = segment_bases(dir);
    // A middle batch of an early segment: open trusts it (it has an index).
    let (bad, pos) = layout(dir, &model, bases[1])[2];
    flip_bit(&seg(dir, bases[1]), pos + 45, 6);
    let (mut log, _) = open(dir, config(800));
    assert!(log.damage().is_empty());
    let total: u64 = bases.iter().map(|&b| file_len(&seg(dir, b))).sum();
    let mut checked = 0;
    let mut steps = 0;
    loop {
        let progress = log.scrub_step(100).unwrap();
        checked += progress.bytes_checked;
        steps += 1;
        assert!(steps < 1000);
        if progress.pass_complete {
            break;
        }
    }
    assert!(steps > 10, "the budget bounds each step: {steps} steps");
    assert!(
        checked >= total - bases.len() as u64 * HEADER_LEN,
        "{checked} of {total}"
    );
    let range = only_range(&log);
    assert_eq!(range.path, seg(dir, bases[1]));
    assert_eq!(range.first_offset, model[bad].base_offset);
    assert_eq!(range.end_offset, model[bad + 1].base_offset);
    check_damaged_reads(&log, &model, bad..bad + 1);
    // A second pass finds nothing new.
    while !log.scrub_step(1 << 20).unwrap().pass_complete {}
    assert_eq!(log.damage().len(), 1);
    log.repair(range.first_offset, &model[bad..bad + 1])
        .unwrap();
    check_log(&log, &model);
    while !log.scrub_step(1 << 20).unwrap().pass_complete {}
    assert!(log.damage().is_empty());
}

/// Found by the `broker_log` fuzz target: an empty segment `1` (header only) before a
/// segment `3` with a torn tail (two stray bytes). Recovery records offsets 1..3 as a
/// damaged range with no bytes (it starts and ends at the end of segment 1) and cuts the
/// tail; the scrub then looped for ever on that range. It must finish its pass.
#[test]
fn a_damaged_range_without_bytes_does_not_hang_the_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let header = {
        let mut bytes = b"PEHRALOG".to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes
    };
    fs::write(dir.path().join(format!("{:020}.log", 1)), &header).unwrap();
    let mut torn = header.clone();
    torn.extend_from_slice(&[0x04, 0x08]);
    fs::write(dir.path().join(format!("{:020}.log", 3)), &torn).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_owned();
    std::thread::spawn(move || {
        let (mut log, recovery) = PartitionLog::open(&path, LogConfig::default()).unwrap();
        let mut passes = Vec::new();
        for _ in 0..3 {
            passes.push(log.scrub_step(1 << 20).map(|p| p.pass_complete));
        }
        let read = log.read(1, 1024).map(|b| b.len());
        let _ = tx.send((recovery, log.damage().to_vec(), passes, read));
    });
    let (recovery, damage, passes, read) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the scrub finishes (it looped for ever)");
    assert_eq!((recovery.log_start_offset, recovery.log_end_offset), (1, 3));
    assert_eq!(recovery.truncated_bytes, 2);
    let [range] = &damage[..] else {
        panic!("one damaged range: {damage:?}")
    };
    assert_eq!((range.first_offset, range.end_offset), (1, 3));
    assert_eq!(range.position, range.end_position);
    assert!(passes.iter().all(|p| matches!(p, Ok(true))), "{passes:?}");
    assert!(matches!(read, Err(LogError::Damaged { .. })), "{read:?}");
}

/// Found by the `broker_log` fuzz target: a damaged header in the middle of an earlier
/// segment (which open does not read whole) and a leader-epoch checkpoint that does not
/// match the log (here: gone). Recovery rebuilds the epochs by reading every header, met
/// the damaged one, and refused to open the log at all (`Corrupt`): a broker restart lost
/// the whole partition over one bad batch. It is recorded as damage now.
#[test]
fn a_damaged_header_met_while_rebuilding_the_epochs_is_damage_not_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = build(dir, 800, 40);
    let bases = segment_bases(dir);
    assert!(bases.len() >= 4, "{bases:?}");
    // A middle batch of an early segment: an impossible length in its header.
    let (bad, pos) = layout(dir, &model, bases[1])[2];
    let path = seg(dir, bases[1]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[pos as usize + 3] = 0xff;
    fs::write(&path, bytes).unwrap();
    fs::remove_file(dir.join("leader-epochs")).unwrap();
    let (log, _) = open(dir, config(800));
    let range = only_range(&log);
    assert_eq!(range.path, path);
    assert_eq!(range.first_offset, model[bad].base_offset);
    assert_eq!(log.log_end_offset(), next_offset(&model).unwrap());
    assert_eq!(log.last_epoch(), Some(1));
    // Everything before and after the damage reads.
    assert_eq!(log.read(0, usize::MAX).unwrap(), model[..bad]);
    let after = model
        .iter()
        .position(|b| b.base_offset >= range.end_offset)
        .unwrap();
    assert_eq!(
        log.read(range.end_offset, usize::MAX).unwrap()[0],
        model[after]
    );
}
