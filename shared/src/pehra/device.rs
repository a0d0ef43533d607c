//! One battery-powered device's PEHRA logic (`docs/devices.md`), sans-IO.
//!
//! A device is never a Pehredar candidate: it sleeps between alarms, checks in with the
//! Pehredar (or any gateway) at each alarm, obeys the [`Directive`] of the
//! [`CheckInReply`], publishes its buffered readings, collects its downlink records and
//! sleeps again. [`DeviceNode`] decides all of it from the time (the device's own
//! monotonic milliseconds) and the answers it is given; the firmware's node loop does
//! the I/O.
//!
//! A cycle, as the driver runs it:
//!
//! 1. [`DeviceNode::handle_alarm`] at the alarm: the first gateway to check in with.
//! 2. Send [`DeviceNode::poll_checkin`] there; report [`DeviceNode::handle_checkin_reply`]
//!    or [`DeviceNode::handle_checkin_failed`] (which names the next gateway to try, or
//!    says to back off). A reply yields a [`Plan`]: what to do this cycle.
//! 3. Publish if [`Plan::publish`] (the batch from [`ReadingsBuffer::batch`], acked
//!    with [`ReadingsBuffer::ack`]); fetch downlink if [`Plan::fetch_downlink`] from
//!    [`DeviceNode::downlink_from`], reporting [`DeviceNode::handle_downlink`].
//! 4. Sleep until [`Plan::wake_at`] (deep sleep unless [`Plan::deep_sleep`] is false).
//!
//! Its time is the device's own clock as an [`Instant`] (the epoch is the firmware's:
//! boot, or a clock kept through deep sleep); gateway times are [`UnixMs`].

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::addr::parse_socket_addr;
use crate::time::{Instant, UnixMs};
use crate::wire::{
    CheckIn, CheckInReply, Directive, DownlinkResponse, NodeHealth, NodeRole, Record,
};

/// How a device is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The device's name (`dev-0001`): the key of its readings, its downlink topic.
    pub name: String,
    /// The gateways (brokers) it knows, in order of preference.
    pub gateways: Vec<SocketAddr>,
    /// How long it sleeps between alarms when left to itself, ms.
    pub alarm_interval_ms: u64,
    /// While told to stay awake (or woken), it checks in again this often, ms.
    pub awake_interval_ms: u64,
    /// The longest it backs off after no gateway answered, ms (the first back-off is
    /// one alarm interval, doubled per failed cycle up to this).
    pub max_backoff_ms: u64,
    /// The longest sleep a `sleep_until` may impose, ms (a wrong gateway clock must not
    /// silence a device for days).
    pub max_sleep_ms: u64,
}

impl DeviceConfig {
    /// A configuration with the given name, gateways and alarm interval; the other
    /// timers derived from it (awake: a tenth, back-off: up to 8 alarms, sleep: up to
    /// 16 alarms).
    pub fn new(name: &str, gateways: Vec<SocketAddr>, alarm_interval_ms: u64) -> Self {
        let alarm_interval_ms = alarm_interval_ms.max(1);
        DeviceConfig {
            name: name.into(),
            gateways,
            alarm_interval_ms,
            awake_interval_ms: (alarm_interval_ms / 10).max(1),
            max_backoff_ms: alarm_interval_ms.saturating_mul(8),
            max_sleep_ms: alarm_interval_ms.saturating_mul(16),
        }
    }
}

/// What to do in this cycle, once a gateway answered the check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The gateway that answered: publish and fetch there.
    pub gateway: SocketAddr,
    /// The directive obeyed.
    pub directive: Directive,
    /// Publish the buffered readings now.
    pub publish: bool,
    /// Fetch downlink records now.
    pub fetch_downlink: bool,
    /// When to wake next, on the device's clock.
    pub wake_at: Instant,
    /// Deep sleep until then (`false`: stay awake, radio kept up).
    pub deep_sleep: bool,
}

/// The outcome of a check-in reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Do this cycle's work, then sleep.
    Work(Plan),
    /// `rejoin`: the device forgot the Pehredar and its clock; check in again now with
    /// this gateway (only once per cycle: a second `rejoin` is obeyed as a back-off).
    CheckInAgain(SocketAddr),
}

/// After a failed check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Try this gateway next.
    Try(SocketAddr),
    /// None answered: sleep until then, keep the readings.
    BackOff {
        /// When to try again, on the device's clock.
        wake_at: Instant,
    },
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Check-ins answered.
    pub checkins: u64,
    /// Check-ins that got no (usable) answer.
    pub checkin_failures: u64,
    /// Cycles in which no gateway answered.
    pub failed_cycles: u64,
    /// Times the Pehredar's address changed (rediscovery).
    pub pehredar_changes: u64,
    /// Replies with something unusable in them (an address that does not parse, a
    /// downlink offset going backwards).
    pub bad_replies: u64,
}

/// A bounded buffer of readings waiting to be published: when full, the oldest is
/// dropped (and counted). Readings leave only when the gateway acknowledged them.
#[derive(Debug)]
pub struct ReadingsBuffer<const N: usize> {
    records: heapless::Deque<Record, N>,
    dropped: u64,
}

impl<const N: usize> Default for ReadingsBuffer<N> {
    fn default() -> Self {
        ReadingsBuffer {
            records: heapless::Deque::new(),
            dropped: 0,
        }
    }
}

impl<const N: usize> ReadingsBuffer<N> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reading; drops the oldest if the buffer is full.
    pub fn push(&mut self, record: Record) {
        if self.records.is_full() {
            self.records.pop_front();
            self.dropped += 1;
        }
        // Cannot fail: there is room now (N = 0 keeps nothing).
        if self.records.push_back(record).is_err() {
            self.dropped += 1;
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many were dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The oldest readings, at most `max`, in order (they stay until [`Self::ack`]).
    pub fn batch(&self, max: usize) -> Vec<Record> {
        self.records.iter().take(max).cloned().collect()
    }

    /// The gateway has the oldest `n`: remove them.
    pub fn ack(&mut self, n: usize) {
        for _ in 0..n {
            if self.records.pop_front().is_none() {
                break;
            }
        }
    }
}

/// What a [`DeviceNode`] must keep across a deep sleep that resets the device: its
/// schedule and what it learned ([`DeviceNode::memory`], [`DeviceNode::restore`]). The
/// firmware stores it with the rest of its state.
///
/// The clock offset stays right only if the device's clock runs on through the deep
/// sleep (the firmware's `Clock` contract); it is measured again at every check-in.
/// Addresses are kept as serde's binary form has them: an IPv6 scope id is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeMemory {
    /// The Pehredar's address as last learned.
    pub pehredar: Option<SocketAddr>,
    /// The gateway that answered last.
    pub last_answered: Option<SocketAddr>,
    /// Gateway clock − device clock, ms.
    pub clock_offset_ms: Option<i64>,
    /// The alarm interval, ms (an application may have changed it; 0: the configured).
    pub alarm_interval_ms: u64,
    /// Cycles in a row in which no gateway answered (the back-off goes on doubling).
    pub failed_cycles: u32,
    /// The first downlink offset not processed yet.
    pub downlink_from: Option<u64>,
    /// Records were processed since `downlink_from` was last sent (to commit it).
    pub downlink_uncommitted: bool,
}

/// One device's PEHRA state machine (see the module docs).
#[derive(Debug, Clone)]
pub struct DeviceNode {
    config: DeviceConfig,
    /// The Pehredar's address, learned from replies.
    pehredar: Option<SocketAddr>,
    /// The gateway that answered last (preferred when the Pehredar is not known).
    last_answered: Option<SocketAddr>,
    /// Gateway clock − device clock, ms, from the last reply's `gateway_ms`.
    clock_offset_ms: Option<i64>,
    /// The gateways to try this cycle, in order, and how many were tried.
    candidates: Vec<SocketAddr>,
    tried: usize,
    rejoined_this_cycle: bool,
    consecutive_failed_cycles: u32,
    /// The first downlink offset not processed yet.
    downlink_from: Option<u64>,
    /// Records were processed since `downlink_from` was last sent (it must be sent to
    /// commit it).
    downlink_uncommitted: bool,
    counters: DeviceCounters,
}

impl DeviceNode {
    /// A device, with the downlink offset it kept in storage (if any).
    pub fn new(config: DeviceConfig, downlink_from: Option<u64>) -> Self {
        DeviceNode {
            config,
            pehredar: None,
            last_answered: None,
            clock_offset_ms: None,
            candidates: Vec::new(),
            tried: 0,
            rejoined_this_cycle: false,
            consecutive_failed_cycles: 0,
            downlink_from,
            downlink_uncommitted: false,
            counters: DeviceCounters::default(),
        }
    }

    /// What to keep across a deep sleep (see [`NodeMemory`]).
    pub fn memory(&self) -> NodeMemory {
        NodeMemory {
            pehredar: self.pehredar,
            last_answered: self.last_answered,
            clock_offset_ms: self.clock_offset_ms,
            alarm_interval_ms: self.config.alarm_interval_ms,
            failed_cycles: self.consecutive_failed_cycles,
            downlink_from: self.downlink_from,
            downlink_uncommitted: self.downlink_uncommitted,
        }
    }

    /// Takes up what [`Self::memory`] returned before the deep sleep.
    pub fn restore(&mut self, memory: &NodeMemory) {
        self.pehredar = memory.pehredar;
        self.last_answered = memory.last_answered;
        self.clock_offset_ms = memory.clock_offset_ms;
        if memory.alarm_interval_ms > 0 {
            self.set_alarm_interval(memory.alarm_interval_ms);
        }
        self.consecutive_failed_cycles = memory.failed_cycles;
        self.downlink_from = memory.downlink_from;
        self.downlink_uncommitted = memory.downlink_uncommitted;
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Changes the alarm interval (an application's `set-interval`).
    pub fn set_alarm_interval(&mut self, ms: u64) {
        self.config.alarm_interval_ms = ms.max(1);
    }

    /// The Pehredar's address as last learned.
    pub fn pehredar(&self) -> Option<SocketAddr> {
        self.pehredar
    }

    /// Gateway clock − device clock, ms, if a reply said.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.clock_offset_ms
    }

    /// A device time converted to the gateway's clock, if the offset is known.
    pub fn gateway_time(&self, now: Instant) -> Option<UnixMs> {
        self.gateway_ms(now.as_millis()).map(UnixMs::from_millis)
    }

    fn gateway_ms(&self, now_ms: u64) -> Option<u64> {
        self.clock_offset_ms
            .map(|off| (now_ms as i64).saturating_add(off).max(0) as u64)
    }

    /// The counters.
    pub fn counters(&self) -> DeviceCounters {
        self.counters
    }

    /// The downlink offset to ask from (and so to commit).
    pub fn downlink_from(&self) -> Option<u64> {
        self.downlink_from
    }

    /// The alarm rang (or the device booted): the first gateway to check in with, if it
    /// knows any.
    pub fn handle_alarm(&mut self, _now: Instant) -> Option<SocketAddr> {
        self.candidates.clear();
        self.tried = 0;
        self.rejoined_this_cycle = false;
        let push = |c: &mut Vec<SocketAddr>, a: SocketAddr| {
            if !c.contains(&a) {
                c.push(a);
            }
        };
        if let Some(p) = self.pehredar {
            push(&mut self.candidates, p);
        }
        if let Some(a) = self.last_answered {
            push(&mut self.candidates, a);
        }
        for g in self.config.gateways.clone() {
            push(&mut self.candidates, g);
        }
        self.next_candidate()
    }

    fn next_candidate(&mut self) -> Option<SocketAddr> {
        let next = self.candidates.get(self.tried).copied();
        if next.is_some() {
            self.tried += 1;
        }
        next
    }

    /// The check-in body: a heartbeat with health (battery included).
    pub fn poll_checkin(&self, now: Instant, health: NodeHealth, traffic_waiting: bool) -> CheckIn {
        let now_ms = now.as_millis();
        CheckIn {
            node: self.config.name.clone(),
            role: NodeRole::Dormant,
            mains_powered: false,
            next_alarm_ms: self.gateway_ms(now_ms + self.config.alarm_interval_ms),
            traffic_waiting,
            health: Some(health),
        }
    }

    /// The gateway at `from` answered the check-in.
    ///
    /// `buffered` is how many readings wait (to decide whether to publish under
    /// `sleep_until`: always when any wait).
    pub fn handle_checkin_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reply: &CheckInReply,
        buffered: usize,
    ) -> ReplyOutcome {
        let now_ms = now.as_millis();
        self.counters.checkins += 1;
        self.consecutive_failed_cycles = 0;
        self.last_answered = Some(from);
        if let Some(g) = reply.gateway_ms {
            self.clock_offset_ms = Some((g as i64).wrapping_sub(now_ms as i64));
        }
        match reply.pehredar_addr.as_deref().map(parse_socket_addr) {
            Some(Some(addr)) if self.pehredar != Some(addr) => {
                self.counters.pehredar_changes += 1;
                self.pehredar = Some(addr);
            }
            Some(Some(_)) => {}
            Some(None) => self.counters.bad_replies += 1,
            // No Pehredar (an election is on): keep the last one known; the rotation
            // finds the new one.
            None => {}
        }
        let fetch = reply.pending > 0 || self.downlink_uncommitted;
        match reply.directive {
            Directive::SleepUntil { at_ms } => {
                let wake_at = Instant::from_millis(self.sleep_target(now_ms, at_ms));
                ReplyOutcome::Work(Plan {
                    gateway: from,
                    directive: reply.directive,
                    publish: buffered > 0,
                    fetch_downlink: fetch,
                    wake_at,
                    deep_sleep: true,
                })
            }
            Directive::StayAwake | Directive::WakeNow => ReplyOutcome::Work(Plan {
                gateway: from,
                directive: reply.directive,
                publish: buffered > 0,
                fetch_downlink: fetch || reply.directive == Directive::WakeNow,
                wake_at: Instant::from_millis(now_ms + self.config.awake_interval_ms),
                deep_sleep: false,
            }),
            Directive::Rejoin => {
                self.pehredar = None;
                self.last_answered = None;
                self.clock_offset_ms = None;
                if self.rejoined_this_cycle {
                    // Told twice in one cycle: do not loop, try again at the next alarm.
                    return ReplyOutcome::Work(Plan {
                        gateway: from,
                        directive: reply.directive,
                        publish: false,
                        fetch_downlink: false,
                        wake_at: Instant::from_millis(now_ms + self.config.alarm_interval_ms),
                        deep_sleep: true,
                    });
                }
                let again = self.handle_alarm(now).unwrap_or(from);
                self.rejoined_this_cycle = true;
                ReplyOutcome::CheckInAgain(again)
            }
        }
    }

    /// When to wake for a `sleep_until` at gateway time `at_ms`: converted with the
    /// clock offset, at least now, at most `max_sleep_ms` away; one alarm interval if the
    /// offset is unknown.
    fn sleep_target(&self, now_ms: u64, at_ms: u64) -> u64 {
        let Some(off) = self.clock_offset_ms else {
            return now_ms + self.config.alarm_interval_ms;
        };
        let local = (at_ms as i64).saturating_sub(off).max(0) as u64;
        local.clamp(now_ms, now_ms.saturating_add(self.config.max_sleep_ms))
    }

    /// The check-in to the last gateway tried got no usable answer (timeout, error, a
    /// body that did not decode): the next gateway, or back off.
    pub fn handle_checkin_failed(&mut self, now: Instant) -> FailOutcome {
        let now_ms = now.as_millis();
        self.counters.checkin_failures += 1;
        if let Some(next) = self.next_candidate() {
            return FailOutcome::Try(next);
        }
        self.counters.failed_cycles += 1;
        self.consecutive_failed_cycles = self.consecutive_failed_cycles.saturating_add(1);
        // Nobody answered, the Pehredar included: forget it so that the next cycle asks
        // the configured gateways too (any of them names the new one).
        if self.pehredar.take().is_some() {
            self.counters.pehredar_changes += 1;
        }
        self.last_answered = None;
        let shift = (self.consecutive_failed_cycles - 1).min(16);
        let backoff = self
            .config
            .alarm_interval_ms
            .saturating_mul(1 << shift)
            .min(
                self.config
                    .max_backoff_ms
                    .max(self.config.alarm_interval_ms),
            );
        FailOutcome::BackOff {
            wake_at: Instant::from_millis(now_ms + backoff),
        }
    }

    /// A downlink answer came: the records to hand to the application (those at or
    /// after the offset asked from), in order. An answer going backwards is ignored.
    pub fn handle_downlink(&mut self, response: DownlinkResponse) -> Vec<(u64, Record)> {
        let from = self.downlink_from.unwrap_or(0);
        if self.downlink_from.is_some() && response.next < from {
            self.counters.bad_replies += 1;
            return Vec::new();
        }
        // What was sent as `from` is committed now.
        self.downlink_uncommitted = false;
        let records: Vec<(u64, Record)> = response
            .records
            .into_iter()
            .filter(|(offset, _)| self.downlink_from.is_none() || *offset >= from)
            .filter(|(offset, _)| *offset < response.next)
            .collect();
        if self.downlink_from != Some(response.next) {
            self.downlink_uncommitted = !records.is_empty();
            self.downlink_from = Some(response.next);
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    const ALARM: u64 = 60_000;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn node() -> DeviceNode {
        DeviceNode::new(
            DeviceConfig::new("dev-0001", vec![addr(1), addr(2), addr(3)], ALARM),
            None,
        )
    }

    fn reply(directive: Directive, pehredar: Option<u16>, gateway_ms: Option<u64>) -> CheckInReply {
        CheckInReply {
            pehredar: pehredar.map(|p| alloc::format!("broker-{p}")),
            pehredar_addr: pehredar.map(|p| addr(p).to_string()),
            term: None,
            gateway_ms,
            directive,
            pending: 0,
            lease_ms: None,
        }
    }

    fn record(v: u8) -> Record {
        Record {
            key: None,
            value: vec![v],
            timestamp_ms: 0,
            headers: vec![],
        }
    }

    fn work(o: ReplyOutcome) -> Plan {
        match o {
            ReplyOutcome::Work(p) => p,
            other => panic!("expected work, got {other:?}"),
        }
    }

    #[test]
    fn a_restored_node_keeps_its_schedule_clock_and_back_off() {
        let mut n = node();
        n.set_alarm_interval(30_000);
        let g = 1_700_000_000_000;
        n.handle_alarm(Instant::from_millis(1_000));
        n.handle_checkin_reply(
            Instant::from_millis(1_000),
            addr(2),
            &reply(Directive::WakeNow, Some(3), Some(g)),
            0,
        );
        n.handle_downlink(DownlinkResponse {
            records: vec![(4, record(1))],
            next: 5,
            pending: 0,
        });
        // Two cycles in which nobody answered: the back-off has doubled once.
        for now in [2_000, 40_000] {
            let mut to = n.handle_alarm(Instant::from_millis(now));
            while to.is_some() {
                to = match n.handle_checkin_failed(Instant::from_millis(now)) {
                    FailOutcome::Try(next) => Some(next),
                    FailOutcome::BackOff { .. } => None,
                };
            }
        }
        let memory = n.memory();
        assert_eq!(memory.alarm_interval_ms, 30_000);
        assert_eq!(memory.failed_cycles, 2);
        assert_eq!(memory.downlink_from, Some(5));
        assert!(memory.downlink_uncommitted);

        let mut restored = node();
        restored.restore(&memory);
        assert_eq!(restored.memory(), memory);
        assert_eq!(restored.config().alarm_interval_ms, 30_000);
        assert_eq!(
            restored
                .gateway_time(Instant::from_millis(2_000))
                .map(UnixMs::as_millis),
            Some(g + 1_000)
        );
        // The third failed cycle backs off 4 alarms, as it would have without the reset.
        let mut to = restored.handle_alarm(Instant::from_millis(100_000));
        let backoff = loop {
            match restored.handle_checkin_failed(Instant::from_millis(100_000)) {
                FailOutcome::Try(next) => to = Some(next),
                FailOutcome::BackOff { wake_at } => break wake_at,
            }
        };
        assert!(to.is_some());
        assert_eq!(backoff.as_millis(), 100_000 + 4 * 30_000);
        // The uncommitted downlink offset is sent (fetched) at the next check-in.
        restored.handle_alarm(Instant::from_millis(300_000));
        let p = work(restored.handle_checkin_reply(
            Instant::from_millis(300_000),
            addr(1),
            &reply(Directive::SleepUntil { at_ms: g }, None, None),
            0,
        ));
        assert!(p.fetch_downlink);
    }

    #[test]
    fn sleep_until_converts_gateway_time_with_the_offset() {
        let mut n = node();
        assert_eq!(n.handle_alarm(Instant::from_millis(1_000)), Some(addr(1)));
        // Gateway clock is 1_700_000_000_000 when the device's is 1_000.
        let g = 1_700_000_000_000;
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(1_000),
            addr(1),
            &reply(
                Directive::SleepUntil { at_ms: g + 30_000 },
                Some(1),
                Some(g),
            ),
            0,
        ));
        assert_eq!(p.wake_at.as_millis(), 31_000);
        assert!(p.deep_sleep);
        assert!(!p.publish);
        assert_eq!(
            n.gateway_time(Instant::from_millis(2_000))
                .map(UnixMs::as_millis),
            Some(g + 1_000)
        );
    }

    #[test]
    fn sleep_until_is_clamped_and_without_clock_is_one_alarm() {
        let mut n = node();
        n.handle_alarm(Instant::from_millis(0));
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(5),
            addr(1),
            &reply(Directive::SleepUntil { at_ms: 99 }, None, None),
            0,
        ));
        assert_eq!(p.wake_at.as_millis(), 5 + ALARM);
        // In the past: wake now. Far future: at most max_sleep_ms.
        let g = 1_000_000;
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(10),
            addr(1),
            &reply(Directive::SleepUntil { at_ms: g - 500 }, None, Some(g)),
            0,
        ));
        assert_eq!(p.wake_at.as_millis(), 10);
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(10),
            addr(1),
            &reply(
                Directive::SleepUntil {
                    at_ms: (g + 1) << 40,
                },
                None,
                Some(g),
            ),
            0,
        ));
        assert_eq!(p.wake_at.as_millis(), 10 + 16 * ALARM);
    }

    #[test]
    fn stay_awake_and_wake_now_keep_the_radio_up_and_check_in_soon() {
        let mut n = node();
        n.handle_alarm(Instant::from_millis(0));
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(0),
            addr(1),
            &reply(Directive::StayAwake, None, None),
            3,
        ));
        assert!(!p.deep_sleep);
        assert!(p.publish);
        assert!(!p.fetch_downlink);
        assert_eq!(p.wake_at.as_millis(), ALARM / 10);
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(0),
            addr(1),
            &reply(Directive::WakeNow, None, None),
            0,
        ));
        assert!(!p.deep_sleep);
        assert!(
            p.fetch_downlink,
            "woken: collect downlink even if none is announced"
        );
    }

    #[test]
    fn rejoin_forgets_and_checks_in_again_once_per_cycle() {
        let mut n = node();
        n.handle_alarm(Instant::from_millis(0));
        n.handle_checkin_reply(
            Instant::from_millis(0),
            addr(2),
            &reply(Directive::StayAwake, Some(2), Some(50)),
            0,
        );
        assert_eq!(n.pehredar(), Some(addr(2)));
        assert_eq!(n.handle_alarm(Instant::from_millis(1)), Some(addr(2)));
        let o = n.handle_checkin_reply(
            Instant::from_millis(1),
            addr(2),
            &reply(Directive::Rejoin, None, None),
            0,
        );
        assert_eq!(o, ReplyOutcome::CheckInAgain(addr(1)));
        assert_eq!(n.pehredar(), None);
        assert_eq!(n.clock_offset_ms(), None);
        let p = work(n.handle_checkin_reply(
            Instant::from_millis(2),
            addr(1),
            &reply(Directive::Rejoin, None, None),
            0,
        ));
        assert_eq!(p.wake_at.as_millis(), 2 + ALARM);
    }

    #[test]
    fn the_pehredar_is_learned_and_asked_first() {
        let mut n = node();
        assert_eq!(n.handle_alarm(Instant::from_millis(0)), Some(addr(1)));
        n.handle_checkin_reply(
            Instant::from_millis(0),
            addr(1),
            &reply(Directive::SleepUntil { at_ms: 0 }, Some(3), Some(0)),
            0,
        );
        assert_eq!(n.pehredar(), Some(addr(3)));
        assert_eq!(n.handle_alarm(Instant::from_millis(ALARM)), Some(addr(3)));
        assert_eq!(n.counters().pehredar_changes, 1);
    }

    #[test]
    fn a_silent_pehredar_rotates_to_the_other_gateways_then_backs_off() {
        let mut n = node();
        n.handle_alarm(Instant::from_millis(0));
        n.handle_checkin_reply(
            Instant::from_millis(0),
            addr(1),
            &reply(Directive::StayAwake, Some(3), None),
            0,
        );
        // Next cycle: Pehredar 3, then the last that answered (1), then 2.
        assert_eq!(n.handle_alarm(Instant::from_millis(ALARM)), Some(addr(3)));
        assert_eq!(
            n.handle_checkin_failed(Instant::from_millis(ALARM)),
            FailOutcome::Try(addr(1))
        );
        assert_eq!(
            n.handle_checkin_failed(Instant::from_millis(ALARM)),
            FailOutcome::Try(addr(2))
        );
        assert_eq!(
            n.handle_checkin_failed(Instant::from_millis(ALARM)),
            FailOutcome::BackOff {
                wake_at: Instant::from_millis(2 * ALARM)
            }
        );
        assert_eq!(n.pehredar(), None);
        // Second failed cycle: the back-off doubles (capped at max_backoff_ms).
        assert_eq!(
            n.handle_alarm(Instant::from_millis(2 * ALARM)),
            Some(addr(1))
        );
        n.handle_checkin_failed(Instant::from_millis(2 * ALARM));
        n.handle_checkin_failed(Instant::from_millis(2 * ALARM));
        assert_eq!(
            n.handle_checkin_failed(Instant::from_millis(2 * ALARM)),
            FailOutcome::BackOff {
                wake_at: Instant::from_millis(4 * ALARM)
            }
        );
        // A gateway answers and names the new Pehredar: rediscovered.
        assert_eq!(
            n.handle_alarm(Instant::from_millis(4 * ALARM)),
            Some(addr(1))
        );
        assert_eq!(
            n.handle_checkin_failed(Instant::from_millis(4 * ALARM)),
            FailOutcome::Try(addr(2))
        );
        n.handle_checkin_reply(
            Instant::from_millis(4 * ALARM),
            addr(2),
            &reply(Directive::StayAwake, Some(2), None),
            0,
        );
        assert_eq!(n.pehredar(), Some(addr(2)));
        assert_eq!(
            n.handle_alarm(Instant::from_millis(5 * ALARM)),
            Some(addr(2))
        );
        assert_eq!(n.counters().failed_cycles, 2);
    }

    #[test]
    fn a_garbled_pehredar_address_is_counted_and_ignored() {
        let mut n = node();
        n.handle_alarm(Instant::from_millis(0));
        let mut r = reply(Directive::StayAwake, None, None);
        r.pehredar_addr = Some("not an address".into());
        n.handle_checkin_reply(Instant::from_millis(0), addr(1), &r, 0);
        assert_eq!(n.pehredar(), None);
        assert_eq!(n.counters().bad_replies, 1);
    }

    #[test]
    fn the_readings_buffer_drops_the_oldest_and_counts() {
        let mut b = ReadingsBuffer::<3>::new();
        for v in 0..5 {
            b.push(record(v));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 2);
        let batch = b.batch(2);
        assert_eq!(batch, vec![record(2), record(3)]);
        b.ack(2);
        assert_eq!(b.batch(10), vec![record(4)]);
        b.ack(10);
        assert!(b.is_empty());
    }

    #[test]
    fn the_downlink_offset_advances_and_is_committed_next_time() {
        let mut n = node();
        assert_eq!(n.downlink_from(), None);
        n.handle_alarm(Instant::from_millis(0));
        let mut r = reply(Directive::SleepUntil { at_ms: 0 }, None, Some(0));
        r.pending = 2;
        assert!(
            work(n.handle_checkin_reply(Instant::from_millis(0), addr(1), &r, 0)).fetch_downlink
        );
        let got = n.handle_downlink(DownlinkResponse {
            records: vec![(5, record(5)), (6, record(6))],
            next: 7,
            pending: 0,
        });
        assert_eq!(got.len(), 2);
        assert_eq!(n.downlink_from(), Some(7));
        // Nothing announced, but 7 was not sent yet: fetch once to commit it.
        r.pending = 0;
        assert!(
            work(n.handle_checkin_reply(Instant::from_millis(1), addr(1), &r, 0)).fetch_downlink
        );
        assert!(n
            .handle_downlink(DownlinkResponse {
                records: vec![],
                next: 7,
                pending: 0
            })
            .is_empty());
        assert!(
            !work(n.handle_checkin_reply(Instant::from_millis(2), addr(1), &r, 0)).fetch_downlink
        );
        // Going backwards is refused.
        assert!(n
            .handle_downlink(DownlinkResponse {
                records: vec![(1, record(1))],
                next: 2,
                pending: 0
            })
            .is_empty());
        assert_eq!(n.downlink_from(), Some(7));
        assert_eq!(n.counters().bad_replies, 1);
    }

    #[test]
    fn restored_downlink_offset_filters_records_already_seen() {
        let mut n = DeviceNode::new(DeviceConfig::new("d", vec![addr(1)], ALARM), Some(10));
        let got = n.handle_downlink(DownlinkResponse {
            records: vec![(9, record(9)), (10, record(10))],
            next: 11,
            pending: 0,
        });
        assert_eq!(got, vec![(10, record(10))]);
    }
}
