//! A small serde deserializer for one CBOR item in a byte slice, which [`decode`]
//! uses without feature `std` (devices) instead of ciborium's.
//!
//! Why: ciborium's error type formats serde's messages ("invalid type: floating point
//! `1.5`, expected ..."), which links core's float formatting (~10 KiB of flash) into
//! every firmware. Here every error is one [`LiteError`] with no message; the bytes
//! accepted and the values produced are the same (the input has passed
//! [`scan::check`](super::scan::check), so it is well-formed, complete and not too
//! deep; this code still never panics on anything). Tags are skipped (their content is
//! decoded), as Pehra uses none.
//!
//! [`decode`]: super::decode

use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Something did not decode (no message: see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteError;

impl fmt::Display for LiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not the expected message")
    }
}

impl de::StdError for LiteError {}

impl de::Error for LiteError {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        LiteError
    }
    fn invalid_type(_: de::Unexpected<'_>, _: &dyn de::Expected) -> Self {
        LiteError
    }
    fn invalid_value(_: de::Unexpected<'_>, _: &dyn de::Expected) -> Self {
        LiteError
    }
    fn invalid_length(_: usize, _: &dyn de::Expected) -> Self {
        LiteError
    }
    fn unknown_variant(_: &str, _: &'static [&'static str]) -> Self {
        LiteError
    }
    fn unknown_field(_: &str, _: &'static [&'static str]) -> Self {
        LiteError
    }
    fn missing_field(_: &'static str) -> Self {
        LiteError
    }
    fn duplicate_field(_: &'static str) -> Self {
        LiteError
    }
}

pub(super) type Result<T> = core::result::Result<T, LiteError>;

/// Decodes `bytes` (exactly one well-formed CBOR item) as a `T`.
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    let mut de = Lite { b: bytes, pos: 0 };
    let value = T::deserialize(&mut de)?;
    if de.pos != bytes.len() {
        return Err(LiteError);
    }
    Ok(value)
}

/// An item head.
pub(super) enum Head {
    Uint(u64),
    Nint(u64),
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Tag,
    Simple(u8),
    /// A float's bits as sent (16, 32 or 64 of them: additional information 25, 26
    /// or 27): made a value only where one is wanted ([`float`]), so a decoder that
    /// only skips floats (the devices' answers, `super::hand`) links no float
    /// conversion.
    Float(u8, u64),
    Break,
}

pub(super) const NULL: u8 = 0xf6;
pub(super) const UNDEFINED: u8 = 0xf7;
pub(super) const BREAK: u8 = 0xff;

pub(super) struct Lite<'de> {
    pub(super) b: &'de [u8],
    pub(super) pos: usize,
}

fn half_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let v = match exp {
        0 => man as f32 / 16_777_216.0, // 2^-24 per unit
        31 => f32::from_bits(0x7f80_0000 | (man << 13)),
        e => f32::from_bits(((e + 112) << 23) | (man << 13)),
    };
    f32::from_bits(v.to_bits() | sign)
}

/// A [`Head::Float`]'s value.
fn float(ai: u8, n: u64) -> f64 {
    match ai {
        25 => half_to_f32(n as u16) as f64,
        26 => f32::from_bits(n as u32) as f64,
        _ => f64::from_bits(n),
    }
}

impl<'de> Lite<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        let end = self.pos.checked_add(n).ok_or(LiteError)?;
        let s = self.b.get(self.pos..end).ok_or(LiteError)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub(super) fn head(&mut self) -> Result<Head> {
        let ib = self.byte()?;
        let (major, ai) = (ib >> 5, ib & 0x1f);
        let arg = match ai {
            0..=23 => Some(ai as u64),
            24 => Some(self.byte()? as u64),
            25 => Some(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| LiteError)?) as u64),
            26 => Some(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| LiteError)?) as u64),
            27 => Some(u64::from_be_bytes(
                self.take(8)?.try_into().map_err(|_| LiteError)?,
            )),
            31 => None,
            _ => return Err(LiteError),
        };
        Ok(match (major, arg) {
            (0, Some(n)) => Head::Uint(n),
            (1, Some(n)) => Head::Nint(n),
            (2, len) => Head::Bytes(len),
            (3, len) => Head::Text(len),
            (4, len) => Head::Array(len),
            (5, len) => Head::Map(len),
            (6, Some(_)) => Head::Tag,
            (7, None) => Head::Break,
            (7, Some(n)) => match ai {
                25..=27 => Head::Float(ai, n),
                _ => Head::Simple(n as u8),
            },
            _ => return Err(LiteError),
        })
    }

    /// A byte or text string's content: borrowed if definite, chunks joined if not.
    pub(super) fn string(&mut self, len: Option<u64>) -> Result<Cow<'de, [u8]>> {
        match len {
            Some(n) => Ok(Cow::Borrowed(
                self.take(usize::try_from(n).map_err(|_| LiteError)?)?,
            )),
            None => {
                let mut out = Vec::new();
                loop {
                    match self.head()? {
                        Head::Break => return Ok(Cow::Owned(out)),
                        Head::Bytes(Some(n)) | Head::Text(Some(n)) => out.extend_from_slice(
                            self.take(usize::try_from(n).map_err(|_| LiteError)?)?,
                        ),
                        _ => return Err(LiteError),
                    }
                }
            }
        }
    }

    /// After a container with `left` items to go (`None`: indefinite, break not seen).
    pub(super) fn finish(&mut self, left: Option<u64>) -> Result<()> {
        match left {
            Some(0) => Ok(()),
            None if self.peek() == Some(BREAK) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(LiteError),
        }
    }
}

pub(super) fn text(b: Cow<'_, [u8]>) -> Result<Cow<'_, str>> {
    match b {
        Cow::Borrowed(b) => core::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| LiteError),
        Cow::Owned(b) => alloc::string::String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|_| LiteError),
    }
}

impl<'de> de::Deserializer<'de> for &mut Lite<'de> {
    type Error = LiteError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Uint(n) => v.visit_u64(n),
            Head::Nint(n) => match i64::try_from(n) {
                Ok(n) => v.visit_i64(-1 - n),
                // Below i64::MIN: no wire type holds such a number, and every visitor
                // of theirs refuses it, as ciborium's decoder ends (`visit_i128`'s
                // default formats the number into its message: 1.5 KiB of a firmware
                // for i128 formatting, for nothing).
                Err(_) => Err(LiteError),
            },
            Head::Bytes(len) => match self.string(len)? {
                Cow::Borrowed(b) => v.visit_borrowed_bytes(b),
                Cow::Owned(b) => v.visit_byte_buf(b),
            },
            Head::Text(len) => match text(self.string(len)?)? {
                Cow::Borrowed(s) => v.visit_borrowed_str(s),
                Cow::Owned(s) => v.visit_string(s),
            },
            Head::Array(len) => {
                let mut access = Access {
                    de: self,
                    left: len,
                };
                let value = v.visit_seq(&mut access)?;
                let left = access.left;
                self.finish(left)?;
                Ok(value)
            }
            Head::Map(len) => {
                let mut access = Access {
                    de: self,
                    left: len,
                };
                let value = v.visit_map(&mut access)?;
                let left = access.left;
                self.finish(left)?;
                Ok(value)
            }
            Head::Tag => self.deserialize_any(v),
            Head::Simple(20) => v.visit_bool(false),
            Head::Simple(21) => v.visit_bool(true),
            Head::Simple(22) | Head::Simple(23) => v.visit_none(),
            Head::Float(ai, n) => v.visit_f64(float(ai, n)),
            Head::Simple(_) | Head::Break => Err(LiteError),
        }
    }

    /// Only a map (tags skipped), as ciborium: a struct is never read from an array.
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        loop {
            match self.head()? {
                Head::Tag => continue,
                Head::Map(len) => {
                    let mut access = Access {
                        de: self,
                        left: len,
                    };
                    let value = v.visit_map(&mut access)?;
                    let left = access.left;
                    self.finish(left)?;
                    return Ok(value);
                }
                _ => return Err(LiteError),
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_map(v)
    }

    /// A field or variant name: a definite-length text or byte string of at most
    /// ciborium's scratch length (tags skipped), as ciborium reads one; never a number.
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        let max = super::scan::SCRATCH_LEN as u64;
        loop {
            match self.head()? {
                Head::Tag => continue,
                Head::Text(Some(len)) if len <= max => {
                    return match text(self.string(Some(len))?)? {
                        Cow::Borrowed(s) => v.visit_borrowed_str(s),
                        Cow::Owned(s) => v.visit_string(s),
                    }
                }
                Head::Bytes(Some(len)) if len <= max => {
                    return match self.string(Some(len))? {
                        Cow::Borrowed(b) => v.visit_borrowed_bytes(b),
                        Cow::Owned(b) => v.visit_byte_buf(b),
                    }
                }
                _ => return Err(LiteError),
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.peek() {
            Some(NULL) | Some(UNDEFINED) => {
                self.pos += 1;
                v.visit_none()
            }
            _ => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Simple(22) | Head::Simple(23) => v.visit_unit(),
            _ => Err(LiteError),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self.head()? {
            // A unit variant: its name.
            Head::Text(len) => match text(self.string(len)?)? {
                Cow::Borrowed(s) => {
                    v.visit_enum(IntoDeserializer::<LiteError>::into_deserializer(s))
                }
                Cow::Owned(s) => v.visit_enum(IntoDeserializer::<LiteError>::into_deserializer(s)),
            },
            // Any other: `{name: content}`.
            Head::Map(len @ (Some(1) | None)) => {
                let value = v.visit_enum(Enum { de: self })?;
                self.finish(len.map(|_| 0))?;
                Ok(value)
            }
            _ => Err(LiteError),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf seq tuple tuple_struct ignored_any
    }
}

/// The items of an array or the pairs of a map.
struct Access<'a, 'de> {
    de: &'a mut Lite<'de>,
    left: Option<u64>,
}

impl Access<'_, '_> {
    /// Whether another item follows (counting it).
    fn more(&mut self) -> bool {
        match self.left {
            Some(0) => false,
            Some(n) => {
                self.left = Some(n - 1);
                true
            }
            None => self.de.peek() != Some(BREAK),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = LiteError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.more() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // The scan proved every item is there (one byte at least each).
        self.left.map(|n| n as usize)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = LiteError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.more() {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        self.left.map(|n| n as usize)
    }
}

/// An enum as `{name: content}`.
struct Enum<'a, 'de> {
    de: &'a mut Lite<'de>,
}

impl<'de> de::EnumAccess<'de> for Enum<'_, 'de> {
    type Error = LiteError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_, 'de> {
    type Error = LiteError;

    fn unit_variant(self) -> Result<()> {
        <de::IgnoredAny as de::Deserialize>::deserialize(&mut *self.de).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value> {
        de::Deserializer::deserialize_any(&mut *self.de, v)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], v: V) -> Result<V::Value> {
        de::Deserializer::deserialize_any(&mut *self.de, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        encode, Acks, CheckIn, CheckInReply, DeviceReadings, Directive, DownlinkResponse,
        NodeHealth, NodeRole, ProduceResponse, Record,
    };
    use alloc::string::String;
    use alloc::vec;

    fn same<T>(value: T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let bytes = encode(&value).unwrap();
        let ours: T = from_slice(&bytes).unwrap();
        let theirs: T = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(ours, value);
        assert_eq!(theirs, value);
    }

    #[test]
    fn decodes_what_ciborium_decodes() {
        for directive in [
            Directive::SleepUntil {
                at_ms: 1_700_000_000_123,
            },
            Directive::StayAwake,
            Directive::WakeNow,
            Directive::Rejoin,
        ] {
            same(directive);
            same(CheckInReply {
                pehredar: Some(String::from("broker-1")),
                pehredar_addr: Some(String::from("127.0.0.1:5683")),
                term: None,
                gateway_ms: Some(u64::MAX),
                directive,
                pending: 3,
                lease_ms: None,
            });
        }
        let record = Record {
            key: Some(b"qemu-1".to_vec()),
            value: b"hello".to_vec(),
            timestamp_ms: 42,
            headers: vec![],
        };
        same(DownlinkResponse {
            records: vec![(7, record.clone()), (8, record.clone())],
            next: 9,
            pending: 0,
        });
        same(DeviceReadings {
            topic: String::from("readings"),
            acks: Acks::All,
            records: vec![record],
            first_seq: Some(1),
            incarnation: 5,
        });
        same(ProduceResponse {
            base_offset: 1,
            record_count: 2,
            leader_epoch: 3,
        });
        same(CheckIn {
            node: String::from("qemu-1"),
            role: NodeRole::Dormant,
            mains_powered: false,
            next_alarm_ms: None,
            traffic_waiting: true,
            health: Some(NodeHealth::default()),
        });
        // What a device stores across deep sleep (addresses as serde's enum of tuples).
        same(crate::pehra::device::NodeMemory {
            pehredar: Some("[fd00::1]:5683".parse().unwrap()),
            last_answered: Some("10.0.2.2:5683".parse().unwrap()),
            clock_offset_ms: Some(-1_700_000_000_000),
            alarm_interval_ms: 30_000,
            failed_cycles: 2,
            downlink_from: Some(5),
            downlink_uncommitted: true,
        });
        same(crate::pehra::device::NodeMemory::default());
        same((-1i64, i64::MIN, 1.5f64, 0.25f32, vec![true, false], ()));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let bytes = encode(&ProduceResponse {
            base_offset: 1,
            record_count: 2,
            leader_epoch: 3,
        })
        .unwrap();
        assert!(from_slice::<CheckInReply>(&bytes).is_err());
        assert!(from_slice::<u8>(&encode(&300u32).unwrap()).is_err());
        assert!(from_slice::<String>(&[0x62, b'a']).is_err());
        // Indefinite-length strings and arrays, a half float.
        assert_eq!(
            from_slice::<String>(&[0x7f, 0x61, b'a', 0x61, b'b', 0xff]),
            Ok("ab".into())
        );
        assert_eq!(from_slice::<Vec<u8>>(&[0x9f, 1, 2, 0xff]), Ok(vec![1, 2]));
        assert_eq!(from_slice::<f64>(&[0xf9, 0x3e, 0x00]), Ok(1.5));
        // A negative number below i64::MIN (-2^64), where an i64 or a message is
        // expected: refused by both decoders.
        let below = [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(from_slice::<i64>(&below).is_err());
        assert!(ciborium::from_reader::<i64, _>(&below[..]).is_err());
        assert!(from_slice::<ProduceResponse>(&below).is_err());
        assert!(ciborium::from_reader::<ProduceResponse, _>(&below[..]).is_err());
    }

    /// Found by the `cbor_wire` fuzz target: a struct sent as an array (`[21]` as a
    /// `SessionOpen`) was accepted here and refused by ciborium.
    #[test]
    fn refuses_a_struct_as_an_array_as_ciborium_does() {
        use crate::wire::SessionOpen;
        let bytes = [0x81, 0x15];
        assert!(ciborium::from_reader::<SessionOpen, _>(&bytes[..]).is_err());
        assert_eq!(from_slice::<SessionOpen>(&bytes), Err(LiteError));
        assert!(from_slice::<ProduceResponse>(&[0x83, 1, 2, 3]).is_err());
        // Tagged maps still decode, as in ciborium.
        let mut tagged = vec![0xc6];
        tagged.extend(
            encode(&SessionOpen {
                timeout_ms: 21,
                node: None,
                health: None,
            })
            .unwrap(),
        );
        assert_eq!(
            from_slice::<SessionOpen>(&tagged).map(|o| o.timeout_ms),
            Ok(21)
        );
        assert_eq!(
            ciborium::from_reader::<SessionOpen, _>(&tagged[..])
                .map(|o| o.timeout_ms)
                .ok(),
            Some(21)
        );
    }

    /// Found by the `cbor_wire` fuzz target: `{10: -20}` decoded here as the `ErrorKind`
    /// with index 10 (a variant named by its number) and was refused by ciborium, whose
    /// field and variant names are text or bytes of at most 512 bytes only.
    #[test]
    fn names_are_text_or_bytes_of_at_most_512_bytes_as_in_ciborium() {
        use crate::wire::{ErrorKind, SessionOpen};
        let bytes = [0xa1, 0x0a, 0x33];
        assert!(ciborium::from_reader::<ErrorKind, _>(&bytes[..]).is_err());
        assert_eq!(from_slice::<ErrorKind>(&bytes), Err(LiteError));
        // {"timeout_ms": 1, <513-byte unknown key>: 0}: refused by both (`decode` runs
        // ciborium with its 512-byte scratch).
        let mut long = vec![0xa2, 0x6a];
        long.extend_from_slice(b"timeout_ms");
        long.extend_from_slice(&[0x01, 0x79, 0x02, 0x01]);
        long.extend(core::iter::repeat_n(b'k', 513));
        long.push(0x00);
        assert!(crate::wire::decode::<SessionOpen>(&long).is_err());
        assert!(from_slice::<SessionOpen>(&long).is_err());
        // 512 bytes is still fine for both.
        long[13..16].copy_from_slice(&[0x79, 0x02, 0x00]);
        long.remove(16);
        assert!(crate::wire::decode::<SessionOpen>(&long).is_ok());
        assert!(from_slice::<SessionOpen>(&long).is_ok());
    }

    proptest::proptest! {
        /// Random bytes that pass the input check, and mutated real messages: the
        /// decoder never panics, and where ciborium decodes a message so does it, to
        /// the same value.
        #[test]
        fn agrees_with_ciborium_on_hostile_input(
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 0..4),
        ) {
            let reply = encode(&CheckInReply {
                pehredar: Some(String::from("broker-1")),
                pehredar_addr: Some(String::from("127.0.0.1:5683")),
                term: None,
                gateway_ms: Some(1_700_000_000_000),
                directive: Directive::SleepUntil { at_ms: 5 },
                pending: 3, lease_ms: None,
            })
            .unwrap();
            let mut mutated = reply.clone();
            for (at, byte) in flips {
                let n = mutated.len();
                mutated[at % n] = byte;
            }
            for bytes in [random, mutated] {
                if crate::wire::scan::check(&bytes).is_err() {
                    continue;
                }
                let ours = from_slice::<CheckInReply>(&bytes).ok();
                let theirs = ciborium::from_reader::<CheckInReply, _>(&bytes[..]).ok();
                if let Some(theirs) = theirs {
                    proptest::prop_assert_eq!(ours, Some(theirs));
                }
                let _ = from_slice::<DownlinkResponse>(&bytes);
                let _ = from_slice::<(i64, f64, Vec<bool>)>(&bytes);
            }
        }
    }
}
