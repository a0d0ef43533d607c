//! Sequences from CBOR arrays only, so the gateways' and the devices' decoders agree.

use alloc::vec::Vec;

use serde::{Deserialize, Deserializer};

/// A `Vec<T>` field read from a CBOR array and nothing else (`#[serde(deserialize_with =
/// "array_only")]` on every sequence field of the wire types that is not bytes).
///
/// serde lets ciborium (the gateways' decoder) read a byte string as a sequence of
/// `u8`s: `h''` as an empty list, `h'0102'` as `[1, 2]` for a `Vec<u32>`. The devices'
/// decoder (`lite`) refuses both. Two decoders that disagree on a message are a way
/// past a check made by one of them (found by the `cbor_wire` fuzz target under
/// AddressSanitizer: `{"records": h''}`).
pub(crate) fn array_only<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Array<T>(core::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Array<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // The hint is the array's declared length: trusted only up to a small bound.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    // `deserialize_any`, not `deserialize_seq`: ciborium's `deserialize_seq` itself reads
    // a byte string as a sequence. Here the item's own CBOR type decides, and a byte
    // string meets a visitor that takes arrays only.
    deserializer.deserialize_any(Array(core::marker::PhantomData))
}
