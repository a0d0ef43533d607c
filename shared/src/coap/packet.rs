//! A CoAP message as the engine holds it: coap-lite's [`Header`], the token, the options
//! in one sorted vector, the payload.
//!
//! coap-lite's own `Packet` keeps its options in a `BTreeMap` of `LinkedList`s: a parsed
//! GET made a B-tree node, a list node and a vector per option, and every lookup searched
//! the tree (~60 instructions); on a microcontroller the B-tree and list code is flash of
//! its own. Here the options are one vector of `(number, value)` pairs in the order they
//! go on the wire (by number; a repeated option's values in the order added), which is
//! what a message of a handful of options wants: one allocation for all of them, a scan
//! to find one, and no code but `Vec`'s. The API follows coap-lite's (`add_option`,
//! `get_first_option`, `set_option`, ...) so the engine reads as before; options are
//! named by anything that converts into their number (`u16` or coap-lite's
//! `CoapOption`). Parsing accepts and refuses exactly what coap-lite's `from_bytes` does
//! (a property test checks it on arbitrary bytes), and [`Packet::to_bytes`] writes
//! coap-lite's bytes (its writer is in `coap/encode.rs`). One difference: a cleared option is gone
//! (`get_option` is `None`), where coap-lite kept an empty list of values for it.

use alloc::vec::Vec;
use coap_lite::error::MessageError;
use coap_lite::{Header, HeaderRaw};

/// A CoAP message (RFC 7252 §3): header, token, options, payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Packet {
    /// Version, type, token length, code and message ID.
    pub header: Header,
    token: Vec<u8>,
    /// Sorted by number; equal numbers keep the order they were added in.
    options: Vec<(u16, Vec<u8>)>,
    /// The payload (empty: none).
    pub payload: Vec<u8>,
}

/// The values of one option number, in order.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a>(&'a [(u16, Vec<u8>)]);

impl<'a> Values<'a> {
    /// The values, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        self.0.iter().map(|(_, value)| value)
    }

    /// How many values there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: an option that is present has a value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first value.
    pub fn first(&self) -> Option<&'a Vec<u8>> {
        self.0.first().map(|(_, value)| value)
    }
}

impl<'a> IntoIterator for Values<'a> {
    type Item = &'a Vec<u8>;
    type IntoIter = core::iter::Map<
        core::slice::Iter<'a, (u16, Vec<u8>)>,
        fn(&'a (u16, Vec<u8>)) -> &'a Vec<u8>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(_, value)| value)
    }
}

/// Every option number of a packet with its values, in wire order.
pub struct Options<'a> {
    rest: &'a [(u16, Vec<u8>)],
}

impl<'a> Iterator for Options<'a> {
    type Item = (&'a u16, Values<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (number, _) = self.rest.first()?;
        let run = self.rest.iter().take_while(|(n, _)| n == number).count();
        let (values, rest) = self.rest.split_at(run);
        self.rest = rest;
        Some((number, Values(values)))
    }
}

/// An option delta or length from its nibble and the extended bytes after `*idx`
/// (RFC 7252 §3.1), moving `*idx` past them; `invalid` for nibble 15 or a value past
/// 16 bits, [`MessageError::InvalidOptionLength`] for missing bytes (as coap-lite).
fn extended(
    nibble: u8,
    buf: &[u8],
    idx: &mut usize,
    invalid: MessageError,
) -> Result<u16, MessageError> {
    match nibble {
        13 => {
            let extra = *buf.get(*idx).ok_or(MessageError::InvalidOptionLength)?;
            *idx += 1;
            Ok(u16::from(extra) + 13)
        }
        14 => {
            let extra = buf
                .get(*idx..*idx + 2)
                .ok_or(MessageError::InvalidOptionLength)?;
            *idx += 2;
            u16::from_be_bytes([extra[0], extra[1]])
                .checked_add(269)
                .ok_or(invalid)
        }
        15 => Err(invalid),
        small => Ok(u16::from(small)),
    }
}

impl Packet {
    /// The largest message [`Packet::to_bytes`] writes (coap-lite's limit: the IPv6
    /// minimum MTU).
    pub const MAX_SIZE: usize = 1280;

    /// An empty message: CON, code 0.00, message ID 0, no token, options or payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token.
    pub fn get_token(&self) -> &[u8] {
        &self.token
    }

    /// Sets the token (and the header's token length).
    pub fn set_token(&mut self, token: Vec<u8>) {
        self.header.set_token_length(token.len() as u8);
        self.token = token;
    }

    /// The range of the options numbered `number`.
    fn range(&self, number: u16) -> core::ops::Range<usize> {
        let start = self.options.partition_point(|(n, _)| *n < number);
        let len = self.options[start..]
            .iter()
            .take_while(|(n, _)| *n == number)
            .count();
        start..start + len
    }

    /// Every option number with its values, in wire order.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.options,
        }
    }

    /// The values of option `number`, if it is present.
    pub fn get_option(&self, number: impl Into<u16>) -> Option<Values<'_>> {
        let range = self.range(number.into());
        (!range.is_empty()).then(|| Values(&self.options[range]))
    }

    /// The first value of option `number`.
    pub fn get_first_option(&self, number: impl Into<u16>) -> Option<&Vec<u8>> {
        let number = number.into();
        // A scan: a message has a handful of options.
        self.options
            .iter()
            .find(|(n, _)| *n >= number)
            .filter(|(n, _)| *n == number)
            .map(|(_, value)| value)
    }

    /// Adds a value to option `number`, after any values it has.
    pub fn add_option(&mut self, number: impl Into<u16>, value: Vec<u8>) {
        let number = number.into();
        let at = self.options.partition_point(|(n, _)| *n <= number);
        self.options.insert(at, (number, value));
    }

    /// Replaces option `number`'s values with `values` (none: removes it).
    pub fn set_option(
        &mut self,
        number: impl Into<u16>,
        values: impl IntoIterator<Item = Vec<u8>>,
    ) {
        let number = number.into();
        let range = self.range(number);
        let at = range.start;
        self.options
            .splice(range, values.into_iter().map(|v| (number, v)));
        debug_assert!(self.options[at..].iter().all(|(n, _)| *n >= number));
    }

    /// Removes option `number`.
    pub fn clear_option(&mut self, number: impl Into<u16>) {
        let range = self.range(number.into());
        self.options.drain(range);
    }

    /// Parses a datagram. Accepts and refuses what coap-lite's `Packet::from_bytes`
    /// does, with its errors (the engine checks the rest of RFC 7252 §3 itself).
    pub fn from_bytes(buf: &[u8]) -> Result<Packet, MessageError> {
        let raw = HeaderRaw::try_from(buf).map_err(|_| MessageError::InvalidHeader)?;
        let header = Header::from_raw(&raw);
        let token_length = usize::from(header.get_token_length());
        if token_length > 8 {
            return Err(MessageError::InvalidTokenLength);
        }
        let options_start = 4 + token_length;
        let token = buf
            .get(4..options_start)
            .ok_or(MessageError::InvalidTokenLength)?
            .to_vec();

        let mut options = Vec::new();
        let mut idx = options_start;
        let mut number = 0u16;
        while idx < buf.len() {
            let byte = buf[idx];
            if byte == 0xFF {
                break;
            }
            idx += 1;
            let delta = extended(byte >> 4, buf, &mut idx, MessageError::InvalidOptionDelta)?;
            let length = usize::from(extended(
                byte & 0x0F,
                buf,
                &mut idx,
                MessageError::InvalidOptionLength,
            )?);
            number = number
                .checked_add(delta)
                .ok_or(MessageError::InvalidOptionDelta)?;
            let value = buf
                .get(idx..idx + length)
                .ok_or(MessageError::InvalidOptionLength)?;
            options.push((number, value.to_vec()));
            idx += length;
        }
        let payload = if idx < buf.len() {
            buf[idx + 1..].to_vec()
        } else {
            Vec::new()
        };
        Ok(Packet {
            header,
            token,
            options,
            payload,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;
    use coap_lite::{CoapOption, MessageClass, MessageType};
    use proptest::prelude::*;

    /// The same message as coap-lite's `Packet` (the reference encoder).
    pub(crate) fn lite(packet: &Packet) -> coap_lite::Packet {
        let mut lite = coap_lite::Packet::new();
        lite.header = packet.header.clone();
        lite.set_token(packet.get_token().to_vec());
        for (&number, values) in packet.options() {
            for value in values {
                lite.add_option(CoapOption::from(number), value.clone());
            }
        }
        lite.payload = packet.payload.clone();
        lite
    }

    /// Any message: every type, code and token length, options with one- and
    /// two-byte extended deltas and lengths (and repeated numbers), with and without
    /// a payload.
    pub(crate) fn packet_strategy() -> impl Strategy<Value = Packet> {
        let option = (
            prop_oneof![0u16..=20, 20u16..=300, 300u16..=2100, Just(65000u16)],
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..=14),
                proptest::collection::vec(any::<u8>(), 260..=280),
            ],
        );
        (
            0u8..=3,
            any::<u8>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=8),
            proptest::collection::vec(option, 0..6),
            prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>(), 1..40)
            ],
        )
            .prop_map(|(kind, code, mid, token, options, payload)| {
                let mut packet = Packet::new();
                packet.header.set_type(match kind {
                    0 => MessageType::Confirmable,
                    1 => MessageType::NonConfirmable,
                    2 => MessageType::Acknowledgement,
                    _ => MessageType::Reset,
                });
                packet.header.code = MessageClass::from(code);
                packet.header.message_id = mid;
                packet.set_token(token);
                for (number, value) in options {
                    packet.add_option(CoapOption::from(number), value);
                }
                packet.payload = payload;
                packet
            })
    }

    /// The options of a coap-lite packet, in wire order.
    fn lite_options(packet: &coap_lite::Packet) -> Vec<(u16, Vec<u8>)> {
        packet
            .options()
            .flat_map(|(&n, values)| values.iter().map(move |v| (n, v.clone())))
            .collect()
    }

    fn options(packet: &Packet) -> Vec<(u16, Vec<u8>)> {
        packet
            .options()
            .flat_map(|(&n, values)| values.iter().map(move |v| (n, v.clone())))
            .collect()
    }

    /// Parses `bytes` with both and checks they agree: the same error, or the same
    /// header, token, options and payload.
    fn parses_as_coap_lite(bytes: &[u8]) -> Result<(), TestCaseError> {
        match (
            Packet::from_bytes(bytes),
            coap_lite::Packet::from_bytes(bytes),
        ) {
            (Err(ours), Err(theirs)) => prop_assert_eq!(ours, theirs),
            (Ok(ours), Ok(theirs)) => {
                prop_assert_eq!(&ours.header, &theirs.header);
                prop_assert_eq!(ours.get_token(), theirs.get_token());
                prop_assert_eq!(options(&ours), lite_options(&theirs));
                prop_assert_eq!(&ours.payload, &theirs.payload);
            }
            (ours, theirs) => prop_assert!(false, "ours {ours:?}, coap-lite {theirs:?}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_bytes_parse_as_coap_lite_parses_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            parses_as_coap_lite(&bytes)?;
        }

        #[test]
        fn any_message_parses_as_coap_lite_parses_it(
            packet in packet_strategy(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let bytes = packet.to_bytes_unlimited();
            parses_as_coap_lite(&bytes)?;
            // Truncated anywhere, and with one byte changed.
            parses_as_coap_lite(&bytes[..cut.index(bytes.len() + 1)])?;
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 0x5a;
            parses_as_coap_lite(&flipped)?;
        }

        /// Adding, replacing and removing options leaves what coap-lite's packet holds
        /// after the same calls (but a removed option is absent, where coap-lite keeps
        /// an empty list of values for it).
        #[test]
        fn option_edits_match_coap_lite(
            packet in packet_strategy(),
            edits in proptest::collection::vec((0u8..3, 0u16..300, any::<u8>()), 0..8),
        ) {
            let mut ours = packet.clone();
            let mut theirs = lite(&packet);
            for (kind, number, value) in edits {
                let option = coap_lite::CoapOption::from(number);
                match kind {
                    0 => {
                        ours.add_option(number, vec![value]);
                        theirs.add_option(option, vec![value]);
                    }
                    1 => {
                        ours.set_option(number, [vec![value], vec![value, value]]);
                        theirs.set_option(option, [vec![value], vec![value, value]].into_iter().collect());
                    }
                    _ => {
                        ours.clear_option(number);
                        theirs.clear_option(option);
                    }
                }
                prop_assert_eq!(options(&ours), lite_options(&theirs));
                prop_assert_eq!(
                    ours.get_first_option(number),
                    theirs.get_first_option(option)
                );
                prop_assert_eq!(
                    ours.get_option(number).map(|v| v.iter().cloned().collect::<Vec<_>>()),
                    // coap-lite keeps a cleared option as an empty list (`Some([])`).
                    theirs
                        .get_option(option)
                        .filter(|v| !v.is_empty())
                        .map(|v| v.iter().cloned().collect::<Vec<_>>())
                );
            }
        }
    }
}
