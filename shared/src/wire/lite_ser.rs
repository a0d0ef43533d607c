//! A small serde serializer writing CBOR into a `Vec<u8>`: the same bytes as ciborium's
//! (minimal-length heads, structs as maps keyed by field name, enums externally tagged,
//! `None` and unit as null, definite lengths where serde knows them), in a fraction of
//! its instructions (ciborium converts every head through its `Header`/`Title` types and
//! a generic writer: ~100 instructions an item; here a few).
//!
//! What it does not write itself it refuses with [`Unsupported`]: floats, integers past
//! 64 bits, ciborium's tag wrapper and a value's own serialization error. The caller
//! ([`super::codec::encode_into`]) then encodes the whole value again with ciborium, so
//! the output never depends on which one wrote it. None of the wire messages has a float
//! or a tag, so on gateways ciborium's serializer only runs for foreign values. The
//! firmware keeps ciborium alone (one serializer's code in flash, not two).

use alloc::vec::Vec;
use core::fmt;
use serde::ser::{self, Serialize};

/// A value this serializer leaves to ciborium (see the module docs).
#[derive(Debug)]
pub(crate) struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not written by the small CBOR serializer")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Unsupported
    }
}

/// Appends the CBOR of `value` to `out`. On error `out` may hold part of it: the caller
/// truncates.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Unsupported> {
    value.serialize(&mut Writer(out))
}

/// CBOR major types.
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const BREAK: u8 = 0xff;
/// The additional information of an indefinite-length array or map.
const INDEFINITE: u8 = 31;

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    /// A head: major type and argument, in the fewest bytes (as ciborium writes it).
    #[inline]
    fn head(&mut self, major: u8, n: u64) {
        super::head::write_head(self.0, major, n);
    }

    #[inline]
    fn text(&mut self, s: &str) {
        self.head(TEXT, s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// An array or map head, indefinite when the length is unknown; whether it needs a
    /// break at its end.
    fn collection(&mut self, major: u8, len: Option<usize>) -> bool {
        match len {
            Some(n) => {
                self.head(major, n as u64);
                false
            }
            None => {
                self.0.push(major << 5 | INDEFINITE);
                true
            }
        }
    }
}

/// The fields or elements of a collection being written.
struct Collection<'w, 'a> {
    writer: &'w mut Writer<'a>,
    /// Indefinite length: a break ends it.
    ending: bool,
}

impl Collection<'_, '_> {
    fn end(self) -> Result<(), Unsupported> {
        if self.ending {
            self.writer.0.push(BREAK);
        }
        Ok(())
    }
}

/// ciborium's marker for its tag wrapper (`ciborium::tag`): left to ciborium.
const TAG_MARKER: &str = "@@TAG@@";

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Collection<'w, 'a>;
    type SerializeTuple = Collection<'w, 'a>;
    type SerializeTupleStruct = Collection<'w, 'a>;
    type SerializeTupleVariant = Collection<'w, 'a>;
    type SerializeMap = Collection<'w, 'a>;
    type SerializeStruct = Collection<'w, 'a>;
    type SerializeStructVariant = Collection<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.0.push(if v { TRUE } else { FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        if v < 0 {
            self.head(NEGATIVE, v as u64 ^ !0);
        } else {
            self.head(UNSIGNED, v as u64);
        }
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Unsupported> {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => match u64::try_from(v) {
                Ok(v) => self.serialize_u64(v),
                // Past 64 bits (or a negative below -2^63): ciborium decides how.
                Err(_) => Err(Unsupported),
            },
        }
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.head(UNSIGNED, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Unsupported> {
        u64::try_from(v)
            .map_err(|_| Unsupported)
            .and_then(|v| self.serialize_u64(v))
    }
    fn serialize_f32(self, _v: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _v: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        self.text(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        self.text(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        self.head(BYTES, v.len() as u64);
        self.0.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.0.push(NULL);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.text(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        if name == TAG_MARKER {
            return Err(Unsupported);
        }
        self.head(MAP, 1);
        self.text(variant);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Collection<'w, 'a>, Unsupported> {
        let ending = self.collection(ARRAY, len);
        Ok(Collection {
            writer: self,
            ending,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Collection<'w, 'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Collection<'w, 'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Collection<'w, 'a>, Unsupported> {
        if name == TAG_MARKER {
            return Err(Unsupported);
        }
        self.head(MAP, 1);
        self.text(variant);
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Collection<'w, 'a>, Unsupported> {
        let ending = self.collection(MAP, len);
        Ok(Collection {
            writer: self,
            ending,
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Collection<'w, 'a>, Unsupported> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Collection<'w, 'a>, Unsupported> {
        self.head(MAP, 1);
        self.text(variant);
        self.serialize_map(Some(len))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The collection traits whose items are values alone: each writes the value.
macro_rules! values {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Collection<'_, '_> {
            type Ok = ();
            type Error = Unsupported;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
                value.serialize(&mut *self.writer)
            }
            fn end(self) -> Result<(), Unsupported> {
                Collection::end(self)
            }
        }
    )*};
}
values!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// The struct traits: each field is its name (text), then its value.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Collection<'_, '_> {
            type Ok = ();
            type Error = Unsupported;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Unsupported> {
                self.writer.text(key);
                value.serialize(&mut *self.writer)
            }
            fn end(self) -> Result<(), Unsupported> {
                Collection::end(self)
            }
        }
    )*};
}
fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Collection<'_, '_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        key.serialize(&mut *self.writer)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), Unsupported> {
        Collection::end(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::String;
    use alloc::vec;
    use ciborium::Value;
    use proptest::prelude::*;
    use serde::Serialize;

    fn ciborium_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn lite_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Unsupported> {
        let mut out = Vec::new();
        encode_into(value, &mut out).map(|()| out)
    }

    /// Every shape serde derives, with the edges of every integer width.
    #[derive(Serialize)]
    enum Shape {
        Unit,
        Newtype(u16),
        Tuple(i8, String),
        Struct {
            a: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            #[serde(with = "serde_bytes")]
            b: Vec<u8>,
        },
    }

    #[derive(Serialize)]
    struct Everything {
        shapes: Vec<Shape>,
        unsigned: Vec<u64>,
        signed: Vec<i64>,
        small: (u8, u16, u32, i16, i32),
        wide: (i128, u128),
        flags: (bool, bool, ()),
        ch: char,
        text: String,
        map: BTreeMap<String, Option<Vec<u8>>>,
        unit_struct: Empty,
        newtype: Wrapper,
    }

    #[derive(Serialize)]
    struct Empty;

    #[derive(Serialize)]
    struct Wrapper(u32);

    #[test]
    fn every_serde_shape_encodes_as_ciborium_does() {
        let edges = [
            0,
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
        ];
        let value = Everything {
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(300),
                Shape::Tuple(-1, "ü".into()),
                Shape::Struct {
                    a: None,
                    skipped: None,
                    b: vec![0; 300],
                },
                Shape::Struct {
                    a: Some(u64::MAX),
                    skipped: Some(1),
                    b: vec![],
                },
            ],
            unsigned: edges.iter().copied().chain([u64::MAX]).collect(),
            signed: edges
                .iter()
                .map(|&e| -(e as i64) - 1)
                .chain([i64::MIN, i64::MAX, -24, -25])
                .collect(),
            small: (7, 1000, 70_000, -300, -70_000),
            wide: (-5, u64::MAX as u128),
            flags: (true, false, ()),
            ch: '€',
            text: "x".repeat(70_000),
            map: [("k".into(), Some(vec![1, 2])), ("n".into(), None)].into(),
            unit_struct: Empty,
            newtype: Wrapper(42),
        };
        assert_eq!(lite_bytes(&value).unwrap(), ciborium_bytes(&value));
    }

    #[test]
    fn what_it_does_not_write_is_refused_whole() {
        assert!(lite_bytes(&1.5f64).is_err());
        assert!(lite_bytes(&vec![Some(0.5f32)]).is_err());
        assert!(lite_bytes(&(u64::MAX as u128 + 1)).is_err());
        assert!(lite_bytes(&(i64::MIN as i128 - 1)).is_err());
        assert!(lite_bytes(&Value::Tag(1, Box::new(Value::Null))).is_err());
        // And `encode` still gives ciborium's bytes for them.
        let tagged = (
            7u8,
            Value::Tag(32, Box::new(Value::Text("u".into()))),
            2.5f64,
        );
        assert_eq!(
            crate::wire::encode(&tagged).unwrap(),
            ciborium_bytes(&tagged)
        );
    }

    /// Any CBOR value without floats or tags (ciborium's `Value`: maps and arrays of
    /// any length and nesting, integers of every width, bytes, text, bools, null).
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<u64>().prop_map(|n| Value::Integer(n.into())),
            any::<i64>().prop_map(|n| Value::Integer(n.into())),
            (0u64..300).prop_map(|n| Value::Integer(n.into())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            ".{0,40}".prop_map(Value::Text),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 64, 30, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..30).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..30).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_encodes_as_ciborium_does(v in value()) {
            prop_assert_eq!(lite_bytes(&v).unwrap(), ciborium_bytes(&v));
        }
    }
}
