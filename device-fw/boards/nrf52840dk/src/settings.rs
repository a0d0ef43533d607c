//! Build-time settings, from the environment only (`option_env!`; never in a committed
//! file). Unset ones fall back to placeholders from the documentation ranges
//! (2001:db8::/32), which build a firmware that reaches nothing real. Numbers are checked
//! when the firmware is compiled; addresses when it boots (a bad one is logged, not
//! fatal).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv6Addr, SocketAddr};

use embassy_net::{Ipv6Cidr, StaticConfigV6};
use pehra_shared::pehra::addr::{parse_ipv6, parse_socket_addr};

/// The gateways (brokers' CoAP addresses), `[ipv6]:port`, comma-separated.
pub const GATEWAY: &str = match option_env!("PEHRA_GATEWAY") {
    Some(s) => s,
    None => "[2001:db8::1]:5683",
};
/// This device's address and prefix length, `addr/len`. If the address's last 64 bits
/// are zero (a prefix, as the default), they become the interface identifier derived
/// from the extended address (what 6LoWPAN compresses best).
pub const IPV6_ADDR: &str = match option_env!("PEHRA_IPV6_ADDR") {
    Some(s) => s,
    None => "2001:db8::/64",
};
/// The next hop for gateways outside the prefix (the border router's address); unset:
/// gateways must be on-link (in the prefix, e.g. the border router itself).
pub const IPV6_ROUTER: Option<&str> = option_env!("PEHRA_IPV6_ROUTER");
/// The device's name (default: `nrf52840-` + the last 3 bytes of the device address).
pub const DEVICE_NAME: Option<&str> = option_env!("PEHRA_DEVICE_NAME");
/// The topic readings go to.
pub const TOPIC: &str = match option_env!("PEHRA_TOPIC") {
    Some(s) => s,
    None => "readings",
};
/// The alarm interval, ms (`PEHRA_INTERVAL_S`, 60 s).
pub const INTERVAL_MS: u64 = parse_u64(option_env!("PEHRA_INTERVAL_S"), 60) * 1000;
/// The 802.15.4 PAN id (`PEHRA_PAN_ID`, decimal or 0x-hex; 0xbeef).
pub const PAN_ID: u16 = {
    let n = parse_u64(option_env!("PEHRA_PAN_ID"), 0xbeef);
    assert!(
        n < 0xffff,
        "PEHRA_PAN_ID: 0..0xfffe (0xffff is the broadcast PAN)"
    );
    n as u16
};
/// The 802.15.4 channel (`PEHRA_CHANNEL`, 11..=26 in the 2.4 GHz band; 26).
pub const CHANNEL: u8 = {
    let n = parse_u64(option_env!("PEHRA_CHANNEL"), 26);
    assert!(n >= 11 && n <= 26, "PEHRA_CHANNEL: 11..=26");
    n as u8
};
/// Transmit power, dBm (the energy model's nRF52840 figures are at 0 dBm).
pub const TX_POWER_DBM: i8 = 0;

/// A decimal or `0x` hexadecimal number; `default` when unset or empty. A malformed one
/// stops the build.
const fn parse_u64(s: Option<&str>, default: u64) -> u64 {
    let Some(s) = s else { return default };
    let b = s.as_bytes();
    if b.is_empty() {
        return default;
    }
    let (mut i, radix) = if b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        (2, 16)
    } else {
        (0, 10)
    };
    let mut n = 0u64;
    while i < b.len() {
        let d = match b[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' if radix == 16 => c - b'a' + 10,
            c @ b'A'..=b'F' if radix == 16 => c - b'A' + 10,
            _ => panic!("not a number"),
        };
        n = n * radix + d as u64;
        i += 1;
    }
    n
}

/// The configured gateways that parse (the others are logged and skipped), each with
/// the broker id serving there: `N@[ipv6]:port`, or broker `position + 1` without `N@`.
pub fn gateways() -> Vec<(SocketAddr, u32)> {
    let mut out = Vec::new();
    let items = GATEWAY.split(',').map(str::trim).filter(|s| !s.is_empty());
    for (i, s) in items.enumerate() {
        let (broker, addr) = pehra_device_fw::split_broker(s);
        match parse_socket_addr(addr) {
            Some(a) if a.is_ipv6() => out.push((a, broker.unwrap_or(i as u32 + 1))),
            _ => defmt::warn!("PEHRA_GATEWAY: {} is not [N@][ipv6]:port; skipped", s),
        }
    }
    out
}

/// The device's name: its credential file's, else `PEHRA_DEVICE_NAME`, else made from
/// `ext_addr`.
pub fn device_name(ext_addr: &[u8; 8]) -> String {
    if crate::keys::PROVISIONED {
        return crate::keys::NAME.into();
    }
    match DEVICE_NAME.filter(|n| !n.is_empty()) {
        Some(n) => n.into(),
        None => alloc::format!(
            "nrf52840-{:02x}{:02x}{:02x}",
            ext_addr[5],
            ext_addr[6],
            ext_addr[7]
        ),
    }
}

/// The static IPv6 configuration: [`IPV6_ADDR`] (its interface identifier filled in
/// from `ext_addr` when it is a /64 or shorter prefix with a zero host part), and
/// [`IPV6_ROUTER`] as the default route. A malformed setting falls back to the default
/// prefix (logged).
pub fn ipv6_config(ext_addr: &[u8; 8]) -> StaticConfigV6 {
    let (addr, len) = parse_cidr(IPV6_ADDR).unwrap_or_else(|| {
        defmt::warn!(
            "PEHRA_IPV6_ADDR: {} is not addr/len; using 2001:db8::/64",
            IPV6_ADDR
        );
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 64)
    });
    let mut octets = addr.octets();
    if len <= 64 && octets[8..] == [0; 8] {
        // RFC 4944 §6: the IID is the EUI-64 with the universal/local bit inverted.
        octets[8..].copy_from_slice(ext_addr);
        octets[8] ^= 0x02;
    }
    let gateway = IPV6_ROUTER.and_then(|r| match parse_ipv6(r) {
        Some(a) => Some(a),
        None => {
            defmt::warn!("PEHRA_IPV6_ROUTER: {} is not an IPv6 address; none", r);
            None
        }
    });
    StaticConfigV6 {
        address: Ipv6Cidr::new(Ipv6Addr::from(octets), len),
        gateway,
        dns_servers: heapless::Vec::new(),
    }
}

fn parse_cidr(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, len) = s.trim().split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 128).then_some(())?;
    Some((parse_ipv6(addr)?, len))
}
