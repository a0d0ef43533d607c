//! The broker's partition log on hostile files, and the produce path's batch checks.
//!
//! Each run builds a partition directory (in /dev/shm when it exists): either a valid log
//! of a few small segments made by `PartitionLog` itself, then edited by the fuzzer (a
//! segment, an index, the leader-epoch checkpoint or a reset marker: bytes flipped,
//! inserted, cut), or files written from fuzzer bytes. Then `PartitionLog::open`
//! recovers it. And a produce request body goes through what `POST /produce` does before
//! the append: `wire::decode::<ProduceRequest>`, `batch_record_count`, `append_batch`.
//!
//! Invariants: nothing panics; open either succeeds or returns a `LogError`; an opened log
//! reads (batches in order, offsets inside the log) or returns a typed error, scrubs,
//! takes an append at its end, and a reopened log ends where the first one did; a batch
//! read back is the bytes appended.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pehra_broker::log::{BatchMeta, FlushPolicy, LogConfig, PartitionLog, ProducerBatch};
use pehra_fuzz::edit;
use pehra_shared::wire::{self, ProduceRequest, Record, RecordBatch};
use std::fs;
use std::path::{Path, PathBuf};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        retention_ms: None,
        retention_bytes: None,
        flush: FlushPolicy::Never,
    }
}

fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("pehra-fuzz-broker-log-{}", std::process::id()))
}

fn batch(n: usize, fill: u8) -> Vec<u8> {
    let records = (0..n)
        .map(|i| Record {
            key: None,
            value: vec![fill; 8 + i],
            timestamp_ms: 1_000 + i as u64,
            headers: Vec::new(),
        })
        .collect();
    wire::encode(&RecordBatch { records }).expect("encodes")
}

/// A valid log: a few batches in several segments, a few epochs and producers.
fn build(dir: &Path, u: &mut Unstructured<'_>) -> Result<()> {
    let (mut log, _) = PartitionLog::open(dir, config()).expect("a new log opens");
    let mut epoch = 0;
    for i in 0..u.int_in_range(0..=8u8)? {
        epoch += u.int_in_range(0..=1u32)?;
        let n = u.int_in_range(1..=3usize)?;
        let producer = if u.arbitrary()? {
            Some(ProducerBatch {
                producer_id: 5,
                base_sequence: u32::from(i) * 3,
            })
        } else {
            None
        };
        let meta = BatchMeta {
            record_count: n as u32,
            max_timestamp_ms: 1_000 + u64::from(i),
            leader_epoch: epoch,
            producer,
            base_offset: None,
        };
        log.append_batch(&batch(n, i), &meta)
            .expect("append to a new log");
    }
    log.flush().expect("flush");
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn prepare(dir: &Path, u: &mut Unstructured<'_>) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).expect("scratch dir");
    if u.ratio(3, 4)? {
        build(dir, u)?;
        let all = files(dir);
        for _ in 0..u.int_in_range(1..=2u8)? {
            if all.is_empty() {
                break;
            }
            let f = u.choose(&all)?;
            let mut bytes = fs::read(f).unwrap_or_default();
            edit(u, &mut bytes)?;
            fs::write(f, &bytes).expect("write");
        }
        if u.ratio(1, 8)? {
            if let Some(f) = all.last() {
                let _ = fs::remove_file(u.choose(&all).unwrap_or(f));
            }
        }
    } else {
        for _ in 0..u.int_in_range(1..=3u8)? {
            let name = match u.int_in_range(0..=5u8)? {
                0 | 1 => format!("{:020}.log", u.int_in_range(0..=3u64)?),
                2 => format!("{:020}.index", u.int_in_range(0..=3u64)?),
                3 => "leader-epochs".to_string(),
                4 => "reset-to".to_string(),
                _ => format!("{:020}.log.tmp", 0),
            };
            let mut bytes = Vec::new();
            if u.arbitrary()? {
                let magic: &[u8] = if name.ends_with(".log") {
                    b"PEHRALOG\x02\x00\x00\x00"
                } else if name == "leader-epochs" {
                    b"PEHRAEPO\x01\x00\x00\x00"
                } else if name == "reset-to" {
                    b"PEHRARST\x01\x00\x00\x00"
                } else {
                    b""
                };
                bytes.extend_from_slice(magic);
            }
            let len = u.int_in_range(0..=200usize)?;
            bytes.extend_from_slice(u.bytes(len.min(u.len()))?);
            fs::write(dir.join(name), &bytes).expect("write");
        }
    }
    Ok(())
}

/// Reads the whole log: in order, inside the log, or a typed error.
fn read_all(log: &PartitionLog) {
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert!(start <= end);
    let mut offset = start;
    let mut steps = 0;
    while offset < end && steps < 64 {
        steps += 1;
        match log.read(offset, 1024) {
            Ok(batches) => {
                let Some(last) = batches.last() else { break };
                for b in &batches {
                    assert!(b.base_offset <= end, "batch past the log end");
                }
                let next = last.base_offset + u64::from(last.record_count);
                if next <= offset {
                    break;
                }
                offset = next;
            }
            Err(_) => offset += 1,
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let dir = scratch_dir().join("p");
    prepare(&dir, u)?;
    // To look at what an input made: PEHRA_FUZZ_KEEP=DIR keeps a copy of the files.
    if let Some(keep) = std::env::var_os("PEHRA_FUZZ_KEEP") {
        let keep = PathBuf::from(keep);
        let _ = fs::create_dir_all(&keep);
        for f in files(&dir) {
            let _ = fs::copy(&f, keep.join(f.file_name().expect("a file name")));
        }
    }
    let Ok((mut log, recovery)) = PartitionLog::open(&dir, config()) else {
        return Ok(());
    };
    assert_eq!(recovery.log_end_offset, log.log_end_offset());
    assert_eq!(recovery.log_start_offset, log.log_start_offset());
    read_all(&log);
    let _ = log.damage();
    let _ = log.epoch_start_offsets();
    let _ = log.last_epoch().map(|e| log.end_offset_for_epoch(e));
    let _ = log.last_producer_batch(5);
    for _ in 0..4 {
        match log.scrub_step(512) {
            Ok(p) if p.pass_complete => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // The produce path: the body decoded and counted as the handler does, then appended.
    let body = if u.arbitrary()? {
        let len = u.int_in_range(0..=120usize)?;
        u.bytes(len.min(u.len()))?.to_vec()
    } else {
        let request = ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: wire::Acks::Leader,
            producer_id: None,
            base_sequence: None,
            gapless: false,
            leader_epoch: None,
            if_log_end: None,
            batch: batch(u.int_in_range(1..=3usize)?, 9),
        };
        wire::encode(&request).expect("encodes")
    };
    let Ok(request) = wire::decode::<ProduceRequest>(&body) else {
        return Ok(());
    };
    let Ok(count) = wire::batch_record_count(&request.batch) else {
        return Ok(());
    };
    if count == 0 {
        return Ok(());
    }
    let meta = BatchMeta {
        record_count: count,
        max_timestamp_ms: 5_000,
        leader_epoch: log.last_epoch().unwrap_or(0),
        producer: None,
        base_offset: None,
    };
    let end_before = log.log_end_offset();
    if let Ok(info) = log.append_batch(&request.batch, &meta) {
        assert_eq!(info.base_offset, end_before);
        assert_eq!(info.log_end_offset, end_before + u64::from(count));
        if log.flush().is_err() {
            return Ok(());
        }
        if let Ok(read) = log.read(info.base_offset, 1 << 20) {
            let first = read.first().expect("the appended batch reads back");
            assert_eq!(first.base_offset, info.base_offset);
            assert_eq!(first.bytes, request.batch);
        }
        let end = log.log_end_offset();
        drop(log);
        let (again, _) = PartitionLog::open(&dir, config()).expect("a log we just wrote reopens");
        assert_eq!(
            again.log_end_offset(),
            end,
            "the reopened log ends elsewhere"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
