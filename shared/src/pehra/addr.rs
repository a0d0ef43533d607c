//! `ip:port`, `[ipv6%scope]:port` and bare addresses parsed as `core::net`'s `FromStr`
//! parses them, in less code: a firmware reads the Pehredar's address out of every
//! check-in reply, and core's parser (generic over its closures and number types) is
//! ~2.2 KiB of its flash.
//! The same strings are accepted, with the same values: a host test compares the two on
//! every short string over the characters that matter and on mutated addresses.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The text being read, as bytes (core's parser reads bytes too: a non-ASCII byte is no
/// digit and no separator).
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }

    /// A number in `radix`: at least one digit, at most `max_digits` (0: no limit), at
    /// most `max`, a leading zero only with `zero_prefix` (or alone). On failure nothing
    /// is read.
    fn number(
        &mut self,
        radix: u32,
        max_digits: usize,
        zero_prefix: bool,
        max: u32,
    ) -> Option<u32> {
        let start = self.i;
        let mut value = 0u64;
        while let Some(d) = self
            .s
            .get(self.i)
            .and_then(|&b| (b as char).to_digit(radix))
        {
            self.i += 1;
            value = value * radix as u64 + d as u64;
            // The value only grows with more digits: over `max` now is over it at the end.
            if value > max as u64 || (max_digits != 0 && self.i - start > max_digits) {
                self.i = start;
                return None;
            }
        }
        let digits = self.i - start;
        if digits == 0 || (!zero_prefix && digits > 1 && self.s[start] == b'0') {
            self.i = start;
            return None;
        }
        Some(value as u32)
    }

    /// `f`, or nothing read.
    fn atomic<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.i;
        let r = f(self);
        if r.is_none() {
            self.i = start;
        }
        r
    }

    /// Four decimal octets (no leading zeros), dot-separated.
    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.atomic(|p| {
            let mut o = [0u8; 4];
            for (i, slot) in o.iter_mut().enumerate() {
                if i > 0 && !p.eat(b'.') {
                    return None;
                }
                *slot = p.number(10, 3, false, 255)? as u8;
            }
            Some(Ipv4Addr::from(o))
        })
    }

    /// Up to `groups.len()` colon-separated hex groups, the last two possibly an IPv4
    /// address: how many were read, and whether an IPv4 address ended them.
    fn groups(&mut self, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for i in 0..limit {
            if i + 1 < limit {
                if let Some(v4) = self.atomic(|p| {
                    if i > 0 && !p.eat(b':') {
                        None
                    } else {
                        p.ipv4()
                    }
                }) {
                    let [a, b, c, d] = v4.octets();
                    groups[i] = u16::from_be_bytes([a, b]);
                    groups[i + 1] = u16::from_be_bytes([c, d]);
                    return (i + 2, true);
                }
            }
            match self.atomic(|p| {
                if i > 0 && !p.eat(b':') {
                    return None;
                }
                p.number(16, 4, true, 0xffff)
            }) {
                Some(g) => groups[i] = g as u16,
                None => return (i, false),
            }
        }
        (limit, false)
    }

    /// Eight groups, or fewer with one `::`.
    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        self.atomic(|p| {
            let mut head = [0u16; 8];
            let (head_size, head_ipv4) = p.groups(&mut head);
            if head_size == 8 {
                return Some(head.into());
            }
            if head_ipv4 || !p.eat(b':') || !p.eat(b':') {
                return None;
            }
            let mut tail = [0u16; 7];
            let (tail_size, _) = p.groups(&mut tail[..7 - head_size]);
            head[8 - tail_size..].copy_from_slice(&tail[..tail_size]);
            Some(head.into())
        })
    }

    fn port(&mut self) -> Option<u16> {
        self.atomic(|p| {
            if !p.eat(b':') {
                return None;
            }
            p.number(10, 0, true, u16::MAX as u32).map(|n| n as u16)
        })
    }

    fn socket_v4(&mut self) -> Option<SocketAddrV4> {
        self.atomic(|p| Some(SocketAddrV4::new(p.ipv4()?, p.port()?)))
    }

    fn socket_v6(&mut self) -> Option<SocketAddrV6> {
        self.atomic(|p| {
            if !p.eat(b'[') {
                return None;
            }
            let ip = p.ipv6()?;
            let scope = p
                .atomic(|p| {
                    if !p.eat(b'%') {
                        return None;
                    }
                    p.number(10, 0, true, u32::MAX)
                })
                .unwrap_or(0);
            if !p.eat(b']') {
                return None;
            }
            Some(SocketAddrV6::new(ip, p.port()?, 0, scope))
        })
    }

    /// `f` over the whole text.
    fn all<T>(s: &str, f: impl FnOnce(&mut Cursor<'_>) -> Option<T>) -> Option<T> {
        let mut p = Cursor {
            s: s.as_bytes(),
            i: 0,
        };
        let r = f(&mut p)?;
        (p.i == p.s.len()).then_some(r)
    }
}

/// `s.parse::<SocketAddr>().ok()`.
pub fn parse_socket_addr(s: &str) -> Option<SocketAddr> {
    Cursor::all(s, |p| {
        p.socket_v4()
            .map(SocketAddr::V4)
            .or_else(|| p.socket_v6().map(SocketAddr::V6))
    })
}

/// `s.parse::<Ipv4Addr>().ok()`.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    Cursor::all(s, |p| p.ipv4())
}

/// `s.parse::<Ipv6Addr>().ok()`.
pub fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    Cursor::all(s, |p| p.ipv6())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn same(s: &str) {
        assert_eq!(parse_socket_addr(s), s.parse::<SocketAddr>().ok(), "{s:?}");
        assert_eq!(parse_ipv4(s), s.parse::<Ipv4Addr>().ok(), "{s:?}");
        assert_eq!(parse_ipv6(s), s.parse::<Ipv6Addr>().ok(), "{s:?}");
        // The address inside brackets too.
        let inner = s.trim_start_matches('[');
        let inner = inner.split(']').next().unwrap_or(inner);
        assert_eq!(
            parse_ipv6(inner),
            inner.parse::<Ipv6Addr>().ok(),
            "{inner:?}"
        );
    }

    #[test]
    fn known_addresses() {
        for s in [
            "127.0.0.1:5683",
            "10.0.2.2:0",
            "255.255.255.255:65535",
            "256.0.0.1:1",
            "01.2.3.4:5",
            "0.0.0.0:00000000080",
            "1.2.3.4:65536",
            "1.2.3.4",
            "[::1]:5683",
            "[fd00::1]:5683",
            "[::]:1",
            "[1:2:3:4:5:6:7:8]:9",
            "[1:2:3:4:5:6:7:8:9]:9",
            "[1::2:3:4:5:6:7]:9",
            "[1:2:3:4:5:6:7::]:9",
            "[::ffff:1.2.3.4]:9",
            "[1:2:3:4:5:6:1.2.3.4]:9",
            "[1:2:3:4:5:6:7:1.2.3.4]:9",
            "[::1.2.3.4%7]:9",
            "[fe80::1%4294967295]:9",
            "[fe80::1%4294967296]:9",
            "[00000::1]:9",
            "[abcd:EF01::]:80",
            "[1.2.3.4]:80",
            "[::1]",
            "::1",
            "",
            ":",
            "1.2.3.4:5x",
            "1.2.3.4 :5",
            "é.1.1.1:1",
        ] {
            same(s);
        }
    }

    /// Every string up to 6 characters over the characters the parsers care about.
    #[test]
    fn every_short_string() {
        let alphabet = b"019af:.[]%";
        let mut s = Vec::new();
        fn walk(s: &mut Vec<u8>, alphabet: &[u8], left: usize) {
            same(core::str::from_utf8(s).unwrap());
            if left == 0 {
                return;
            }
            for &c in alphabet {
                s.push(c);
                walk(s, alphabet, left - 1);
                s.pop();
            }
        }
        walk(&mut s, alphabet, 6);
    }

    /// Valid addresses with one or two characters replaced, inserted or removed.
    #[test]
    fn mutated_addresses() {
        let seeds = [
            "127.0.0.1:5683",
            "199.255.10.0:65535",
            "[fd00::1]:5683",
            "[1:2:3:4:5:6:7:8]:9",
            "[::ffff:10.0.2.2%12]:70",
            "[a:b::c:1.2.3.4]:1",
            "[1:22:333:4444::]:0",
        ];
        let alphabet = b"0159afAF:.[]%x";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for seed in seeds {
            same(seed);
            for _ in 0..20_000 {
                let mut s: Vec<u8> = seed.bytes().collect();
                for _ in 0..1 + next(2) {
                    let at = next(s.len() + 1);
                    let c = alphabet[next(alphabet.len())];
                    match next(3) {
                        0 if at < s.len() => s[at] = c,
                        1 => s.insert(at, c),
                        _ if at < s.len() => {
                            s.remove(at);
                        }
                        _ => s.push(c),
                    }
                }
                same(&String::from_utf8(s).unwrap());
            }
        }
    }
}
