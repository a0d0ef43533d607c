//! The three answers a device decodes ([`CheckInReply`], [`ProduceResponse`],
//! [`DownlinkResponse`]) read without serde: the firmware's node loop otherwise carries
//! a `deserialize_any`/`deserialize_map` instance of [`super::lite`] per visitor of these
//! types and of those inside them ([`Term`], [`Directive`], [`Record`], [`Header`]),
//! ~6 KiB of flash for five small maps.
//!
//! The rules are [`decode`](super::decode)'s without `std` (the same [`scan::check`], then
//! what `lite` with serde's derived visitors accepts): maps only for structs, tags
//! skipped where `lite` skips them, keys as text or bytes of at most 512 bytes, unknown
//! keys skipped (and checked as `lite` checks what it ignores), a key twice refused,
//! required fields required, `null`/`undefined` as `None`, strings also from UTF-8 byte
//! strings, byte fields also from text or arrays of bytes (`serde_bytes`), arrays only
//! for sequences. Host tests check that exactly the bytes `lite` accepts are accepted,
//! with the same values, on the golden messages, hand-written forms and mutated ones, and
//! that the values are ciborium's wherever ciborium reads the whole message and `lite` is
//! not known to differ from it (tags, negatives below i64::MIN: see the tests); the
//! `cbor_wire` fuzz target checks the first.
//!
//! [`scan::check`]: super::scan::check

use alloc::string::String;
use alloc::vec::Vec;

use super::lite::{text, Head, Lite, LiteError, Result, BREAK, NULL, UNDEFINED};
use super::{CheckInReply, Directive, DownlinkResponse, Header, ProduceResponse, Record, Term};

/// A message a device decodes by hand ([`decode_by_hand`]).
pub trait HandDecode: Sized {
    /// Reads one value at the reader's position.
    #[doc(hidden)]
    fn read(r: &mut Reader<'_>) -> Result<Self>;
}

/// [`super::decode`] without `std` for the device's answers, without serde: `None` if
/// the bytes are not the message (a device never says why: no error value to make and
/// drop).
pub fn decode_by_hand<T: HandDecode>(bytes: &[u8]) -> Option<T> {
    super::scan::check(bytes).ok()?;
    let mut r = Reader(Lite { b: bytes, pos: 0 });
    let value = T::read(&mut r).ok()?;
    (r.0.pos == bytes.len()).then_some(value)
}

/// The position in the bytes (`lite`'s, whose item heads and strings it reads).
#[doc(hidden)]
pub struct Reader<'de>(Lite<'de>);

/// A required field: refused if missing.
fn need<T>(v: Option<T>) -> Result<T> {
    v.ok_or(LiteError)
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<'de> Reader<'de> {
    /// The next head that is not a tag.
    fn untagged(&mut self) -> Result<Head> {
        loop {
            match self.0.head()? {
                Head::Tag => continue,
                h => return Ok(h),
            }
        }
    }

    /// Whether a container with `left` items to go (`None`: indefinite) has another
    /// (counting it), as `lite`'s `Access::more`.
    fn more(&self, left: &mut Option<u64>) -> bool {
        match left {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => self.0.peek() != Some(BREAK),
        }
    }

    /// Any item, as `lite` reads one into `IgnoredAny` (an unknown key's value).
    fn skip(&mut self) -> Result<()> {
        match self.untagged()? {
            Head::Uint(_) | Head::Float(..) => Ok(()),
            Head::Simple(20..=23) => Ok(()),
            Head::Nint(n) => i64::try_from(n).map(|_| ()).map_err(|_| LiteError),
            Head::Bytes(len) => self.0.string(len).map(|_| ()),
            Head::Text(len) => text(self.0.string(len)?).map(|_| ()),
            Head::Array(mut left) => {
                while self.more(&mut left) {
                    self.skip()?;
                }
                self.0.finish(left)
            }
            Head::Map(mut left) => {
                while self.more(&mut left) {
                    self.skip()?;
                    self.skip()?;
                }
                self.0.finish(left)
            }
            Head::Tag | Head::Simple(_) | Head::Break => Err(LiteError),
        }
    }

    fn u64(&mut self) -> Result<u64> {
        match self.untagged()? {
            Head::Uint(n) => Ok(n),
            _ => Err(LiteError),
        }
    }

    fn u32(&mut self) -> Result<u32> {
        u32::try_from(self.u64()?).map_err(|_| LiteError)
    }

    /// A `String`: text, or a byte string that is UTF-8.
    fn string(&mut self) -> Result<String> {
        match self.untagged()? {
            Head::Text(len) | Head::Bytes(len) => {
                let bytes = self.0.string(len)?.into_owned();
                String::from_utf8(bytes).map_err(|_| LiteError)
            }
            _ => Err(LiteError),
        }
    }

    /// A `serde_bytes` field: a byte string, a text string, or an array of bytes.
    fn bytes(&mut self) -> Result<Vec<u8>> {
        match self.untagged()? {
            Head::Bytes(len) => Ok(self.0.string(len)?.into_owned()),
            Head::Text(len) => Ok(text(self.0.string(len)?)?.into_owned().into_bytes()),
            Head::Array(mut left) => {
                let mut out = Vec::with_capacity(left.map_or(0, usize_of).min(4096));
                while self.more(&mut left) {
                    out.push(u8::try_from(self.u64()?).map_err(|_| LiteError)?);
                }
                self.0.finish(left)?;
                Ok(out)
            }
            _ => Err(LiteError),
        }
    }

    /// Whether an `Option` holds a value (`null` and `undefined` are `None`).
    fn some(&mut self) -> bool {
        match self.0.peek() {
            Some(NULL) | Some(UNDEFINED) => {
                self.0.pos += 1;
                false
            }
            _ => true,
        }
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.some() {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A field or variant name: text (UTF-8) or bytes, definite, at most 512 bytes.
    fn name(&mut self) -> Result<&'de [u8]> {
        let max = super::scan::SCRATCH_LEN as u64;
        let (len, is_text) = match self.untagged()? {
            Head::Text(Some(len)) if len <= max => (len, true),
            Head::Bytes(Some(len)) if len <= max => (len, false),
            _ => return Err(LiteError),
        };
        let start = self.0.pos;
        let end = start.checked_add(usize_of(len)).ok_or(LiteError)?;
        let name = self.0.b.get(start..end).ok_or(LiteError)?;
        self.0.pos = end;
        if is_text {
            core::str::from_utf8(name).map_err(|_| LiteError)?;
        }
        Ok(name)
    }

    /// The pairs of a map (a struct: only a map, tags before it skipped): the value of
    /// a key in `names` is read by `field`, with the key's index (a key twice is refused);
    /// any other is skipped.
    fn fields(&mut self, names: &[&str], field: Field<'_, 'de>) -> Result<()> {
        let Head::Map(mut left) = self.untagged()? else {
            return Err(LiteError);
        };
        self.pairs(&mut left, names, field)?;
        self.0.finish(left)
    }

    fn pairs(
        &mut self,
        left: &mut Option<u64>,
        names: &[&str],
        field: Field<'_, 'de>,
    ) -> Result<()> {
        let mut seen = 0u32;
        while self.more(left) {
            let name = self.name()?;
            match names.iter().position(|n| n.as_bytes() == name) {
                Some(i) if seen & 1 << i != 0 => return Err(LiteError),
                Some(i) => {
                    seen |= 1 << i;
                    field(self, i)?;
                }
                None => self.skip()?,
            }
        }
        Ok(())
    }

    /// A sequence field (`array_only`): an array, its items read by `item`.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let Head::Array(mut left) = self.untagged()? else {
            return Err(LiteError);
        };
        let mut out = Vec::with_capacity(left.map_or(0, usize_of).min(1024));
        while self.more(&mut left) {
            out.push(item(self)?);
        }
        self.0.finish(left)?;
        Ok(out)
    }

    /// `SleepUntil`'s fields `{"at_ms": u64}` in the pairs of a map.
    fn at_ms(&mut self, left: &mut Option<u64>) -> Result<u64> {
        let mut at_ms = None;
        self.pairs(left, &["at_ms"], &mut |r, _| {
            at_ms = Some(r.u64()?);
            Ok(())
        })?;
        need(at_ms)
    }
}

/// Reads the value of the field with this index in the names given.
type Field<'a, 'de> = &'a mut dyn FnMut(&mut Reader<'de>, usize) -> Result<()>;

impl HandDecode for Directive {
    /// A unit variant's name (any text string, no tag before it), or a map of one pair
    /// `{name: content}`: a unit variant's content is anything; `sleep_until`'s is its
    /// fields as a map or as an array.
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let unit = |name: &[u8]| match name {
            b"stay_awake" => Ok(Directive::StayAwake),
            b"wake_now" => Ok(Directive::WakeNow),
            b"rejoin" => Ok(Directive::Rejoin),
            _ => Err(LiteError),
        };
        match r.0.head()? {
            Head::Text(len) => unit(text(r.0.string(len)?)?.as_bytes()),
            Head::Map(len @ (Some(1) | None)) => {
                let directive = match r.name()? {
                    b"sleep_until" => {
                        let at_ms = match r.untagged()? {
                            Head::Map(mut left) => {
                                let at_ms = r.at_ms(&mut left)?;
                                r.0.finish(left)?;
                                at_ms
                            }
                            Head::Array(mut left) => {
                                if !r.more(&mut left) {
                                    return Err(LiteError);
                                }
                                let at_ms = r.u64()?;
                                r.0.finish(left)?;
                                at_ms
                            }
                            _ => return Err(LiteError),
                        };
                        Directive::SleepUntil { at_ms }
                    }
                    name => {
                        let directive = unit(name)?;
                        r.skip()?;
                        directive
                    }
                };
                r.0.finish(len.map(|_| 0))?;
                Ok(directive)
            }
            _ => Err(LiteError),
        }
    }
}

impl HandDecode for Term {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (mut number, mut pehredar, mut started_ms, mut ends_ms) = (None, None, None, None);
        r.fields(
            &["number", "pehredar", "started_ms", "ends_ms"],
            &mut |r, i| {
                match i {
                    0 => number = Some(r.u64()?),
                    1 => pehredar = Some(r.string()?),
                    2 => started_ms = Some(r.u64()?),
                    _ => ends_ms = Some(r.u64()?),
                }
                Ok(())
            },
        )?;
        Ok(Term {
            number: need(number)?,
            pehredar: need(pehredar)?,
            started_ms: need(started_ms)?,
            ends_ms: need(ends_ms)?,
        })
    }
}

impl HandDecode for CheckInReply {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let mut reply = CheckInReply {
            pehredar: None,
            pehredar_addr: None,
            term: None,
            gateway_ms: None,
            directive: Directive::StayAwake,
            pending: 0,
            lease_ms: None,
        };
        let (mut directive, mut pending) = (None, None);
        r.fields(
            &[
                "pehredar",
                "pehredar_addr",
                "term",
                "gateway_ms",
                "directive",
                "pending",
                "lease_ms",
            ],
            &mut |r, i| {
                match i {
                    0 => reply.pehredar = r.option(Reader::string)?,
                    1 => reply.pehredar_addr = r.option(Reader::string)?,
                    2 => reply.term = r.option(Term::read)?,
                    3 => reply.gateway_ms = r.option(Reader::u64)?,
                    4 => directive = Some(Directive::read(r)?),
                    5 => pending = Some(r.u32()?),
                    _ => reply.lease_ms = r.option(Reader::u32)?,
                }
                Ok(())
            },
        )?;
        reply.directive = need(directive)?;
        reply.pending = need(pending)?;
        Ok(reply)
    }
}

impl HandDecode for ProduceResponse {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (mut base_offset, mut record_count, mut leader_epoch) = (None, None, None);
        r.fields(
            &["base_offset", "record_count", "leader_epoch"],
            &mut |r, i| {
                match i {
                    0 => base_offset = Some(r.u64()?),
                    1 => record_count = Some(r.u32()?),
                    _ => leader_epoch = Some(r.u32()?),
                }
                Ok(())
            },
        )?;
        Ok(ProduceResponse {
            base_offset: need(base_offset)?,
            record_count: need(record_count)?,
            leader_epoch: need(leader_epoch)?,
        })
    }
}

impl HandDecode for Header {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (mut key, mut value) = (None, None);
        r.fields(&["key", "value"], &mut |r, i| {
            match i {
                0 => key = Some(r.string()?),
                _ => value = Some(r.bytes()?),
            }
            Ok(())
        })?;
        Ok(Header {
            key: need(key)?,
            value: need(value)?,
        })
    }
}

impl HandDecode for Record {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (mut key, mut value, mut timestamp_ms, mut headers) = (None, None, None, Vec::new());
        r.fields(&["key", "value", "timestamp_ms", "headers"], &mut |r, i| {
            match i {
                0 => key = r.option(Reader::bytes)?,
                1 => value = Some(r.bytes()?),
                2 => timestamp_ms = Some(r.u64()?),
                _ => headers = r.array(Header::read)?,
            }
            Ok(())
        })?;
        Ok(Record {
            key,
            value: need(value)?,
            timestamp_ms: need(timestamp_ms)?,
            headers,
        })
    }
}

impl HandDecode for DownlinkResponse {
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (mut records, mut next, mut pending) = (None, None, None);
        r.fields(&["records", "next", "pending"], &mut |r, i| {
            match i {
                0 => records = Some(r.array(offset_record)?),
                1 => next = Some(r.u64()?),
                _ => pending = Some(r.u32()?),
            }
            Ok(())
        })?;
        Ok(DownlinkResponse {
            records: need(records)?,
            next: need(next)?,
            pending: need(pending)?,
        })
    }
}

/// An `(offset, record)` pair: an array of exactly two items.
fn offset_record(r: &mut Reader<'_>) -> Result<(u64, Record)> {
    let Head::Array(mut left) = r.untagged()? else {
        return Err(LiteError);
    };
    if !r.more(&mut left) {
        return Err(LiteError);
    }
    let offset = r.u64()?;
    if !r.more(&mut left) {
        return Err(LiteError);
    }
    let record = Record::read(r)?;
    r.0.finish(left)?;
    Ok((offset, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode_lite, encode, Acks, DeviceReadings};
    use alloc::vec;
    use core::fmt::Debug;
    use serde::de::DeserializeOwned;

    /// What ciborium makes of `bytes` after the same scan (`decode` on gateways), if it
    /// read them all: it does not check that a tuple's or a struct variant's array has no
    /// more items than it reads, nor read a unit variant's content in the `{name:
    /// content}` form, and leaves the rest unread (`lite` refuses both when they are the
    /// message's last bytes, the only place ciborium accepts them).
    fn ciborium<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        struct Counting<'a>(&'a [u8], usize);
        impl std::io::Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = std::io::Read::read(&mut &self.0[self.1..], buf)?;
                self.1 += n;
                Ok(n)
            }
        }
        super::super::scan::check(bytes).ok()?;
        let mut scratch = [0u8; super::super::scan::SCRATCH_LEN];
        let mut reader = Counting(bytes, 0);
        let value = ciborium::from_reader_with_buffer(&mut reader, &mut scratch).ok()?;
        (reader.1 == bytes.len()).then_some(value)
    }

    /// Whether `bytes` hold a tag or a negative number below i64::MIN: where `lite` is
    /// known to differ from ciborium (which skips a tag before an enum, reads tags 2 and
    /// 3 before bytes as an integer, and ignores such a number as an unknown key's
    /// value; `lite` refuses all three).
    fn lite_differs(bytes: &[u8]) -> bool {
        let mut l = Lite { b: bytes, pos: 0 };
        while l.pos < bytes.len() {
            match l.head() {
                Ok(Head::Tag) => return true,
                Ok(Head::Nint(n)) if n > i64::MAX as u64 => return true,
                Ok(Head::Bytes(Some(n)) | Head::Text(Some(n))) => l.pos += n as usize,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The hand decoder accepts exactly the bytes `lite` (the firmware's decoder until
    /// now) accepts, with the same values; and, as `lite` is held to (its proptest and
    /// the `cbor_wire` fuzz target), what ciborium (the gateways' decoder) accepts it
    /// accepts, with the same value, except where `lite` is known to differ. Whether it
    /// accepted them, and whether ciborium's answer was checked.
    fn agree<T: HandDecode + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) -> (bool, bool) {
        let hand = decode_by_hand::<T>(bytes);
        assert_eq!(hand, decode_lite::<T>(bytes).ok(), "lite: {bytes:02x?}");
        let checked = match ciborium::<T>(bytes) {
            Some(theirs) if !lite_differs(bytes) => {
                assert_eq!(hand, Some(theirs), "ciborium: {bytes:02x?}");
                true
            }
            _ => false,
        };
        (hand.is_some(), checked)
    }

    fn directives() -> [Directive; 4] {
        [
            Directive::SleepUntil {
                at_ms: 1_700_000_000_123,
            },
            Directive::StayAwake,
            Directive::WakeNow,
            Directive::Rejoin,
        ]
    }

    fn replies() -> Vec<CheckInReply> {
        let mut out = Vec::new();
        for directive in directives() {
            out.push(CheckInReply {
                pehredar: Some(String::from("broker-1")),
                pehredar_addr: Some(String::from("127.0.0.1:5683")),
                term: Some(Term {
                    number: 7,
                    pehredar: String::from("broker-1"),
                    started_ms: 1_700_000_000_000,
                    ends_ms: u64::MAX,
                }),
                gateway_ms: Some(1_700_000_000_500),
                directive,
                pending: 3,
                lease_ms: Some(90_000),
            });
            out.push(CheckInReply {
                pehredar: None,
                pehredar_addr: None,
                term: None,
                gateway_ms: None,
                directive,
                pending: u32::MAX,
                lease_ms: None,
            });
        }
        out
    }

    fn record(n: u8) -> Record {
        Record {
            key: n.is_multiple_of(2).then(|| b"qemu-1".to_vec()),
            value: vec![n; n as usize],
            timestamp_ms: 1_700_000_000_000 + n as u64,
            headers: (0..n % 3)
                .map(|i| Header {
                    key: String::from("h"),
                    value: vec![i],
                })
                .collect(),
        }
    }

    fn downlinks() -> Vec<DownlinkResponse> {
        vec![
            DownlinkResponse {
                records: vec![],
                next: 0,
                pending: 0,
            },
            DownlinkResponse {
                records: (0..4).map(|n| (n as u64 * 1000, record(n))).collect(),
                next: 4000,
                pending: 2,
            },
        ]
    }

    fn produced() -> ProduceResponse {
        ProduceResponse {
            base_offset: u64::MAX,
            record_count: 16,
            leader_epoch: 3,
        }
    }

    #[test]
    fn decodes_every_golden_message() {
        for reply in replies() {
            assert_eq!(
                decode_by_hand::<CheckInReply>(&encode(&reply).unwrap()),
                Some(reply.clone())
            );
            assert_eq!(
                agree::<CheckInReply>(&encode(&reply).unwrap()),
                (true, true)
            );
        }
        for d in downlinks() {
            assert_eq!(
                decode_by_hand::<DownlinkResponse>(&encode(&d).unwrap()),
                Some(d.clone())
            );
            assert_eq!(
                agree::<DownlinkResponse>(&encode(&d).unwrap()),
                (true, true)
            );
        }
        let p = produced();
        assert_eq!(
            decode_by_hand::<ProduceResponse>(&encode(&p).unwrap()),
            Some(p)
        );
        assert_eq!(agree::<ProduceResponse>(&encode(&p).unwrap()), (true, true));
        // Another message is refused by all three.
        let other = encode(&DeviceReadings {
            topic: String::from("readings"),
            acks: Acks::All,
            records: vec![record(1)],
            first_seq: Some(1),
            incarnation: 5,
        })
        .unwrap();
        assert!(!agree::<ProduceResponse>(&other).0);
        assert!(!agree::<CheckInReply>(&other).0);
        assert!(!agree::<DownlinkResponse>(&other).0);
    }

    /// The other forms the rules allow or refuse, written out.
    #[test]
    fn agrees_on_other_forms() {
        let text = |s: &str| {
            let mut v = vec![0x60 | s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        };
        let bytes = |s: &str| {
            let mut v = vec![0x40 | s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        };
        let cat = |parts: &[&[u8]]| parts.concat();
        let pending = cat(&[&text("pending"), &[0x03]]);
        let sleep = cat(&[
            &text("directive"),
            &[0xa1],
            &text("sleep_until"),
            &[0xa1],
            &text("at_ms"),
            &[0x05],
        ]);
        let cases: Vec<(Vec<u8>, bool)> = vec![
            // Keys as bytes, tags before the map and the values, indefinite map.
            (
                cat(&[&[0xc6, 0xa2], &bytes("pending"), &[0xc6, 0x03], &sleep]),
                true,
            ),
            (cat(&[&[0xbf], &pending, &sleep, &[0xff]]), true),
            // A key twice, a required key missing, an unknown key with any value.
            (cat(&[&[0xa3], &pending, &sleep, &pending]), false),
            (cat(&[&[0xa1], &pending]), false),
            (
                cat(&[
                    &[0xa3],
                    &pending,
                    &sleep,
                    &text("x"),
                    &[0x9f, 0xf5, 0xf6, 0xf9, 0x3c, 0x00, 0xff],
                ]),
                true,
            ),
            (
                cat(&[&[0xa3], &pending, &sleep, &text("x"), &[0x62, 0xff, 0xfe]]),
                false,
            ),
            (
                cat(&[
                    &[0xa3],
                    &pending,
                    &sleep,
                    &text("x"),
                    &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                ]),
                false,
            ),
            (
                cat(&[&[0xa3], &pending, &sleep, &text("x"), &[0xf0]]),
                false,
            ),
            (cat(&[&[0xa3], &pending, &sleep, &[0x01, 0x02]]), false),
            // Options: null, undefined, a tagged null.
            (
                cat(&[&[0xa3], &pending, &sleep, &text("term"), &[0xf6]]),
                true,
            ),
            (
                cat(&[&[0xa3], &pending, &sleep, &text("lease_ms"), &[0xf7]]),
                true,
            ),
            (
                cat(&[
                    &[0xa3],
                    &pending,
                    &sleep,
                    &text("gateway_ms"),
                    &[0xc6, 0xf6],
                ]),
                false,
            ),
            // Strings from UTF-8 byte strings and indefinite text.
            (
                cat(&[&[0xa3], &pending, &sleep, &text("pehredar"), &bytes("b-1")]),
                true,
            ),
            (
                cat(&[
                    &[0xa3],
                    &pending,
                    &sleep,
                    &text("pehredar"),
                    &[0x42, 0xff, 0xfe],
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa3],
                    &pending,
                    &sleep,
                    &text("pehredar"),
                    &[0x7f, 0x61, b'a', 0x61, b'b', 0xff],
                ]),
                true,
            ),
            // Numbers out of range or negative.
            (
                cat(&[
                    &[0xa2],
                    &text("pending"),
                    &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0],
                    &sleep,
                ]),
                false,
            ),
            (cat(&[&[0xa2], &text("pending"), &[0x20], &sleep]), false),
            (
                cat(&[&[0xa2], &text("pending"), &[0xf9, 0x3c, 0x00], &sleep]),
                false,
            ),
            // Directives: names, a unit variant with content, sleep_until as an array,
            // as text, with more than its one field, a tag before the variant.
            (
                cat(&[&[0xa2], &pending, &text("directive"), &text("wake_now")]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0x7f, 0x66],
                    b"rejoin",
                    &[0xff],
                ]),
                true,
            ),
            (
                cat(&[&[0xa2], &pending, &text("directive"), &text("sleep_until")]),
                false,
            ),
            (
                cat(&[&[0xa2], &pending, &text("directive"), &text("nap")]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xc6],
                    &text("rejoin"),
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &bytes("rejoin"),
                    &[0x82, 1, 2],
                ]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xbf],
                    &text("stay_awake"),
                    &[0xf6, 0xff],
                ]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa2],
                    &text("stay_awake"),
                    &[0xf6],
                    &text("rejoin"),
                    &[0xf6],
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0x81, 0x05],
                ]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0x82, 0x05, 0x06],
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0x80],
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0xc6, 0x9f, 0x05, 0xff],
                ]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0xa0],
                ]),
                false,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0xa2],
                    &text("at_ms"),
                    &[0x05],
                    &text("z"),
                    &[0xf5],
                ]),
                true,
            ),
            (
                cat(&[
                    &[0xa2],
                    &pending,
                    &text("directive"),
                    &[0xa1],
                    &text("sleep_until"),
                    &[0x05],
                ]),
                false,
            ),
            // A struct as an array.
            (cat(&[&[0x82, 0x03], &text("rejoin")]), false),
        ];
        for (bytes, accepted) in &cases {
            assert_eq!(agree::<CheckInReply>(bytes).0, *accepted, "{bytes:02x?}");
        }
        // Records: byte fields as text or arrays of bytes, headers only as an array,
        // (offset, record) pairs of exactly two items.
        let value = cat(&[&text("value"), &bytes("v")]);
        let ts = cat(&[&text("timestamp_ms"), &[0x01]]);
        let rec = |extra: &[u8], n: u8| cat(&[&[0xa2 + n], &value, &ts, extra]);
        let down = |records: &[u8]| {
            cat(&[
                &[0xa3],
                &text("records"),
                records,
                &text("next"),
                &[0x00],
                &text("pending"),
                &[0x00],
            ])
        };
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (down(&[0x80]), true),
            (down(&[0x40]), false),
            (down(&[0x9f, 0xff]), true),
            (down(&cat(&[&[0x81, 0x82, 0x07], &rec(&[], 0)])), true),
            (
                down(&cat(&[&[0x81, 0x83, 0x07], &rec(&[], 0), &[0x00]])),
                false,
            ),
            (down(&cat(&[&[0x81, 0x81, 0x07]])), false),
            (
                down(&cat(&[&[0x81, 0xa2, 0x07], &rec(&[], 0), &[0x00, 0x00]])),
                false,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("key"), &text("k")]), 1),
                ])),
                true,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("key"), &[0x82, 0x01, 0x18, 0xff]]), 1),
                ])),
                true,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("key"), &[0x81, 0x19, 0x01, 0x00]]), 1),
                ])),
                false,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("key"), &[0xf6]]), 1),
                ])),
                true,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("key"), &[0x5f, 0x41, 0x01, 0x40, 0xff]]), 1),
                ])),
                true,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("headers"), &[0x40]]), 1),
                ])),
                false,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(&cat(&[&text("headers"), &[0xf6]]), 1),
                ])),
                false,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(
                        &cat(&[
                            &text("headers"),
                            &[0x81, 0xa2],
                            &text("key"),
                            &bytes("k"),
                            &text("value"),
                            &text("v"),
                        ]),
                        1,
                    ),
                ])),
                true,
            ),
            (
                down(&cat(&[
                    &[0x81, 0x82, 0x07],
                    &rec(
                        &cat(&[&text("headers"), &[0x81, 0x82], &text("k"), &bytes("v")]),
                        1,
                    ),
                ])),
                false,
            ),
        ];
        for (bytes, accepted) in &cases {
            assert_eq!(
                agree::<DownlinkResponse>(bytes).0,
                *accepted,
                "{bytes:02x?}"
            );
        }
    }

    /// Real messages with bytes replaced, inserted (among them the heads that change a
    /// form: tags, null, break, indefinite containers) or removed: the three decoders
    /// agree on every one that passes the scan.
    #[test]
    fn agrees_on_mutated_messages() {
        let mut seeds: Vec<(u8, Vec<u8>)> = Vec::new();
        seeds.extend(replies().iter().map(|r| (0, encode(r).unwrap())));
        seeds.extend(downlinks().iter().map(|d| (1, encode(d).unwrap())));
        seeds.push((2, encode(&produced()).unwrap()));
        let dictionary = [
            0xc6, 0xf6, 0xf7, 0xff, 0x9f, 0xbf, 0x5f, 0x7f, 0x80, 0xa0, 0x40, 0x60, 0x00, 0x18,
            0x1b, 0x20, 0x81, 0xa1, 0xf9, 0xf5,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut scanned, mut accepted, mut checked) = (0, 0, 0);
        for (kind, seed) in &seeds {
            for _ in 0..6_000 {
                let mut b = seed.clone();
                for _ in 0..1 + next(3) {
                    let at = next(b.len() + 1);
                    let byte = if next(2) == 0 {
                        dictionary[next(dictionary.len())]
                    } else {
                        next(256) as u8
                    };
                    match next(4) {
                        0 | 1 if at < b.len() => b[at] = byte,
                        2 => b.insert(at, byte),
                        _ if at < b.len() => {
                            b.remove(at);
                        }
                        _ => b.push(byte),
                    }
                }
                if super::super::scan::check(&b).is_err() {
                    continue;
                }
                scanned += 1;
                let (ok, against_ciborium) = match kind {
                    0 => agree::<CheckInReply>(&b),
                    1 => agree::<DownlinkResponse>(&b),
                    _ => agree::<ProduceResponse>(&b),
                };
                accepted += ok as usize;
                checked += against_ciborium as usize;
                // Every type on every input: refusals must agree too.
                agree::<ProduceResponse>(&b);
                agree::<CheckInReply>(&b);
            }
        }
        // The mutations reach both outcomes often enough to mean something.
        assert!(
            scanned > 5_000 && accepted > 1_000 && checked > 1_000,
            "{scanned} scanned, {accepted} accepted, {checked} checked against ciborium"
        );
    }
}
