//! `POST /fetch` and `GET /p/{topic}/{partition}`: what consumers read and observe.
//! Consumers see only committed records: those below the high watermark.

use super::{lookup_leader, State};
use crate::log::LogError;
use pehra_shared::api::{cbor_response, decode_request, error_response};
use pehra_shared::coap::{Code, Response};
use pehra_shared::driver::Incoming;
use pehra_shared::wire::{ErrorKind, FetchRequest, FetchResponse, FetchedBatch};

/// The largest fetch answer, in batch bytes.
const MAX_FETCH_BYTES: usize = 4 * 1024 * 1024;

/// A consumer's fetch: committed batches from an offset.
pub(crate) fn fetch(state: &State, incoming: &Incoming) -> Response {
    let start = std::time::Instant::now();
    let response = answer_fetch(state, incoming);
    state.metrics.fetch_took(start);
    response
}

fn answer_fetch(state: &State, incoming: &Incoming) -> Response {
    let request: FetchRequest = match decode_request(&incoming.request) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let partition = match lookup_leader(state, &request.topic, request.partition) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let p = partition.lock();
    let (start, end, hw) = (
        p.replica.log().log_start_offset(),
        p.replica.log().log_end_offset(),
        p.replica.high_watermark(),
    );
    if request.offset > end {
        return error_response(
            ErrorKind::Malformed,
            &format!(
                "offset {} is past the log end {end} of {}/{}",
                request.offset, request.topic, request.partition
            ),
        );
    }
    // Below the log start (retention removed it): read from the start.
    let offset = request.offset.max(start);
    let batches = if offset >= hw {
        Ok(Vec::new())
    } else {
        let max_bytes = (request.max_bytes as usize).clamp(1, MAX_FETCH_BYTES);
        p.replica.log().read(offset, max_bytes)
    };
    match batches {
        Ok(batches) => {
            let (mut records, mut bytes) = (0u64, 0u64);
            let batches: Vec<FetchedBatch> = batches
                .into_iter()
                .take_while(|b| b.base_offset + u64::from(b.record_count) <= hw)
                .map(|b| {
                    records += u64::from(b.record_count);
                    bytes += b.bytes.len() as u64;
                    FetchedBatch {
                        base_offset: b.base_offset,
                        batch: b.bytes,
                    }
                })
                .collect();
            state.metrics.fetched(&request.topic, records, bytes);
            cbor_response(
                Code::CONTENT,
                &FetchResponse {
                    high_watermark: hw,
                    log_end_offset: end,
                    batches,
                },
            )
        }
        Err(e) => error_response(log_error_kind(&e), &e.to_string()),
    }
}

fn log_error_kind(error: &LogError) -> ErrorKind {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorKind::Malformed,
        _ => ErrorKind::Internal,
    }
}

/// A partition's state as consumers observe it: a notification whenever the high
/// watermark moves.
pub(crate) fn partition_state(state: &State, incoming: &Incoming) -> Response {
    let topic = incoming.params.get("topic").unwrap_or("");
    let Ok(partition) = incoming
        .params
        .get("partition")
        .unwrap_or("")
        .parse::<u32>()
    else {
        return error_response(ErrorKind::Malformed, "the partition must be a number");
    };
    match lookup_leader(state, topic, partition) {
        Ok(p) => {
            let p = p.lock();
            cbor_response(
                Code::CONTENT,
                &tick(p.replica.high_watermark(), p.replica.log().log_end_offset()),
            )
        }
        Err(response) => response,
    }
}

/// An observation notification: where the partition's committed records end.
pub(crate) fn tick(high_watermark: u64, log_end_offset: u64) -> FetchResponse {
    FetchResponse {
        high_watermark,
        log_end_offset,
        batches: Vec::new(),
    }
}
