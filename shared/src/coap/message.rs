//! Requests, responses and codes: thin typed views over coap-lite's [`Packet`].
//!
//! The engine sets the message type, message ID and token; these types carry only what
//! an application decides: the code, the options and the payload.

use super::option::{self, decode_uint, encode_uint};
use super::Packet;
use alloc::{string::String, vec::Vec};
use coap_lite::MessageClass;
use core::fmt;

/// A CoAP code, as on the wire: class in the top three bits, detail in the low five.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

#[allow(missing_docs)]
impl Code {
    pub const EMPTY: Code = Code(0x00);
    pub const GET: Code = Code(0x01);
    pub const POST: Code = Code(0x02);
    pub const PUT: Code = Code(0x03);
    pub const DELETE: Code = Code(0x04);
    pub const FETCH: Code = Code(0x05);
    pub const CREATED: Code = Code(0x41);
    pub const DELETED: Code = Code(0x42);
    pub const VALID: Code = Code(0x43);
    pub const CHANGED: Code = Code(0x44);
    pub const CONTENT: Code = Code(0x45);
    pub const CONTINUE: Code = Code(0x5F);
    pub const BAD_REQUEST: Code = Code(0x80);
    pub const UNAUTHORIZED: Code = Code(0x81);
    pub const BAD_OPTION: Code = Code(0x82);
    pub const FORBIDDEN: Code = Code(0x83);
    pub const NOT_FOUND: Code = Code(0x84);
    pub const METHOD_NOT_ALLOWED: Code = Code(0x85);
    pub const NOT_ACCEPTABLE: Code = Code(0x86);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code(0x88);
    pub const CONFLICT: Code = Code(0x89);
    pub const PRECONDITION_FAILED: Code = Code(0x8C);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code(0x8D);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code(0x8F);
    pub const INTERNAL_SERVER_ERROR: Code = Code(0xA0);
    pub const NOT_IMPLEMENTED: Code = Code(0xA1);
    pub const SERVICE_UNAVAILABLE: Code = Code(0xA3);
    pub const GATEWAY_TIMEOUT: Code = Code(0xA4);
    pub const PROXYING_NOT_SUPPORTED: Code = Code(0xA5);
}

impl Code {
    /// A code from its dotted parts, e.g. `Code::new(4, 4)` is 4.04.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code((class << 5) | (detail & 0x1F))
    }
    /// The class: 0 request, 2 success, 4 client error, 5 server error.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }
    /// The detail (the part after the dot).
    pub const fn detail(self) -> u8 {
        self.0 & 0x1F
    }
    /// 0.00: an empty message (ACK, RST or ping).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Class 0 and not empty: a request method (known or not).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }
    /// Classes 2, 4 and 5.
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }
    /// Class 2.
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Method::from_code(*self) {
            Some(m) => write!(f, "{m}"),
            None => write!(f, "{}.{:02}", self.class(), self.detail()),
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A request method the engine knows (RFC 7252 and RFC 8132).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Fetch,
    Patch,
    IPatch,
}

impl Method {
    /// The method's code.
    pub const fn code(self) -> Code {
        Code(match self {
            Method::Get => 1,
            Method::Post => 2,
            Method::Put => 3,
            Method::Delete => 4,
            Method::Fetch => 5,
            Method::Patch => 6,
            Method::IPatch => 7,
        })
    }
    /// The method a code names, if any.
    pub const fn from_code(code: Code) -> Option<Method> {
        Some(match code.0 {
            1 => Method::Get,
            2 => Method::Post,
            3 => Method::Put,
            4 => Method::Delete,
            5 => Method::Fetch,
            6 => Method::Patch,
            7 => Method::IPatch,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Fetch => "FETCH",
            Method::Patch => "PATCH",
            Method::IPatch => "iPATCH",
        })
    }
}

/// Options, payload and code shared by requests and responses.
macro_rules! common_accessors {
    () => {
        /// The code.
        pub fn code(&self) -> Code {
            Code(self.packet.header.code.into())
        }
        /// The payload.
        pub fn payload(&self) -> &[u8] {
            &self.packet.payload
        }
        /// Takes the payload out, leaving it empty.
        pub fn take_payload(&mut self) -> Vec<u8> {
            core::mem::take(&mut self.packet.payload)
        }
        /// Replaces the payload.
        pub fn set_payload(&mut self, payload: Vec<u8>) {
            self.packet.payload = payload;
        }
        /// The first value of option `number`.
        pub fn option(&self, number: u16) -> Option<&[u8]> {
            if !self.present.may_contain(number) {
                return None;
            }
            self.packet.get_first_option(number).map(Vec::as_slice)
        }
        /// Every value of option `number`, in order.
        pub fn options(&self, number: u16) -> impl Iterator<Item = &[u8]> {
            self.present
                .may_contain(number)
                .then(|| self.packet.get_option(number))
                .flatten()
                .into_iter()
                .flatten()
                .map(Vec::as_slice)
        }
        /// The first value of a uint option.
        pub fn uint_option(&self, number: u16) -> Option<u32> {
            self.option(number).and_then(decode_uint)
        }
        /// Adds a value to option `number` (after any values it has).
        pub fn add_option(&mut self, number: u16, value: impl Into<Vec<u8>>) {
            self.present.insert(number);
            self.packet.add_option(number, value.into());
        }
        /// Replaces option `number` with one value.
        pub fn set_option(&mut self, number: u16, value: impl Into<Vec<u8>>) {
            self.packet.clear_option(number);
            self.add_option(number, value);
        }
        /// Replaces option `number` with one uint value.
        pub fn set_uint_option(&mut self, number: u16, value: u32) {
            self.set_option(number, encode_uint(value));
        }
        /// Removes every value of option `number`.
        pub fn remove_option(&mut self, number: u16) {
            self.packet.clear_option(number);
        }
        /// The Content-Format option.
        pub fn content_format(&self) -> Option<u16> {
            self.uint_option(option::CONTENT_FORMAT)
                .and_then(|v| u16::try_from(v).ok())
        }
        /// The Observe option.
        pub fn observe(&self) -> Option<u32> {
            self.uint_option(option::OBSERVE)
        }
        /// The underlying coap-lite packet (type, message ID and token are the engine's).
        pub fn packet(&self) -> &Packet {
            &self.packet
        }
        /// Builder form of [`Self::set_payload`].
        pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
            self.packet.payload = payload.into();
            self
        }
        /// Builder form of setting the Content-Format option.
        pub fn with_content_format(mut self, format: u16) -> Self {
            self.set_uint_option(option::CONTENT_FORMAT, u32::from(format));
            self
        }
        /// Builder form of [`Self::add_option`].
        pub fn with_option(mut self, number: u16, value: impl Into<Vec<u8>>) -> Self {
            self.add_option(number, value);
            self
        }
    };
}

/// Which option numbers a message may hold: bit `n % 64` is set for every option `n`
/// it was given (and stays set when the option is removed). A clear bit answers "not
/// there" without a search of the packet's options: the engine asks a request for about
/// ten options, most of them absent, and each search cost ~60 instructions.
#[derive(Debug, Clone, Copy, Default)]
struct OptionMask(u64);

impl OptionMask {
    /// The options `packet` holds.
    fn of(packet: &Packet) -> Self {
        let mut mask = OptionMask::default();
        for (&number, _) in packet.options() {
            mask.insert(number);
        }
        mask
    }

    fn insert(&mut self, number: u16) {
        self.0 |= 1 << (number % 64);
    }

    /// `false` only if the message holds no option `number`.
    fn may_contain(self, number: u16) -> bool {
        self.0 & 1 << (number % 64) != 0
    }
}

/// A request: method, URI (path and query options), other options and payload.
#[derive(Debug, Clone)]
pub struct Request {
    packet: Packet,
    confirmable: bool,
    present: OptionMask,
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        self.packet == other.packet && self.confirmable == other.confirmable
    }
}

impl Request {
    /// A confirmable request for `path` (`"a/b"` or `"/a/b"`; a `?query` part becomes
    /// Uri-Query options split at `&`).
    pub fn new(method: Method, path: &str) -> Self {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(method.code().0);
        let mut request = Request {
            packet,
            confirmable: true,
            present: OptionMask::default(),
        };
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            request.add_option(option::URI_PATH, segment.as_bytes());
        }
        for q in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|q| !q.is_empty())
        {
            request.add_option(option::URI_QUERY, q.as_bytes());
        }
        request
    }

    /// A GET request.
    pub fn get(path: &str) -> Self {
        Self::new(Method::Get, path)
    }
    /// A POST request.
    pub fn post(path: &str) -> Self {
        Self::new(Method::Post, path)
    }
    /// A PUT request.
    pub fn put(path: &str) -> Self {
        Self::new(Method::Put, path)
    }
    /// A DELETE request.
    pub fn delete(path: &str) -> Self {
        Self::new(Method::Delete, path)
    }

    /// Wraps a decoded packet (as received).
    #[cfg(any(feature = "server", test))]
    pub(crate) fn from_packet(packet: Packet, confirmable: bool) -> Self {
        Request {
            present: OptionMask::of(&packet),
            packet,
            confirmable,
        }
    }

    common_accessors!();

    /// The method; `None` for a request code this engine does not know.
    pub fn method(&self) -> Option<Method> {
        Method::from_code(self.code())
    }

    /// Whether the request is sent (or was received) confirmable.
    pub fn is_confirmable(&self) -> bool {
        self.confirmable
    }

    /// Sends the request as NON (no retransmission, no acknowledgement).
    pub fn non_confirmable(mut self) -> Self {
        self.confirmable = false;
        self
    }

    /// Asks to observe the resource (Observe: 0, RFC 7641).
    pub fn with_observe(mut self) -> Self {
        self.set_uint_option(option::OBSERVE, 0);
        self
    }

    /// The Uri-Path segments.
    pub fn path_segments(&self) -> impl Iterator<Item = &str> {
        self.options(option::URI_PATH)
            .map(|s| core::str::from_utf8(s).unwrap_or("\u{FFFD}"))
    }

    /// The path, segments joined by `/`, without a leading slash.
    pub fn path(&self) -> String {
        join(self.path_segments(), '/')
    }

    /// The Uri-Query values.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.options(option::URI_QUERY)
            .map(|s| core::str::from_utf8(s).unwrap_or("\u{FFFD}"))
    }

    /// The resource this request names, as `path` or `path?q1&q2`: the key under which
    /// observers are registered and block-wise bodies cached.
    pub fn resource_key(&self) -> String {
        // One buffer (most keys are short) instead of one each for the path and the
        // queries and their copy.
        let mut key = String::with_capacity(32);
        for (i, segment) in self.path_segments().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(segment);
        }
        // `?` and the queries joined by `&`, unless that join is empty.
        let mark = key.len();
        key.push('?');
        for (i, query) in self.queries().enumerate() {
            if i > 0 {
                key.push('&');
            }
            key.push_str(query);
        }
        if key.len() == mark + 1 {
            key.truncate(mark);
        }
        key
    }

    /// Builder form of adding a Uri-Query option.
    pub fn with_query(self, query: &str) -> Self {
        self.with_option(option::URI_QUERY, query.as_bytes())
    }
}

/// A response: code, options and payload.
#[derive(Debug, Clone)]
pub struct Response {
    packet: Packet,
    present: OptionMask,
}

impl PartialEq for Response {
    fn eq(&self, other: &Self) -> bool {
        self.packet == other.packet
    }
}

impl Response {
    /// A response with `code` and no payload.
    pub fn new(code: Code) -> Self {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(code.0);
        Response {
            packet,
            present: OptionMask::default(),
        }
    }

    /// 2.05 Content with a payload.
    pub fn content(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(Code::CONTENT).with_payload(payload)
    }

    /// 2.05 Content with a CBOR payload (Content-Format 60).
    pub fn cbor(payload: impl Into<Vec<u8>>) -> Self {
        Self::content(payload).with_content_format(super::CONTENT_FORMAT_CBOR)
    }

    /// An error response whose body is a diagnostic text, as RFC 7252 §5.5.2 allows.
    pub fn error(code: Code, reason: &str) -> Self {
        Self::new(code).with_payload(reason.as_bytes())
    }

    pub(crate) fn from_packet(packet: Packet) -> Self {
        Response {
            present: OptionMask::of(&packet),
            packet,
        }
    }

    /// The same code and options with no payload (cheaper than a clone of a large
    /// response).
    #[cfg(any(feature = "server", test))]
    pub(crate) fn without_payload(&self) -> Response {
        let mut packet = Packet::new();
        packet.header = self.packet.header.clone();
        for (&number, values) in self.packet.options() {
            packet.set_option(number, values.iter().cloned());
        }
        Response {
            packet,
            present: self.present,
        }
    }

    #[cfg(any(feature = "server", test))]
    pub(crate) fn into_packet(self) -> Packet {
        self.packet
    }

    common_accessors!();

    /// Builder form of setting Max-Age (seconds).
    pub fn with_max_age(mut self, seconds: u32) -> Self {
        self.set_uint_option(option::MAX_AGE, seconds);
        self
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>, sep: char) -> String {
    let mut out = String::new();
    for (i, part) in parts.enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The resource key is the path, then `?` and the queries joined by `&` unless
        /// that join is empty (empty and non-UTF-8 segments and queries included).
        #[test]
        fn a_resource_key_is_the_path_and_its_joined_queries(
            segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 0..4),
            queries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 0..4),
        ) {
            let mut request = Request::get("");
            for s in &segments {
                request.add_option(option::URI_PATH, s.clone());
            }
            for q in &queries {
                request.add_option(option::URI_QUERY, q.clone());
            }
            let mut expected = request.path();
            let query = join(request.queries(), '&');
            if !query.is_empty() {
                expected.push('?');
                expected.push_str(&query);
            }
            prop_assert_eq!(request.resource_key(), expected);
        }

        /// The option mask never hides an option: every number reads as the packet
        /// holds it, whether the options came with a received packet, were added, or
        /// were removed and added again (numbers 64 apart share a bit).
        #[test]
        fn option_lookups_read_what_the_packet_holds(
            received in proptest::collection::vec((0u16..400, any::<u8>()), 0..8),
            added in proptest::collection::vec((0u16..400, any::<u8>()), 0..8),
            removed in proptest::collection::vec(0u16..400, 0..4),
        ) {
            let mut packet = Packet::new();
            for (number, value) in &received {
                packet.add_option(*number, alloc::vec![*value]);
            }
            let mut request = Request::from_packet(packet.clone(), true);
            let mut response = Response::from_packet(packet);
            for number in &removed {
                request.remove_option(*number);
                response.remove_option(*number);
            }
            for (number, value) in &added {
                request.add_option(*number, alloc::vec![*value]);
                response.add_option(*number, alloc::vec![*value]);
            }
            for number in 0u16..400 {
                let expected = request
                    .packet()
                    .get_option(number)
                    .map(|values| values.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                let first = expected.first().map(Vec::as_slice);
                prop_assert_eq!(request.option(number), first);
                prop_assert_eq!(request.options(number).collect::<Vec<_>>(), expected.iter().map(Vec::as_slice).collect::<Vec<_>>());
                prop_assert_eq!(response.option(number), first);
            }
        }
    }

    #[test]
    fn request_splits_path_and_query() {
        let r = Request::get("/z/a/b?children&x=1");
        assert_eq!(r.path(), "z/a/b");
        assert_eq!(r.path_segments().count(), 3);
        assert_eq!(r.queries().collect::<Vec<_>>(), ["children", "x=1"]);
        assert_eq!(r.resource_key(), "z/a/b?children&x=1");
        assert_eq!(r.method(), Some(Method::Get));
        assert!(r.is_confirmable());
        assert_eq!(Request::put("ps").resource_key(), "ps");
    }

    #[test]
    fn codes_print_dotted() {
        assert_eq!(alloc::format!("{}", Code::NOT_FOUND), "4.04");
        assert_eq!(alloc::format!("{}", Code::CONTENT), "2.05");
        assert_eq!(alloc::format!("{}", Code::GET), "GET");
        assert_eq!(Code::new(4, 12), Code::PRECONDITION_FAILED);
        assert!(Code::CONTINUE.is_success());
        assert!(Code(0x08).is_request());
        assert!(!Code(0x20).is_response());
    }

    #[test]
    fn response_options_and_payload() {
        let r = Response::cbor(alloc::vec![0xa0]).with_max_age(30);
        assert_eq!(r.code(), Code::CONTENT);
        assert_eq!(r.content_format(), Some(60));
        assert_eq!(r.uint_option(option::MAX_AGE), Some(30));
        assert_eq!(r.payload(), &[0xa0]);
    }
}
