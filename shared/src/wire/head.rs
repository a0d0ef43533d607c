//! The head of a CBOR data item (RFC 8949 §3): major type and argument in the shortest
//! form, as ciborium writes it. One definition for both of our CBOR writers: the serde
//! serializer of gateways (`lite_ser`) and the device's hand encoder (`hand_enc`).

use alloc::vec::Vec;

/// Appends the head of major type `major` (0–7) with argument `n`.
#[inline]
pub(super) fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}
