//! Raft snapshots of the zookeeper's tree, for a member whose log is behind the cut.
//!
//! The Raft log is cut below what every member has (see [`super::member`]), so only a
//! member that lost its data directory (or a new one) ever needs entries that are gone.
//! Raft then sends it a snapshot: the leader's tree at a committed index. A tree can be
//! far larger than one CoAP request should be, so the `MsgSnapshot` carries only a
//! [`SnapshotRef`] (index, length, CRC-32) and the follower pulls the tree from the
//! leader in [`CHUNK`]-sized pieces (`POST /raft/snapshot`, a [`ChunkRequest`];
//! members only, like `/raft`), then steps the message with the whole tree in it.
//!
//! - [`Offered`]: the leader's side, the encoded tree it offers, shared with the route
//!   that serves its pieces; forgotten after [`OFFER_IDLE`] without use.
//! - [`Assembly`]: the follower's side, sans-IO: which piece to ask for next, the pieces
//!   in, the checked tree out.
//! - [`fetch`]: the thin async loop that runs an [`Assembly`] over CoAP.

use parking_lot::Mutex;
use pehra_shared::coap::{Code, Request, Response};
use pehra_shared::driver::Handle;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The URI path pieces of an offered snapshot are asked for on.
pub const SNAPSHOT_PATH: &str = "raft/snapshot";

/// The most bytes one [`ChunkRequest`] is answered with (block-wise, RFC 7959).
pub const CHUNK: u64 = 256 << 10;

/// A leader forgets the snapshot it offers once it has not been used for this long
/// (it holds a whole encoded tree in memory).
pub const OFFER_IDLE: Duration = Duration::from_secs(60);

/// What a `MsgSnapshot`'s data holds: which snapshot to pull, and how to check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRef {
    /// The Raft index the tree is at (every committed entry up to it applied).
    pub index: u64,
    /// The encoded tree's length in bytes.
    pub len: u64,
    /// Its CRC-32 (IEEE).
    pub crc: u32,
    /// Every member's address, by id, at the leader (the snapshot's voters are in its
    /// Raft metadata; a member that joined later than another may not know where it is).
    #[serde(default)]
    pub addrs: std::collections::BTreeMap<u64, String>,
}

/// A request for a piece of the snapshot a leader offers (`POST /raft/snapshot`, CBOR).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkRequest {
    /// The snapshot's Raft index (the leader answers 4.04 if it offers another).
    pub index: u64,
    /// The first byte wanted.
    pub offset: u64,
}

/// Why a snapshot could not be pulled or does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The leader answered a piece with an error (it offers another snapshot now, say).
    #[error("the leader refused piece {offset} of snapshot {index}: {why}")]
    Refused {
        /// The snapshot's index.
        index: u64,
        /// The piece's offset.
        offset: u64,
        /// The leader's answer.
        why: String,
    },
    /// No answer.
    #[error("no answer from the leader for piece {offset} of snapshot {index}: {why}")]
    Unanswered {
        /// The snapshot's index.
        index: u64,
        /// The piece's offset.
        offset: u64,
        /// The transport's error.
        why: String,
    },
    /// A piece was empty or ran past the announced length.
    #[error("piece {offset} of snapshot {index} has {got} bytes; {left} were left")]
    BadPiece {
        /// The snapshot's index.
        index: u64,
        /// The piece's offset.
        offset: u64,
        /// Its length.
        got: u64,
        /// What was left to receive.
        left: u64,
    },
    /// The whole does not match its CRC.
    #[error("snapshot {index} does not match its checksum")]
    Checksum {
        /// The snapshot's index.
        index: u64,
    },
    /// The `MsgSnapshot` data is not a [`SnapshotRef`].
    #[error("the snapshot message does not name a snapshot")]
    NotARef,
}

/// The snapshot a leader offers: the encoded tree at a Raft index, shared between the
/// Raft driver (which sets it) and the route serving its pieces.
#[derive(Debug, Clone, Default)]
pub struct Offered(Arc<Mutex<Option<Offer>>>);

#[derive(Debug)]
struct Offer {
    index: u64,
    bytes: Arc<Vec<u8>>,
    last_used: Instant,
}

impl Offered {
    /// Offers `bytes`, the tree at Raft index `index` (replacing any earlier offer), and
    /// returns the reference a `MsgSnapshot` carries.
    pub fn set(
        &self,
        index: u64,
        bytes: Vec<u8>,
        addrs: std::collections::BTreeMap<u64, String>,
        now: Instant,
    ) -> SnapshotRef {
        let reference = SnapshotRef {
            index,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
            addrs,
        };
        *self.0.lock() = Some(Offer {
            index,
            bytes: Arc::new(bytes),
            last_used: now,
        });
        reference
    }

    /// The index of the snapshot offered, if any.
    pub fn index(&self) -> Option<u64> {
        self.0.lock().as_ref().map(|o| o.index)
    }

    /// The answer to a [`ChunkRequest`]: up to [`CHUNK`] bytes from its offset (2.05),
    /// or 4.04 if that snapshot is not offered (any more), 4.00 past its end.
    pub fn answer(&self, asked: ChunkRequest, now: Instant) -> Response {
        let mut offer = self.0.lock();
        let Some(offer) = offer.as_mut().filter(|o| o.index == asked.index) else {
            return Response::new(Code::NOT_FOUND)
                .with_payload(b"that snapshot is not offered (any more)".to_vec());
        };
        offer.last_used = now;
        let len = offer.bytes.len() as u64;
        if asked.offset >= len {
            return Response::new(Code::BAD_REQUEST)
                .with_payload(b"offset past the snapshot's end".to_vec());
        }
        let end = (asked.offset + CHUNK).min(len);
        Response::new(Code::CONTENT)
            .with_payload(offer.bytes[asked.offset as usize..end as usize].to_vec())
    }

    /// Forgets the offer if it was not used for [`OFFER_IDLE`]; whether it did.
    pub fn forget_if_idle(&self, now: Instant) -> bool {
        let mut offer = self.0.lock();
        if offer
            .as_ref()
            .is_some_and(|o| now.saturating_duration_since(o.last_used) >= OFFER_IDLE)
        {
            *offer = None;
            return true;
        }
        false
    }

    /// Marks the offer used (Raft sent a reference to it again).
    pub fn touch(&self, now: Instant) {
        if let Some(offer) = self.0.lock().as_mut() {
            offer.last_used = now;
        }
    }
}

/// A snapshot being pulled, sans-IO: ask for [`Assembly::next_request`], feed each
/// answer to [`Assembly::take`], and [`Assembly::finish`] once no request is left.
#[derive(Debug)]
pub struct Assembly {
    reference: SnapshotRef,
    bytes: Vec<u8>,
}

impl Assembly {
    /// Starts pulling the snapshot `reference` names (a `MsgSnapshot`'s data).
    pub fn new(data: &[u8]) -> Result<Assembly, SnapshotError> {
        let reference: SnapshotRef =
            pehra_shared::wire::decode(data).map_err(|_| SnapshotError::NotARef)?;
        Ok(Assembly {
            reference,
            // Grown as pieces arrive: a forged length reserves nothing.
            bytes: Vec::new(),
        })
    }

    /// The snapshot's reference.
    pub fn reference(&self) -> &SnapshotRef {
        &self.reference
    }

    /// The next piece to ask for, or `None` once every byte is in.
    pub fn next_request(&self) -> Option<ChunkRequest> {
        let offset = self.bytes.len() as u64;
        (offset < self.reference.len).then_some(ChunkRequest {
            index: self.reference.index,
            offset,
        })
    }

    /// The answer to the last request.
    pub fn take(&mut self, piece: &[u8]) -> Result<(), SnapshotError> {
        let offset = self.bytes.len() as u64;
        let left = self.reference.len - offset;
        let got = piece.len() as u64;
        if got == 0 || got > left {
            return Err(SnapshotError::BadPiece {
                index: self.reference.index,
                offset,
                got,
                left,
            });
        }
        self.bytes.extend_from_slice(piece);
        Ok(())
    }

    /// The whole tree, checked against its length and CRC, and the members' addresses.
    pub fn finish(
        self,
    ) -> Result<(Vec<u8>, std::collections::BTreeMap<u64, String>), SnapshotError> {
        if self.bytes.len() as u64 != self.reference.len
            || crc32fast::hash(&self.bytes) != self.reference.crc
        {
            return Err(SnapshotError::Checksum {
                index: self.reference.index,
            });
        }
        Ok((self.bytes, self.reference.addrs))
    }
}

/// Pulls the snapshot a `MsgSnapshot`'s `data` names from `leader`, piece by piece:
/// the tree, and the members' addresses the reference carried.
pub async fn fetch(
    handle: &Handle,
    leader: SocketAddr,
    data: &[u8],
) -> Result<(Vec<u8>, std::collections::BTreeMap<u64, String>), SnapshotError> {
    let mut assembly = Assembly::new(data)?;
    while let Some(asked) = assembly.next_request() {
        let request = Request::post(SNAPSHOT_PATH)
            .with_payload(pehra_shared::wire::encode(&asked).expect("chunk requests encode"));
        let response =
            handle
                .request(leader, request)
                .await
                .map_err(|e| SnapshotError::Unanswered {
                    index: asked.index,
                    offset: asked.offset,
                    why: e.to_string(),
                })?;
        if response.code() != Code::CONTENT {
            return Err(SnapshotError::Refused {
                index: asked.index,
                offset: asked.offset,
                why: format!(
                    "{} {}",
                    response.code(),
                    String::from_utf8_lossy(response.payload())
                ),
            });
        }
        assembly.take(response.payload())?;
    }
    assembly.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_request(r: &Response) -> Vec<u8> {
        assert_eq!(r.code(), Code::CONTENT, "{r:?}");
        r.payload().to_vec()
    }

    #[test]
    fn a_snapshot_is_pulled_in_pieces_and_checked() {
        let now = Instant::now();
        let offered = Offered::default();
        let tree: Vec<u8> = (0..(2 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let addrs: std::collections::BTreeMap<u64, String> =
            [(1, "127.0.0.1:2181".to_string())].into();
        let reference = offered.set(7, tree.clone(), addrs.clone(), now);
        let data = pehra_shared::wire::encode(&reference).unwrap();
        let mut assembly = Assembly::new(&data).unwrap();
        let mut asked = 0;
        while let Some(request) = assembly.next_request() {
            asked += 1;
            assembly
                .take(&chunk_request(&offered.answer(request, now)))
                .unwrap();
        }
        assert_eq!(asked, 3);
        assert_eq!(assembly.finish().unwrap(), (tree, addrs));
    }

    #[test]
    fn a_damaged_wrong_or_forgotten_snapshot_is_refused() {
        let now = Instant::now();
        let offered = Offered::default();
        let reference = offered.set(7, vec![1, 2, 3], Default::default(), now);
        // A byte changed on the way.
        let data = pehra_shared::wire::encode(&reference).unwrap();
        let mut assembly = Assembly::new(&data).unwrap();
        assembly.take(&[1, 9, 3]).unwrap();
        assert_eq!(assembly.finish(), Err(SnapshotError::Checksum { index: 7 }));
        // Too much, or nothing, in a piece.
        let mut assembly = Assembly::new(&data).unwrap();
        assert!(assembly.take(&[1, 2, 3, 4]).is_err());
        assert!(assembly.take(&[]).is_err());
        // Another index, or past the end: not served.
        let other = ChunkRequest {
            index: 8,
            offset: 0,
        };
        assert_eq!(offered.answer(other, now).code(), Code::NOT_FOUND);
        let past = ChunkRequest {
            index: 7,
            offset: 3,
        };
        assert_eq!(offered.answer(past, now).code(), Code::BAD_REQUEST);
        // Forgotten once idle, not before; being served counts as use.
        let first = ChunkRequest {
            index: 7,
            offset: 0,
        };
        assert!(!offered.forget_if_idle(now + OFFER_IDLE / 2));
        offered.answer(first, now + OFFER_IDLE / 2);
        assert!(!offered.forget_if_idle(now + OFFER_IDLE));
        assert!(offered.forget_if_idle(now + OFFER_IDLE * 2));
        assert_eq!(offered.answer(first, now).code(), Code::NOT_FOUND);
        // Not a reference at all.
        assert_eq!(Assembly::new(b"junk").unwrap_err(), SnapshotError::NotARef);
    }
}
