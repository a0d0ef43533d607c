//! Opening a data directory in three steps (the rules are in the
//! [module documentation](super#recovery)): [`survey`] reads what the directory holds and
//! changes nothing; [`plan`] decides, without any I/O, what recovery keeps, replays and
//! changes, or refuses; the caller applies the [`Plan`] only then, so a refusal leaves
//! the directory as it was.

use super::snapshot::{self, SNAPSHOTS};
use super::wal::{self, LOG_HEADER_LEN, SEGMENTS};
use super::{RecoveryOptions, StorageError, ZXID_FLOOR};
use pehra_storage::Plan;
use std::path::{Path, PathBuf};

/// What a data directory holds, as read.
#[derive(Debug, Default)]
pub(super) struct Survey {
    /// The newest snapshot that verifies: (the zxid it covers up to, its bytes).
    pub(super) snapshot: Option<(u64, Vec<u8>)>,
    /// The snapshots newer than it that failed to verify, newest first.
    pub(super) damaged_snapshots: Vec<(u64, PathBuf)>,
    /// The log segments, by first zxid.
    pub(super) segments: Vec<SegmentSurvey>,
    /// Temporary files of an interrupted creation.
    pub(super) leftovers: Vec<PathBuf>,
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub(super) struct SegmentSurvey {
    /// The zxid its name says its first record has.
    pub(super) first_zxid: u64,
    /// The file.
    pub(super) path: PathBuf,
    /// Its length.
    pub(super) file_len: u64,
    /// Its stretches of good records in file order: the first read from the header on,
    /// each next one from where a good record was found again after damage.
    pub(super) runs: Vec<Run>,
}

/// Good records read in one go, and how the reading stopped.
#[derive(Debug, Default)]
pub(super) struct Run {
    /// The zxid the first record read should have.
    pub(super) expected: u64,
    /// The records in order. A record the snapshot covers has an empty payload (it is
    /// never replayed).
    pub(super) records: Vec<Record>,
    /// The length of the file up to the end of the last good record.
    pub(super) valid_len: u64,
    /// The zxid after the last good record (`expected` if there is none).
    pub(super) next_zxid: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub(super) cut: Option<String>,
}

/// One good record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    /// Its zxid.
    pub(super) zxid: u64,
    /// Its payload (empty if the snapshot covers it).
    pub(super) payload: Vec<u8>,
    /// Its length on disk, header included.
    pub(super) encoded_len: u64,
}

/// Reads `dir` (which exists): the newest snapshot that verifies (and the damaged ones
/// newer than it), then every segment whole, reading on past any damage.
pub(super) fn survey(dir: &Path) -> Result<Survey, StorageError> {
    let listing = pehra_storage::list(dir, &[SEGMENTS, SNAPSHOTS], &[ZXID_FLOOR])?;
    let mut survey = Survey {
        leftovers: listing.leftovers.clone(),
        ..Survey::default()
    };
    for (zxid, path) in listing.numbered(SNAPSHOTS).into_iter().rev() {
        match snapshot::read(&path, zxid)? {
            snapshot::Read::Valid(bytes) => {
                survey.snapshot = Some((zxid, bytes));
                break;
            }
            snapshot::Read::Corrupt(why) => {
                tracing::warn!(path = %path.display(), "skipping a damaged snapshot: {why}");
                survey.damaged_snapshots.push((zxid, path));
            }
        }
    }
    let snap = survey.snapshot.as_ref().map_or(0, |(zxid, _)| *zxid);
    for (first_zxid, path) in listing.numbered(SEGMENTS) {
        survey
            .segments
            .push(survey_segment(first_zxid, path, snap)?);
    }
    Ok(survey)
}

/// Reads one segment whole; payloads of records up to `snap` are not kept.
fn survey_segment(
    first_zxid: u64,
    path: PathBuf,
    snap: u64,
) -> Result<SegmentSurvey, StorageError> {
    let mut segment = SegmentSurvey {
        first_zxid,
        ..SegmentSurvey::default()
    };
    let (mut start, mut expected) = (LOG_HEADER_LEN, first_zxid);
    loop {
        let mut records = Vec::new();
        let end = wal::scan(&path, start, expected, |zxid, payload, encoded_len| {
            let payload = if zxid > snap { payload } else { Vec::new() };
            records.push(Record {
                zxid,
                payload,
                encoded_len,
            });
            Ok(())
        })?;
        segment.file_len = end.file_len;
        segment.runs.push(Run {
            expected,
            records,
            valid_len: end.valid_len,
            next_zxid: end.next_zxid,
            cut: end.cut,
        });
        match end.resync {
            Some((position, zxid)) => (start, expected) = (position, zxid),
            None => break,
        }
    }
    segment.path = path;
    Ok(segment)
}

/// What recovery decided.
#[derive(Debug)]
pub(super) struct Opened {
    /// The changes to make to the directory before serving.
    pub(super) plan: Plan,
    /// The snapshot to start from.
    pub(super) snapshot: Option<(u64, Vec<u8>)>,
    /// The records to replay after it.
    pub(super) records: Vec<(u64, Vec<u8>)>,
    /// Their encoded bytes.
    pub(super) bytes_since_snapshot: u64,
    /// Bytes the plan cuts from the log.
    pub(super) truncated_bytes: u64,
    /// The segment the next record is appended to, and its good length, if the log goes
    /// on in it (else the next record starts a new segment).
    pub(super) append_to: Option<(PathBuf, u64)>,
    /// The zxid of the last record (or of the snapshot).
    pub(super) last_zxid: u64,
}

/// Decides recovery from what [`survey`] read: no I/O.
pub(super) fn plan(survey: Survey, options: &RecoveryOptions) -> Result<Opened, StorageError> {
    let Survey {
        snapshot: base,
        damaged_snapshots,
        mut segments,
        leftovers,
    } = survey;
    let snap = base.as_ref().map_or(0, |(zxid, _)| *zxid);
    let mut records = Vec::new();
    let mut prev: Option<u64> = None;
    let mut bytes_since_snapshot = 0;
    let mut truncated_bytes = 0;
    // The last segment holding records: (its index, its good length, its last zxid).
    let mut tail: Option<(usize, u64, u64)> = None;
    let mut empty: Vec<usize> = Vec::new();
    // The torn tail to cut: (segment index, its good length).
    let mut truncate: Option<(usize, u64)> = None;
    // Later segments with records, cut by `options.recover_truncate_wal`.
    let mut doomed: Vec<usize> = Vec::new();
    // Set when records are cut on request: the zxid they reached.
    let mut raise_floor: Option<u64> = None;

    'segments: for i in 0..segments.len() {
        let name_zxid = segments[i].first_zxid;
        let mut first_in_segment = true;
        let mut segment_last = 0;
        let mut segment_records = 0;
        let mut r = 0;
        let end = loop {
            let run_records = std::mem::take(&mut segments[i].runs[r].records);
            let path = &segments[i].path;
            segment_records += run_records.len();
            for Record {
                zxid,
                payload,
                encoded_len,
            } in run_records
            {
                check_order(path, name_zxid, first_in_segment, prev, zxid, snap)?;
                first_in_segment = false;
                prev = Some(zxid);
                segment_last = zxid;
                if zxid > snap {
                    records.push((zxid, payload));
                    bytes_since_snapshot += encoded_len;
                }
            }
            let runs = &segments[i].runs;
            match (&runs[r].cut, runs.get(r + 1)) {
                // Damage whose records are all in the snapshot: nothing needed is lost.
                // Read on after it.
                (Some(why), Some(next)) if next.expected <= snap.saturating_add(1) => {
                    tracing::warn!(
                        path = %path.display(),
                        "damaged log records ignored, the snapshot at zxid {snap} covers \
                         them: {why}"
                    );
                    first_in_segment = false;
                    r += 1;
                }
                _ => break r,
            }
        };
        let segment = &segments[i];
        let run = &segment.runs[end];
        // The first good record after the damage in this segment: its zxid.
        let resync = segment.runs.get(end + 1).map(|next| next.expected);
        let Some(why) = run.cut.clone() else {
            if segment_records == 0 {
                empty.push(i);
            } else {
                tail = Some((i, run.valid_len, segment_last));
            }
            continue;
        };
        let later = i + 1..segments.len();
        // The first valid record after the damage: (its segment, its zxid).
        let next_good = resync.map(|zxid| (i, zxid)).or_else(|| {
            later
                .clone()
                .find(|&j| segments[j].file_len > LOG_HEADER_LEN)
                .map(|j| (j, segments[j].first_zxid))
        });
        if let Some((next_i, next_first)) = next_good {
            if resync.is_none() && next_first <= snap.saturating_add(1) {
                // Everything this segment holds is in the snapshot: only fallback data is
                // lost. Leave the file for retention to delete.
                tracing::warn!(
                    path = %segment.path.display(),
                    "damaged log segment ignored, the snapshot at zxid {snap} covers it: {why}"
                );
                continue;
            }
            // Corruption in the middle of the log.
            let last_good_zxid = run.next_zxid.saturating_sub(1);
            let (mut last_zxid_after, mut last_i) = (next_first, next_i);
            if resync.is_some() {
                last_zxid_after = last_zxid_after.max(last_zxid_of(&segment.runs[end + 1..]));
            }
            for j in later.clone() {
                let last = last_zxid_of(&segments[j].runs);
                if last > last_zxid_after {
                    (last_zxid_after, last_i) = (last, j);
                }
            }
            let corrupt = StorageError::CorruptWal {
                path: segment.path.clone(),
                position: run.valid_len,
                detail: why,
                last_good_zxid,
                last_zxid_after,
                last_path: segments[last_i].path.clone(),
            };
            match options.recover_truncate_wal {
                Some(n) if n == last_good_zxid => {
                    let later_bytes: u64 = later.clone().map(|j| segments[j].file_len).sum();
                    truncated_bytes = segment.file_len - run.valid_len + later_bytes;
                    tracing::error!(
                        "--recover-truncate-wal {n}: cutting the write-ahead log after zxid \
                         {n}, deleting the {} records after it and {truncated_bytes} bytes, \
                         as asked: {corrupt}",
                        last_zxid_after - n
                    );
                    truncate = Some((i, run.valid_len));
                    if segment_records == 0 {
                        empty.push(i);
                    } else {
                        tail = Some((i, run.valid_len, segment_last));
                    }
                    doomed.extend(later);
                    raise_floor = Some(last_zxid_after);
                    break 'segments;
                }
                Some(n) => {
                    tracing::error!(
                        "--recover-truncate-wal {n} does not name the last good zxid before \
                         the damage ({last_good_zxid}); nothing was cut"
                    );
                    return Err(corrupt);
                }
                None => return Err(corrupt),
            }
        }
        // A torn tail: cut it.
        truncated_bytes = segment.file_len - run.valid_len;
        tracing::warn!(
            path = %segment.path.display(),
            "cutting {truncated_bytes} bytes from the log tail: {why} (a write torn by a \
             crash: no valid record follows it)"
        );
        truncate = Some((i, run.valid_len));
        if segment_records == 0 {
            empty.push(i);
        } else {
            tail = Some((i, run.valid_len, segment_last));
        }
        // Later segments hold no records (checked above).
        empty.extend(later);
        break;
    }

    // A damaged newer snapshot must be covered by the log.
    let last_zxid = prev.unwrap_or(0).max(snap);
    if let Some((zxid, path)) = damaged_snapshots.iter().find(|(zxid, _)| *zxid > last_zxid) {
        return Err(StorageError::Corrupt {
            path: path.clone(),
            detail: format!(
                "this snapshot is damaged and the log only reaches zxid {last_zxid}: the \
                 changes up to zxid {zxid} cannot be recovered"
            ),
        });
    }

    let path = |i: usize| segments[i].path.clone();
    let mut plan = Plan::new();
    plan.remove_all(leftovers);
    // Zxids never go back: before records are cut, the highest zxid they reached is made
    // durable, so the next zxid handed out is above it even after a crash.
    if let Some(floor) = raise_floor {
        plan.replace(ZXID_FLOOR, format!("{floor}\n").into_bytes());
    }
    // Segments cut on request go first, newest first: a crash in between leaves a log
    // that ends earlier, never one with a hole.
    plan.remove_all(doomed.iter().rev().map(|&i| path(i)));
    if let Some((i, len)) = truncate {
        plan.truncate(path(i), len);
    }
    plan.remove_all(empty.iter().map(|&i| path(i)));
    // Keep appending to the last segment unless it ends at or before the snapshot (then
    // the next record starts a new one, as after a snapshot).
    let append_to = match tail {
        Some((i, len, last)) if last > snap => Some((path(i), len)),
        _ => None,
    };
    Ok(Opened {
        plan,
        snapshot: base,
        records,
        bytes_since_snapshot,
        truncated_bytes,
        append_to,
        last_zxid,
    })
}

/// Refuses a record whose zxid does not follow on (rule 2): `zxid` read in the segment
/// `path` named `name_zxid`, after the record `prev`, with the snapshot at `snap`.
fn check_order(
    path: &Path,
    name_zxid: u64,
    first_in_segment: bool,
    prev: Option<u64>,
    zxid: u64,
    snap: u64,
) -> Result<(), StorageError> {
    let corrupt = |detail: String| {
        Err(StorageError::Corrupt {
            path: path.to_owned(),
            detail,
        })
    };
    if first_in_segment && zxid != name_zxid {
        return corrupt(format!(
            "its first record has zxid {zxid}, but its name says {name_zxid}"
        ));
    }
    match prev {
        Some(p) if zxid <= p => {
            corrupt(format!("zxid {zxid} follows zxid {p}: zxids must increase"))
        }
        Some(p) if zxid != p + 1 && zxid > snap + 1 => corrupt(format!(
            "zxid {zxid} follows zxid {p}: records {} to {} are missing",
            p.max(snap) + 1,
            zxid - 1
        )),
        None if zxid > snap + 1 => corrupt(format!(
            "the log starts at zxid {zxid} but the snapshot covers only up to {snap}: \
             records {} to {} are missing",
            snap + 1,
            zxid - 1
        )),
        _ => Ok(()),
    }
}

/// The largest zxid of the good records of `runs` (the one before the first run's
/// expected zxid if they hold none).
fn last_zxid_of(runs: &[Run]) -> u64 {
    let before = runs.first().map_or(0, |run| run.expected.saturating_sub(1));
    runs.iter()
        .flat_map(|run| &run.records)
        .map(|record| record.zxid)
        .fold(before, u64::max)
}

#[cfg(test)]
mod tests {
    //! The decisions alone, on surveys made by hand: no file exists behind these paths, so
    //! a planner that touched the disk would fail them. (`storage::tests` opens real
    //! directories through all three steps.)

    use super::*;
    use pehra_storage::Change;

    fn records(zxids: std::ops::Range<u64>) -> Vec<Record> {
        zxids
            .map(|zxid| Record {
                zxid,
                payload: vec![zxid as u8],
                encoded_len: 17,
            })
            .collect()
    }

    /// A segment holding one run of `count` records from zxid `first`, then `cut` (if
    /// any) and the `resumed` runs after it.
    fn segment(
        first: u64,
        count: u64,
        file_len: u64,
        cut: Option<&str>,
        resumed: Vec<Run>,
    ) -> SegmentSurvey {
        let mut runs = vec![Run {
            expected: first,
            records: records(first..first + count),
            valid_len: LOG_HEADER_LEN + 17 * count,
            next_zxid: first + count,
            cut: cut.map(str::to_owned),
        }];
        runs.extend(resumed);
        SegmentSurvey {
            first_zxid: first,
            path: PathBuf::from(format!("/nowhere/log.{first}")),
            file_len,
            runs,
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_empty_segments_after_it_removed() {
        let survey = Survey {
            segments: vec![
                segment(1, 3, LOG_HEADER_LEN + 51 + 9, Some("torn"), vec![]),
                segment(4, 0, LOG_HEADER_LEN, None, vec![]),
            ],
            leftovers: vec![PathBuf::from("/nowhere/log.7.tmp")],
            ..Survey::default()
        };
        let opened = plan(survey, &RecoveryOptions::default()).unwrap();
        assert_eq!(
            opened.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!((opened.last_zxid, opened.truncated_bytes), (3, 9));
        let first = PathBuf::from("/nowhere/log.1");
        assert_eq!(opened.append_to, Some((first.clone(), LOG_HEADER_LEN + 51)));
        assert_eq!(
            opened.plan.changes(),
            [
                Change::Remove("/nowhere/log.7.tmp".into()),
                Change::SyncDir,
                Change::Truncate {
                    path: first,
                    len: LOG_HEADER_LEN + 51
                },
                Change::Remove("/nowhere/log.4".into()),
                Change::SyncDir,
            ]
        );
    }

    #[test]
    fn damage_with_records_after_it_is_refused_unless_the_operator_names_the_cut() {
        let survey = || Survey {
            segments: vec![
                segment(1, 3, 200, Some("fails its CRC check"), vec![]),
                segment(5, 2, 80, None, vec![]),
                segment(7, 3, 90, None, vec![]),
            ],
            ..Survey::default()
        };
        let refused = plan(survey(), &RecoveryOptions::default()).unwrap_err();
        let StorageError::CorruptWal {
            last_good_zxid,
            last_zxid_after,
            last_path,
            ..
        } = refused
        else {
            panic!("not CorruptWal: {refused}");
        };
        assert_eq!((last_good_zxid, last_zxid_after), (3, 9));
        assert_eq!(last_path, PathBuf::from("/nowhere/log.7"));
        let wrong = RecoveryOptions {
            recover_truncate_wal: Some(2),
        };
        assert!(matches!(
            plan(survey(), &wrong),
            Err(StorageError::CorruptWal { .. })
        ));

        let cut = RecoveryOptions {
            recover_truncate_wal: Some(3),
        };
        let opened = plan(survey(), &cut).unwrap();
        assert_eq!(opened.last_zxid, 3);
        assert_eq!(
            opened.truncated_bytes,
            200 - (LOG_HEADER_LEN + 51) + 80 + 90
        );
        // The floor first, then the later segments newest first, then the cut.
        assert_eq!(
            opened.plan.changes(),
            [
                Change::Replace {
                    name: ZXID_FLOOR.into(),
                    contents: b"9\n".to_vec()
                },
                Change::Remove("/nowhere/log.7".into()),
                Change::Remove("/nowhere/log.5".into()),
                Change::SyncDir,
                Change::Truncate {
                    path: "/nowhere/log.1".into(),
                    len: LOG_HEADER_LEN + 51
                },
            ]
        );
    }

    #[test]
    fn damage_the_snapshot_covers_is_read_past() {
        let resumed = Run {
            expected: 4,
            records: records(4..7),
            valid_len: 150,
            next_zxid: 7,
            cut: None,
        };
        let survey = Survey {
            snapshot: Some((3, b"state".to_vec())),
            segments: vec![segment(1, 2, 150, Some("torn"), vec![resumed])],
            ..Survey::default()
        };
        let opened = plan(survey, &RecoveryOptions::default()).unwrap();
        assert_eq!(
            opened.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(opened.bytes_since_snapshot, 3 * 17);
        assert!(opened.plan.is_empty(), "{:?}", opened.plan);
        assert_eq!(opened.append_to, Some(("/nowhere/log.1".into(), 150)));
    }
}
