//! The three requests a device sends ([`CheckIn`], [`DeviceReadings`],
//! [`DownlinkRequest`]) encoded without serde: ciborium's serializer, driven by the derived
//! `Serialize`, was inlined into each of the node loop's steps (a call per key and per
//! value). Same bytes as [`encode`](super::encode) (the rules of [`crate::wire`]: maps of
//! the non-omitted fields in declaration order, integers in their shortest form); host
//! tests compare them with ciborium's on many values.

use super::head::write_head as head;
use alloc::vec::Vec;

use super::{Acks, CheckIn, DeviceReadings, DownlinkRequest, Header, NodeHealth, NodeRole, Record};

/// A message a device encodes by hand ([`encode_by_hand`]).
pub trait HandEncode {
    /// Appends the value's CBOR.
    #[doc(hidden)]
    fn write(&self, out: &mut Vec<u8>);
}

/// [`super::encode`] for the device's requests, without serde (never fails).
pub fn encode_by_hand<T: HandEncode>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.write(&mut out);
    out
}

fn uint(out: &mut Vec<u8>, n: u64) {
    head(out, 0, n);
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xf5 } else { 0xf4 });
}

/// A map's head: `fields` pairs.
fn map(out: &mut Vec<u8>, fields: usize) {
    head(out, 5, fields as u64);
}

/// A key and an unsigned value.
fn uint_field(out: &mut Vec<u8>, key: &str, n: u64) {
    text(out, key);
    uint(out, n);
}

impl HandEncode for NodeHealth {
    fn write(&self, out: &mut Vec<u8>) {
        map(out, 5 + self.battery_permille.is_some() as usize);
        uint_field(out, "cpu_permille", self.cpu_permille.into());
        uint_field(out, "memory_permille", self.memory_permille.into());
        uint_field(out, "disk_io_permille", self.disk_io_permille.into());
        uint_field(out, "rtt_ms", self.rtt_ms.into());
        if let Some(b) = self.battery_permille {
            uint_field(out, "battery_permille", b.into());
        }
        uint_field(out, "failures", self.failures.into());
    }
}

impl HandEncode for CheckIn {
    fn write(&self, out: &mut Vec<u8>) {
        map(
            out,
            4 + self.next_alarm_ms.is_some() as usize + self.health.is_some() as usize,
        );
        text(out, "node");
        text(out, &self.node);
        text(out, "role");
        text(
            out,
            match self.role {
                NodeRole::Pehredar => "pehredar",
                NodeRole::Awake => "awake",
                NodeRole::Dormant => "dormant",
                NodeRole::OptedOut => "opted_out",
            },
        );
        text(out, "mains_powered");
        boolean(out, self.mains_powered);
        if let Some(at) = self.next_alarm_ms {
            uint_field(out, "next_alarm_ms", at);
        }
        text(out, "traffic_waiting");
        boolean(out, self.traffic_waiting);
        if let Some(health) = &self.health {
            text(out, "health");
            health.write(out);
        }
    }
}

impl HandEncode for Header {
    fn write(&self, out: &mut Vec<u8>) {
        map(out, 2);
        text(out, "key");
        text(out, &self.key);
        text(out, "value");
        bytes(out, &self.value);
    }
}

impl HandEncode for Record {
    fn write(&self, out: &mut Vec<u8>) {
        map(
            out,
            2 + self.key.is_some() as usize + !self.headers.is_empty() as usize,
        );
        if let Some(key) = &self.key {
            text(out, "key");
            bytes(out, key);
        }
        text(out, "value");
        bytes(out, &self.value);
        uint_field(out, "timestamp_ms", self.timestamp_ms);
        if !self.headers.is_empty() {
            text(out, "headers");
            head(out, 4, self.headers.len() as u64);
            for h in &self.headers {
                h.write(out);
            }
        }
    }
}

impl HandEncode for DeviceReadings {
    fn write(&self, out: &mut Vec<u8>) {
        map(out, 4 + self.first_seq.is_some() as usize);
        text(out, "topic");
        text(out, &self.topic);
        text(out, "acks");
        // Kafka's numbers: 0, 1, -1 (a negative integer: major type 1, argument 0).
        out.push(match self.acks {
            Acks::None => 0x00,
            Acks::Leader => 0x01,
            Acks::All => 0x20,
        });
        text(out, "records");
        head(out, 4, self.records.len() as u64);
        for r in &self.records {
            r.write(out);
        }
        if let Some(seq) = self.first_seq {
            uint_field(out, "first_seq", seq.into());
        }
        uint_field(out, "incarnation", self.incarnation.into());
    }
}

impl HandEncode for DownlinkRequest {
    fn write(&self, out: &mut Vec<u8>) {
        map(out, 1 + self.from.is_some() as usize);
        if let Some(from) = self.from {
            uint_field(out, "from", from);
        }
        uint_field(out, "max_bytes", self.max_bytes.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    use core::fmt::Debug;

    /// The same bytes as ciborium's serializer (the firmware's until now) and as
    /// [`super::super::encode`] (the gateways').
    fn same<T: HandEncode + serde::Serialize + Debug>(value: &T) {
        let mut theirs = Vec::new();
        ciborium::into_writer(value, &mut theirs).unwrap();
        let ours = encode_by_hand(value);
        assert_eq!(ours, theirs, "{value:?}");
        assert_eq!(ours, super::super::encode(value).unwrap(), "{value:?}");
    }

    /// Numbers at every boundary of the head's forms.
    const NUMBERS: [u64; 12] = [
        0,
        1,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        4_294_967_295,
        4_294_967_296,
        1_700_000_000_000,
        u64::MAX,
    ];

    fn string(len: usize) -> String {
        (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
    }

    const LENGTHS: [usize; 7] = [0, 1, 23, 24, 255, 256, 300];

    #[test]
    fn check_ins_as_ciborium() {
        let roles = [
            NodeRole::Pehredar,
            NodeRole::Awake,
            NodeRole::Dormant,
            NodeRole::OptedOut,
        ];
        for (i, &n) in NUMBERS.iter().enumerate() {
            let small = |x: u64| x as u16;
            let health = NodeHealth {
                cpu_permille: small(n),
                memory_permille: small(n >> 3),
                disk_io_permille: small(n >> 7),
                rtt_ms: n as u32,
                battery_permille: i.is_multiple_of(2).then_some(small(n >> 1)),
                failures: (n >> 32) as u32,
            };
            same(&health);
            same(&CheckIn {
                node: string(LENGTHS[i % LENGTHS.len()]),
                role: roles[i % 4],
                mains_powered: i.is_multiple_of(3),
                next_alarm_ms: (i % 2 == 1).then_some(n),
                traffic_waiting: i.is_multiple_of(5),
                health: (i % 4 != 3).then_some(health),
            });
        }
        // A non-ASCII name.
        same(&CheckIn {
            node: String::from("qemu-é-1"),
            role: NodeRole::Dormant,
            mains_powered: false,
            next_alarm_ms: None,
            traffic_waiting: false,
            health: None,
        });
    }

    #[test]
    fn readings_and_downlink_requests_as_ciborium() {
        for (i, &n) in NUMBERS.iter().enumerate() {
            let record = |j: usize| Record {
                key: (i + j)
                    .is_multiple_of(2)
                    .then(|| vec![j as u8; LENGTHS[(i + j) % LENGTHS.len()]]),
                value: vec![0xa5; LENGTHS[(i + 2 * j) % LENGTHS.len()]],
                timestamp_ms: NUMBERS[(i + j) % NUMBERS.len()],
                headers: (0..(i + j) % 3)
                    .map(|k| Header {
                        key: string(LENGTHS[k]),
                        value: vec![k as u8; LENGTHS[(k + j) % LENGTHS.len()]],
                    })
                    .collect(),
            };
            for records in [0, 1, 3, 24] {
                same(&DeviceReadings {
                    topic: string(LENGTHS[i % LENGTHS.len()]),
                    acks: [Acks::None, Acks::Leader, Acks::All][i % 3],
                    records: (0..records).map(record).collect(),
                    first_seq: i.is_multiple_of(2).then_some(n as u32),
                    incarnation: (n >> 1) as u32,
                });
            }
            same(&DownlinkRequest {
                from: (i % 2 == 1).then_some(n),
                max_bytes: n as u32,
            });
            same(&DownlinkRequest {
                from: Some(n),
                max_bytes: (n >> 16) as u32,
            });
        }
    }
}
