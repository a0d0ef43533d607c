//! One PEHRA participant (see the module docs of [`super`]).
//!
//! [`Node`] decides, from the cluster's [`PehraState`] (the watch on `/pehra/state`), the
//! client traffic it sees and the time, when its node sleeps, when it wakes, when it
//! checks in with the Pehredar and when it takes or leaves office. It does no I/O: the
//! driver feeds it inputs, calls [`Node::poll_actions`] and carries out the [`Action`]s, and
//! calls `poll` again at [`Node::poll_timeout`].

use alloc::string::String;
use alloc::vec::Vec;

use super::vitals::{Vitals, VitalsConfig};
use crate::health::LeaseParts;
use crate::time::{ClockSteps, UnixMs};
use crate::wire::{
    CheckIn, CheckInReply, Directive, NodeHealth, NodeRole, NodeStatus, PehraRequest, PehraState,
    WakeReason,
};

/// How a participant is set up (selfChk and its timers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name (`broker-{id}`).
    pub name: String,
    /// Where it serves CoAP (`ip:port`), published in its status.
    pub addr: String,
    /// selfChk: it takes part. `false` = opted out: always awake, never a candidate.
    pub participating: bool,
    /// Mains powered: only such nodes are candidates for Pehredar.
    pub mains_powered: bool,
    /// It participates (may be elected) but never sleeps.
    pub stay_awake: bool,
    /// How long without client traffic before it counts as idle and may sleep, ms.
    pub idle_ms: u64,
    /// How long a dormant node sleeps before it checks in with the Pehredar, ms (at
    /// most the Pehredar's lease, once it gave one).
    pub alarm_interval_ms: u64,
    /// The quiet lease: an idle node that stays awake (the Pehredar, a `stay_awake`
    /// node, one another rule keeps up) stretches its zookeeper lease by this much at a
    /// time instead of heartbeating every few seconds, and renews it when the stretch
    /// runs out ([`Action::StretchLease`]); its first request ends it
    /// ([`Action::ResumeLease`]). Failover does not wait for that lease: a client that
    /// finds the node silent reports it, and the zookeeper probes it. 0: off (the
    /// node heartbeats whenever awake).
    pub quiet_lease_ms: u64,
    /// Health rating and the adaptive lease it gives as Pehredar (seed 002).
    pub vitals: VitalsConfig,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this status to `/pehra/nodes/{name}` (only emitted when it changed).
    PublishStatus(NodeStatus),
    /// Go dormant until this time (ms since the Unix epoch): stop periodic work, stretch
    /// the zookeeper lease. Also emitted, while dormant, to sleep again after a check-in.
    Sleep {
        /// When the alarm rings.
        until_ms: u64,
    },
    /// Wake fully: resume periodic work and heartbeats.
    Wake {
        /// Why.
        reason: WakeReason,
    },
    /// The alarm rang: send this check-in to the Pehredar (`POST /pehra/checkin` at the
    /// address in its status) and report the outcome with [`Node::handle_checkin_result`].
    CheckIn {
        /// The Pehredar's node name.
        pehredar: String,
        /// The body to send.
        checkin: CheckIn,
    },
    /// Write this request under `/pehra/requests`.
    Request(PehraRequest),
    /// Awake and idle: stretch the zookeeper lease to this time (ms since the Unix
    /// epoch) and pause the heartbeats; asked again when the stretch runs out.
    StretchLease {
        /// The end of the stretch.
        until_ms: u64,
    },
    /// No longer idle (or going dormant, or PEHRA turned off): heartbeat again as usual.
    ResumeLease,
}

/// Where the node is in its sleep cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Awake (or the Pehredar, or opted out).
    Awake,
    /// Dormant until the alarm.
    Dormant { alarm_ms: u64 },
    /// Dormant, the alarm rang, the check-in is out (sent at `sent_ms`).
    CheckingIn { alarm_ms: u64, sent_ms: u64 },
}

/// One PEHRA participant's state machine.
#[derive(Debug, Clone)]
pub struct Node {
    config: NodeConfig,
    state: Option<PehraState>,
    phase: Phase,
    /// The term number it holds office in.
    office: Option<u64>,
    last_traffic_ms: u64,
    /// When it last woke (or stepped down): it stays up at least `idle_ms` after.
    woke_ms: u64,
    /// The last wakeUpAll generation obeyed.
    obeyed_generation: u64,
    /// The wake generation for which a traffic wakeUpAll was already requested.
    traffic_requested: Option<u64>,
    /// A term whose Pehredar did not answer a check-in: do not sleep under it again.
    lost_term: Option<u64>,
    role: NodeRole,
    since_ms: u64,
    published: Option<NodeStatus>,
    actions: Vec<Action>,
    /// Its health, RTTs and lease.
    vitals: Vitals,
    /// The lease the Pehredar of this term number gave in its last check-in reply.
    heard_lease: Option<(u64, u32)>,
    /// When it last stepped down as Pehredar.
    left_office_ms: Option<u64>,
    /// The wall clock's steps back, which move the times above with it.
    clock: ClockSteps,
    /// Awake, idle and quiet: the end of the zookeeper lease stretch in force.
    quiet_until_ms: Option<u64>,
}

/// How long a Pehredar that stepped down still holds and forwards the produces sent to
/// it by producers whose metadata names it (they learn of the new Pehredar only when
/// they re-read the metadata), ms.
pub const HOLD_AFTER_OFFICE_MS: u64 = 10_000;

impl Node {
    /// A node starting at `now_ms`, awake, counting itself busy until `idle_ms` later.
    pub fn new(config: NodeConfig, now: UnixMs) -> Node {
        let now_ms = now.as_millis();
        let config_vitals = config.vitals;
        let role = if config.participating {
            NodeRole::Awake
        } else {
            NodeRole::OptedOut
        };
        Node {
            config,
            state: None,
            phase: Phase::Awake,
            office: None,
            last_traffic_ms: now_ms,
            woke_ms: now_ms,
            obeyed_generation: 0,
            traffic_requested: None,
            lost_term: None,
            role,
            since_ms: now_ms,
            published: None,
            actions: Vec::new(),
            vitals: Vitals::new(config_vitals),
            heard_lease: None,
            left_office_ms: None,
            clock: ClockSteps::starting_at(now),
            quiet_until_ms: None,
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Its role now.
    pub fn role(&self) -> NodeRole {
        self.role
    }

    /// Whether it is dormant (including while a check-in is out).
    pub fn is_dormant(&self) -> bool {
        !matches!(self.phase, Phase::Awake)
    }

    /// The term number it holds office in, if it is the Pehredar.
    pub fn office(&self) -> Option<u64> {
        self.office
    }

    /// Whether it holds and forwards a produce for a partition it does not lead (the
    /// producer saw the leader asleep): in office, or out of office for less than
    /// [`HOLD_AFTER_OFFICE_MS`] (a term handover must not turn the produces sent to
    /// the old Pehredar into refusals).
    pub fn holds_produces(&self, now: UnixMs) -> bool {
        let now_ms = now.as_millis();
        self.office.is_some()
            || self
                .left_office_ms
                .is_some_and(|left| now_ms < left.saturating_add(HOLD_AFTER_OFFICE_MS))
    }

    /// The node's own health, as its driver sampled it now.
    pub fn handle_health(&mut self, now: UnixMs, health: NodeHealth) {
        self.observe_clock(now);
        self.vitals.set_health(health);
    }

    /// A round-trip time the driver measured to a peer (the zookeeper, a replica), µs:
    /// a sample of network stability for the lease.
    pub fn handle_rtt_sample(&mut self, now: UnixMs, rtt_us: u32) {
        self.observe_clock(now);
        self.vitals.rtt_sample_us(rtt_us);
    }

    /// Its health, RTT window and lease.
    pub fn vitals(&self) -> &Vitals {
        &self.vitals
    }

    /// As Pehredar, the lease it gives now (with its factors); `None` out of office.
    pub fn lease(&self) -> Option<LeaseParts> {
        self.office.map(|_| self.vitals.lease())
    }

    /// The lease the current Pehredar gave this node in its last check-in reply, ms.
    pub fn pehredar_lease_ms(&self) -> Option<u32> {
        let term = self.state.as_ref()?.term.as_ref()?.number;
        self.heard_lease
            .and_then(|(t, lease)| (t == term).then_some(lease))
    }

    /// How long a dormant node sleeps before checking in: its alarm interval, at most
    /// the Pehredar's lease, and that no shorter than this node's own minimum lease (a
    /// faulty or lying Pehredar can make it check in more often, but no more often than
    /// its own configuration allows, and never less often than its alarm interval).
    fn alarm_in_ms(&self) -> u64 {
        let alarm = self.config.alarm_interval_ms;
        let floor = u64::from(self.config.vitals.lease.min_ms).max(1);
        self.pehredar_lease_ms()
            .map_or(alarm, |lease| alarm.min(u64::from(lease).max(floor)))
    }

    /// The last `/pehra/state` seen.
    pub fn pehra_state(&self) -> Option<&PehraState> {
        self.state.as_ref()
    }

    /// Changes stayAwake at run time (maintenance holds a node awake with it).
    pub fn handle_stay_awake(&mut self, now: UnixMs, stay_awake: bool) {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        self.config.stay_awake = stay_awake;
        if stay_awake && self.is_dormant() {
            self.wake(now_ms, WakeReason::Maintenance);
        }
    }

    /// A new `/pehra/state` was seen.
    pub fn handle_state(&mut self, now: UnixMs, state: &PehraState) {
        self.observe_clock(now);
        self.state = Some(state.clone());
    }

    /// A client request reached this node (produce, fetch, publish, consumer offsets,
    /// records replicated to it).
    pub fn handle_traffic(&mut self, now: UnixMs) {
        self.handle_traffic_since(now, now);
    }

    /// Client requests reached this node, the last of them at `last` (at or before
    /// `now`): what a driver calls when it did not pass on every request, only those that
    /// [`needs_traffic_at_once`](Self::needs_traffic_at_once) asked for, and looks at the
    /// rest when it polls (before [`poll_actions`](Self::poll_actions), so the node does
    /// not fall asleep past them).
    pub fn handle_traffic_since(&mut self, now: UnixMs, last: UnixMs) {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        self.last_traffic_ms = self.last_traffic_ms.max(last.as_millis().min(now_ms));
        if let Some(state) = &self.state {
            if state.enabled
                && !state.traffic_awake
                && self.traffic_requested != Some(state.wake_generation)
            {
                self.traffic_requested = Some(state.wake_generation);
                let term = state.term.as_ref().map_or(0, |t| t.number);
                self.actions.push(Action::Request(PehraRequest::WakeAll {
                    from: self.config.name.clone(),
                    reason: WakeReason::Traffic,
                    term,
                }));
            }
        }
        if self.is_dormant() {
            self.wake(now_ms, WakeReason::Traffic);
        }
    }

    /// Whether a request arriving now must reach the node at once: it is dormant (the
    /// request wakes it), or it would ask the coordinator to wake the cluster. Otherwise
    /// only the time of the last request matters, and the driver may hand it over when
    /// it next polls ([`handle_traffic_since`](Self::handle_traffic_since)): no wake-up
    /// per request.
    pub fn needs_traffic_at_once(&self) -> bool {
        self.is_dormant()
            || self.quiet_until_ms.is_some()
            || self.state.as_ref().is_some_and(|state| {
                state.enabled
                    && !state.traffic_awake
                    && self.traffic_requested != Some(state.wake_generation)
            })
    }

    /// The Pehredar's wake call (`POST /pehra/wake`: it holds traffic for the cluster and
    /// has asked the coordinator for the wakeUpAll itself): wakes now and counts as
    /// traffic, without asking the coordinator again.
    pub fn handle_wake_call(&mut self, now: UnixMs) {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        self.last_traffic_ms = self.last_traffic_ms.max(now_ms);
        if self.is_dormant() {
            self.wake(now_ms, WakeReason::Traffic);
        }
    }

    /// The outcome of the check-in of an [`Action::CheckIn`]: the Pehredar's reply, or
    /// `None` if it did not answer.
    pub fn handle_checkin_result(&mut self, now: UnixMs, reply: Option<CheckInReply>) {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        let Phase::CheckingIn { sent_ms, .. } = self.phase else {
            return;
        };
        if let Some(r) = &reply {
            let rtt = u32::try_from(now_ms.saturating_sub(sent_ms)).unwrap_or(u32::MAX);
            self.vitals.checkin_rtt(rtt);
            if let (Some(term), Some(lease)) = (&r.term, r.lease_ms) {
                self.heard_lease = Some((term.number, lease));
            }
        }
        match reply.map(|r| r.directive) {
            Some(Directive::SleepUntil { at_ms }) if self.may_sleep(now_ms, true) => {
                let latest = now_ms + self.alarm_in_ms();
                let until_ms = if at_ms > now_ms {
                    at_ms.min(latest)
                } else {
                    latest
                };
                self.phase = Phase::Dormant { alarm_ms: until_ms };
                self.actions.push(Action::Sleep { until_ms });
            }
            Some(Directive::SleepUntil { .. }) => self.wake(now_ms, self.state_reason()),
            Some(Directive::WakeNow | Directive::StayAwake | Directive::Rejoin) => {
                self.wake(now_ms, self.state_reason())
            }
            None => {
                let term = self.state.as_ref().and_then(|s| s.term.as_ref());
                let term = term.map_or(0, |t| t.number);
                self.lost_term = Some(term);
                self.actions.push(Action::Request(PehraRequest::WakeAll {
                    from: self.config.name.clone(),
                    reason: WakeReason::PehredarLost,
                    term,
                }));
                self.wake(now_ms, WakeReason::PehredarLost);
            }
        }
    }

    /// The Pehredar's answer to a dormant node's check-in: wake now while PEHRA is
    /// disabled, the cluster is in traffic mode, an election is open or the node has
    /// something to send; otherwise sleep until its next alarm, but no longer than the
    /// Pehredar's adaptive lease, which the reply carries. The RTT the node reports is
    /// a sample of network stability.
    pub fn handle_checkin(&mut self, now: UnixMs, checkin: &CheckIn) -> CheckInReply {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        if let Some(h) = &checkin.health {
            if h.rtt_ms > 0 {
                self.vitals.rtt_sample_us(h.rtt_ms.saturating_mul(1000));
            }
        }
        let mut reply = self.reply(now_ms, checkin);
        if let Some(lease) = self.lease() {
            let lease = lease.lease_ms;
            reply.lease_ms = Some(lease);
            if let Directive::SleepUntil { at_ms } = &mut reply.directive {
                *at_ms = (*at_ms).min(now_ms + u64::from(lease));
            }
        }
        reply
    }

    fn reply(&self, now_ms: u64, checkin: &CheckIn) -> CheckInReply {
        let state = self.state.as_ref();
        let term = state.and_then(|s| s.term.clone());
        let wake = match state {
            None => true,
            Some(s) => !s.enabled || s.traffic_awake || s.next.is_some(),
        } || checkin.traffic_waiting;
        let directive = if wake {
            Directive::WakeNow
        } else {
            let at_ms = match checkin.next_alarm_ms {
                Some(at) if at > now_ms => at,
                _ => now_ms + self.config.alarm_interval_ms,
            };
            Directive::SleepUntil { at_ms }
        };
        CheckInReply {
            pehredar: term.as_ref().map(|t| t.pehredar.clone()),
            pehredar_addr: self.office.map(|_| self.config.addr.clone()),
            gateway_ms: Some(now_ms),
            term,
            directive,
            pending: 0,
            lease_ms: None,
        }
    }

    /// A gateway's answer to a device's check-in (any broker answers them). Unlike a
    /// broker's, a device is not kept awake by the cluster's traffic mode (its own
    /// readings are that traffic: it would never sleep again) nor by an election (it
    /// keeps its gateway): only PEHRA disabled by the admin keeps it awake; otherwise it
    /// sleeps until the alarm it asked for, or one of this node's alarm intervals.
    pub fn handle_device_checkin(&self, now: UnixMs, checkin: &CheckIn) -> CheckInReply {
        let now_ms = now.as_millis();
        let mut reply = self.reply(now_ms, checkin);
        let enabled = self.state.as_ref().is_none_or(|s| s.enabled);
        reply.directive = if enabled {
            let at_ms = checkin
                .next_alarm_ms
                .filter(|at| *at > now_ms)
                .unwrap_or(now_ms + self.config.alarm_interval_ms);
            Directive::SleepUntil { at_ms }
        } else {
            Directive::StayAwake
        };
        reply
    }

    /// Applies the rules at `now_ms` and returns what to do, in order.
    pub fn poll_actions(&mut self, now: UnixMs) -> Vec<Action> {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        self.update_office(now_ms);
        if self.is_dormant() {
            if let Some(reason) = self.wake_cause() {
                self.wake(now_ms, reason);
            }
        }
        match self.phase {
            Phase::Awake => {
                if let Some(state) = &self.state {
                    self.obeyed_generation = self.obeyed_generation.max(state.wake_generation);
                }
                if self.may_sleep(now_ms, false) {
                    // The sleep stretches the lease itself.
                    self.quiet_until_ms = None;
                    let until_ms = now_ms + self.alarm_in_ms();
                    self.phase = Phase::Dormant { alarm_ms: until_ms };
                    self.actions.push(Action::Sleep { until_ms });
                } else {
                    self.keep_quiet(now_ms);
                }
            }
            Phase::Dormant { alarm_ms } if now_ms >= alarm_ms => {
                let pehredar = self
                    .state
                    .as_ref()
                    .and_then(|s| s.term.as_ref())
                    .map(|t| t.pehredar.clone());
                match pehredar {
                    Some(pehredar) => {
                        self.phase = Phase::CheckingIn {
                            alarm_ms,
                            sent_ms: now_ms,
                        };
                        let checkin = CheckIn {
                            node: self.config.name.clone(),
                            role: NodeRole::Dormant,
                            mains_powered: self.config.mains_powered,
                            next_alarm_ms: Some(now_ms + self.alarm_in_ms()),
                            traffic_waiting: false,
                            health: self.vitals.report(),
                        };
                        self.actions.push(Action::CheckIn { pehredar, checkin });
                    }
                    None => self.wake(now_ms, WakeReason::Election),
                }
            }
            _ => {}
        }
        self.publish(now_ms);
        core::mem::take(&mut self.actions)
    }

    /// Awake and staying so: while idle (and PEHRA on), the zookeeper lease is stretched
    /// by [`NodeConfig::quiet_lease_ms`] at a time instead of heartbeats; traffic ends it.
    /// Not the Pehredar: the sleepers rely on its death being noticed within a session
    /// timeout (its status goes with its session, and the coordinator wakes them), not at
    /// their next alarm.
    fn keep_quiet(&mut self, now_ms: u64) {
        let quiet = self.config.quiet_lease_ms > 0
            && self.config.participating
            && self.office.is_none()
            && self.idle(now_ms)
            && self.state.as_ref().is_some_and(|s| s.enabled);
        match (quiet, self.quiet_until_ms) {
            (true, Some(until_ms)) if now_ms < until_ms => {}
            (true, _) => {
                let until_ms = now_ms + self.config.quiet_lease_ms;
                self.quiet_until_ms = Some(until_ms);
                self.actions.push(Action::StretchLease { until_ms });
            }
            (false, Some(_)) => {
                self.quiet_until_ms = None;
                self.actions.push(Action::ResumeLease);
            }
            (false, None) => {}
        }
    }

    /// When [`Node::poll_actions`] must be called next even without input: the alarm, or when
    /// the node turns idle. `None`: only inputs matter.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        self.deadline_ms().map(UnixMs::from_millis)
    }

    fn deadline_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Dormant { alarm_ms } => Some(alarm_ms),
            Phase::CheckingIn { .. } => None,
            Phase::Awake => {
                let idle_at = self.last_traffic_ms + self.config.idle_ms;
                let sleepy_at = idle_at.max(self.woke_ms + self.config.idle_ms);
                let rule = if self.published.as_ref().is_none_or(|s| !s.idle) {
                    Some(idle_at)
                } else {
                    // Only if it would sleep then: a deadline in the past that changes
                    // nothing would spin the driver.
                    self.may_sleep(sleepy_at, false).then_some(sleepy_at)
                };
                match (rule, self.quiet_until_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Feeds the time of an input. When the wall clock stepped back, every time this node
    /// derived from the old clock moves back with it, so its alarm and its idle wait keep
    /// what was left of them (without this, a one-hour NTP correction kept a dormant
    /// broker asleep an hour past its check-in).
    fn observe_clock(&mut self, now: UnixMs) {
        let Some(back) = self.clock.observe(now) else {
            return;
        };
        let shift = |t: &mut u64| *t = t.saturating_sub(back);
        shift(&mut self.last_traffic_ms);
        shift(&mut self.woke_ms);
        shift(&mut self.since_ms);
        if let Some(left) = &mut self.left_office_ms {
            shift(left);
        }
        if let Some(until) = &mut self.quiet_until_ms {
            shift(until);
        }
        match &mut self.phase {
            Phase::Awake => {}
            Phase::Dormant { alarm_ms } => shift(alarm_ms),
            Phase::CheckingIn { alarm_ms, sent_ms } => {
                shift(alarm_ms);
                shift(sent_ms);
            }
        }
    }

    fn idle(&self, now_ms: u64) -> bool {
        now_ms >= self.last_traffic_ms + self.config.idle_ms
    }

    /// The sleep rule. `again`: a dormant node deciding to sleep on after a check-in.
    fn may_sleep(&self, now_ms: u64, again: bool) -> bool {
        let Some(state) = &self.state else {
            return false;
        };
        let named = |t: &Option<crate::wire::Term>| {
            t.as_ref().is_some_and(|t| t.pehredar == self.config.name)
        };
        let in_office = state.term.as_ref();
        self.config.participating
            && !self.config.stay_awake
            && self.office.is_none()
            && !named(&state.term)
            && !named(&state.next)
            && state.enabled
            && !state.traffic_awake
            && in_office.is_some()
            && in_office.map(|t| t.number) != self.lost_term
            && state.next.is_none()
            && (again || (self.idle(now_ms) && now_ms >= self.woke_ms + self.config.idle_ms))
    }

    /// Why a dormant node must wake now, if it must.
    fn wake_cause(&self) -> Option<WakeReason> {
        let state = self.state.as_ref()?;
        if state.wake_generation > self.obeyed_generation {
            return Some(state.wake_reason.unwrap_or(WakeReason::Admin));
        }
        if !state.enabled {
            return Some(WakeReason::Admin);
        }
        if state.traffic_awake {
            return Some(WakeReason::Traffic);
        }
        if self.office.is_some() || state.next.is_some() {
            return Some(WakeReason::Election);
        }
        if self.config.stay_awake {
            return Some(WakeReason::Maintenance);
        }
        None
    }

    /// A reason to give when the Pehredar tells the node to wake.
    fn state_reason(&self) -> WakeReason {
        match &self.state {
            Some(s) if s.traffic_awake => WakeReason::Traffic,
            Some(s) if s.next.is_some() => WakeReason::Election,
            Some(s) => s.wake_reason.unwrap_or(WakeReason::Admin),
            None => WakeReason::Admin,
        }
    }

    fn wake(&mut self, now_ms: u64, reason: WakeReason) {
        if let Some(state) = &self.state {
            self.obeyed_generation = self.obeyed_generation.max(state.wake_generation);
        }
        if self.is_dormant() {
            self.woke_ms = now_ms;
            self.phase = Phase::Awake;
            self.actions.push(Action::Wake { reason });
        }
    }

    /// Takes office when named in `next` (or in a term, such as allDown's temporary one),
    /// keeps it while named in `term`, steps down when named in neither.
    fn update_office(&mut self, now_ms: u64) {
        if !self.config.participating {
            self.office = None;
            return;
        }
        let name = &self.config.name;
        let was = self.office;
        self.office = self.state.as_ref().and_then(|s| match (&s.next, &s.term) {
            (Some(next), _) if &next.pehredar == name => Some(next.number),
            (_, Some(term)) if &term.pehredar == name => Some(term.number),
            _ => None,
        });
        if self.office.is_some() && self.is_dormant() {
            self.wake(now_ms, WakeReason::Election);
        }
        if was.is_some() && self.office.is_none() {
            self.woke_ms = now_ms;
            self.left_office_ms = Some(now_ms);
        }
    }

    fn publish(&mut self, now_ms: u64) {
        let role = if !self.config.participating {
            NodeRole::OptedOut
        } else if self.office.is_some() {
            NodeRole::Pehredar
        } else if self.is_dormant() {
            NodeRole::Dormant
        } else {
            NodeRole::Awake
        };
        if role != self.role {
            self.role = role;
            self.since_ms = now_ms;
        }
        let next_alarm_ms = match self.phase {
            Phase::Dormant { alarm_ms } | Phase::CheckingIn { alarm_ms, .. } => Some(alarm_ms),
            Phase::Awake => None,
        };
        let nhi = self.vitals.status_nhi();
        let lease_ms = self.office.map(|_| self.vitals.status_lease());
        let rtt_ms = self.vitals.status_rtt_ms();
        let status = NodeStatus {
            node: self.config.name.clone(),
            addr: self.config.addr.clone(),
            role,
            candidate: self.config.participating && self.config.mains_powered,
            stay_awake: self.config.stay_awake,
            idle: self.idle(now_ms),
            next_alarm_ms,
            office: self.office,
            wake_generation: self.obeyed_generation,
            since_ms: self.since_ms,
            nhi,
            lease_ms,
            rtt_ms,
        };
        if self.published.as_ref() != Some(&status) {
            self.published = Some(status.clone());
            self.actions.push(Action::PublishStatus(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Term;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    const IDLE: u64 = 1_000;
    const ALARM: u64 = 10_000;
    const T0: u64 = 1_700_000_000_000;

    /// The time `ms` after the Unix epoch.
    fn at(ms: u64) -> UnixMs {
        UnixMs::from_millis(ms)
    }

    fn config(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            addr: "127.0.0.1:5683".to_string(),
            participating: true,
            mains_powered: true,
            stay_awake: false,
            idle_ms: IDLE,
            alarm_interval_ms: ALARM,
            quiet_lease_ms: 0,
            vitals: VitalsConfig::default(),
        }
    }

    fn term(number: u64, pehredar: &str) -> Term {
        Term {
            number,
            pehredar: pehredar.to_string(),
            started_ms: T0,
            ends_ms: T0 + 3_600_000,
        }
    }

    /// PEHRA on, broker-9 in office for term 1.
    fn in_office() -> PehraState {
        PehraState {
            term: Some(term(1, "broker-9")),
            ..PehraState::default()
        }
    }

    fn sleeps(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::Sleep { until_ms } => Some(*until_ms),
            _ => None,
        })
    }

    fn woke(actions: &[Action]) -> Option<WakeReason> {
        actions.iter().find_map(|a| match a {
            Action::Wake { reason } => Some(*reason),
            _ => None,
        })
    }

    fn status(actions: &[Action]) -> Option<&NodeStatus> {
        actions.iter().rev().find_map(|a| match a {
            Action::PublishStatus(s) => Some(s),
            _ => None,
        })
    }

    fn requests(actions: &[Action]) -> Vec<&PehraRequest> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Request(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// A node that has gone dormant at T0 + IDLE under `in_office()`.
    fn dormant() -> Node {
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(at(T0), &in_office());
        n.poll_actions(at(T0));
        let a = n.poll_actions(at(T0 + IDLE));
        assert_eq!(sleeps(&a), Some(T0 + IDLE + ALARM));
        n
    }

    /// A driver that hands over requests only when it polls (no wake-up per request)
    /// keeps the node awake exactly as long as one that passes on each: the idle wait
    /// runs from the last request, whenever the node learns of it. A dormant node, or one
    /// that would ask for the cluster to be woken, needs each request at once.
    #[test]
    fn traffic_handed_over_at_the_next_poll_counts_from_when_it_arrived() {
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(
            at(T0),
            &PehraState {
                traffic_awake: true,
                ..in_office()
            },
        );
        n.poll_actions(at(T0));
        assert!(!n.needs_traffic_at_once());
        // Requests until T0 + 700, learnt at T0 + IDLE (the idle deadline): still awake.
        n.handle_traffic_since(at(T0 + IDLE), at(T0 + 700));
        assert!(sleeps(&n.poll_actions(at(T0 + IDLE))).is_none());
        assert_eq!(
            n.poll_timeout().map(UnixMs::as_millis),
            Some(T0 + 700 + IDLE)
        );
        // A "last" after "now" (readings on two threads) counts as now.
        n.handle_traffic_since(at(T0 + 800), at(T0 + 900));
        assert_eq!(
            n.poll_timeout().map(UnixMs::as_millis),
            Some(T0 + 800 + IDLE)
        );
        let dormant = dormant();
        assert!(dormant.needs_traffic_at_once());
        let mut fresh = Node::new(config("broker-1"), at(T0));
        fresh.handle_state(at(T0), &in_office());
        assert!(
            fresh.needs_traffic_at_once(),
            "the cluster is not awake for traffic: the first request asks for it"
        );
    }

    /// An hour's NTP correction back, while dormant: the alarm keeps what was left of
    /// its wait (it once rang an hour late: the node missed every check-in meanwhile).
    #[test]
    fn a_clock_step_back_does_not_lengthen_the_alarm_or_the_idle_wait() {
        const HOUR: u64 = 3_600_000;
        let mut n = dormant();
        let alarm = T0 + IDLE + ALARM;
        // 2 s into the sleep (an input read the clock then) the clock goes back an hour.
        n.handle_rtt_sample(at(T0 + IDLE + 2_000), 500);
        assert!(sleeps(&n.poll_actions(at(T0 + IDLE + 2_000 - HOUR))).is_none());
        assert_eq!(n.poll_timeout().map(UnixMs::as_millis), Some(alarm - HOUR));
        let a = n.poll_actions(at(alarm - HOUR));
        assert!(
            matches!(&a[..], [Action::CheckIn { .. }, ..]),
            "checks in on time: {a:?}"
        );

        // Awake with traffic: the idle wait keeps its length too.
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(at(T0), &in_office());
        n.handle_traffic(at(T0 + 100));
        n.poll_actions(at(T0 + 300));
        n.poll_actions(at(T0 + 300 - HOUR));
        assert_eq!(
            n.poll_timeout().map(UnixMs::as_millis),
            Some(T0 + 100 + IDLE - HOUR)
        );
        let a = n.poll_actions(at(T0 + 100 + IDLE - HOUR));
        assert!(sleeps(&a).is_some(), "sleeps on time: {a:?}");

        // Small disorder between threads' readings moves nothing.
        let mut n = dormant();
        n.poll_actions(at(T0 + IDLE + 900));
        n.poll_actions(at(T0 + IDLE + 500));
        assert_eq!(n.poll_timeout().map(UnixMs::as_millis), Some(alarm));
    }

    #[test]
    fn publishes_its_status_once_and_again_only_on_change() {
        let mut n = Node::new(config("broker-1"), at(T0));
        let a = n.poll_actions(at(T0));
        let s = status(&a).expect("first status");
        assert_eq!(s.role, NodeRole::Awake);
        assert!(s.candidate && !s.idle && s.office.is_none());
        assert!(n.poll_actions(at(T0 + 1)).is_empty(), "nothing changed");
        // Idle flips after idle_ms (no state: no sleep).
        assert_eq!(n.poll_timeout().map(UnixMs::as_millis), Some(T0 + IDLE));
        let a = n.poll_actions(at(T0 + IDLE));
        assert!(status(&a).expect("idle status").idle);
        assert!(sleeps(&a).is_none(), "no state, no sleep");
        // Idle, and no reason to sleep: no deadline to spin on.
        assert_eq!(n.poll_timeout().map(UnixMs::as_millis), None);
        n.handle_traffic(at(T0 + IDLE + 5));
        assert!(
            !status(&n.poll_actions(at(T0 + IDLE + 5)))
                .expect("busy")
                .idle
        );
    }

    #[test]
    fn sleeps_after_idle_under_a_term_and_checks_in_at_the_alarm() {
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(at(T0), &in_office());
        assert!(
            sleeps(&n.poll_actions(at(T0 + IDLE - 1))).is_none(),
            "not idle yet"
        );
        let a = n.poll_actions(at(T0 + IDLE));
        let until = sleeps(&a).expect("sleeps");
        assert_eq!(until, T0 + IDLE + ALARM);
        let s = status(&a).expect("status");
        assert_eq!(s.role, NodeRole::Dormant);
        assert_eq!(s.next_alarm_ms, Some(until));
        assert_eq!(n.poll_timeout().map(UnixMs::as_millis), Some(until));
        assert!(n.poll_actions(at(until - 1)).is_empty());
        let a = n.poll_actions(at(until));
        match &a[..] {
            [Action::CheckIn { pehredar, checkin }] => {
                assert_eq!(pehredar, "broker-9");
                assert_eq!(checkin.node, "broker-1");
                assert_eq!(checkin.role, NodeRole::Dormant);
            }
            other => panic!("expected a check-in, got {other:?}"),
        }
        assert_eq!(
            n.poll_timeout().map(UnixMs::as_millis),
            None,
            "waiting for the answer"
        );
        // Told to sleep on.
        n.handle_checkin_result(
            at(until + 5),
            Some(CheckInReply {
                pehredar: Some("broker-9".to_string()),
                pehredar_addr: None,
                gateway_ms: None,
                term: Some(term(1, "broker-9")),
                directive: Directive::SleepUntil {
                    at_ms: until + ALARM,
                },
                pending: 0,
                lease_ms: None,
            }),
        );
        let a = n.poll_actions(at(until + 5));
        assert_eq!(sleeps(&a), Some(until + ALARM));
        assert_eq!(
            status(&a).expect("status").next_alarm_ms,
            Some(until + ALARM)
        );
        assert!(n.is_dormant());
    }

    #[test]
    fn wake_now_at_the_check_in_wakes() {
        for directive in [Directive::WakeNow, Directive::StayAwake] {
            let mut n = dormant();
            let alarm = T0 + IDLE + ALARM;
            assert!(matches!(
                &n.poll_actions(at(alarm))[..],
                [Action::CheckIn { .. }]
            ));
            n.handle_checkin_result(
                at(alarm),
                Some(CheckInReply {
                    pehredar: None,
                    pehredar_addr: None,
                    gateway_ms: None,
                    term: None,
                    directive,
                    pending: 0,
                    lease_ms: None,
                }),
            );
            let a = n.poll_actions(at(alarm));
            assert!(woke(&a).is_some(), "{directive:?} wakes");
            assert_eq!(status(&a).expect("status").role, NodeRole::Awake);
        }
    }

    #[test]
    fn a_silent_pehredar_is_reported_lost_and_not_slept_under_again() {
        let mut n = dormant();
        let alarm = T0 + IDLE + ALARM;
        n.poll_actions(at(alarm));
        n.handle_checkin_result(at(alarm + 3_000), None);
        let a = n.poll_actions(at(alarm + 3_000));
        assert_eq!(woke(&a), Some(WakeReason::PehredarLost));
        assert_eq!(
            requests(&a),
            vec![&PehraRequest::WakeAll {
                from: "broker-1".to_string(),
                reason: WakeReason::PehredarLost,
                term: 1,
            }]
        );
        assert!(
            sleeps(&n.poll_actions(at(alarm + 100_000))).is_none(),
            "same term"
        );
        // A new term: it may sleep again.
        let mut s = in_office();
        s.term = Some(term(2, "broker-7"));
        n.handle_state(at(alarm + 100_001), &s);
        assert!(sleeps(&n.poll_actions(at(alarm + 100_001))).is_some());
    }

    #[test]
    fn a_larger_wake_generation_wakes_a_dormant_node_once() {
        let mut n = dormant();
        let mut s = in_office();
        s.wake_generation = 1;
        s.wake_reason = Some(WakeReason::Admin);
        n.handle_state(at(T0 + IDLE + 1), &s);
        let a = n.poll_actions(at(T0 + IDLE + 1));
        assert_eq!(woke(&a), Some(WakeReason::Admin));
        assert_eq!(status(&a).expect("status").wake_generation, 1);
        // Obeyed: the same generation does not keep it awake; it sleeps an idle period
        // after waking.
        assert!(sleeps(&n.poll_actions(at(T0 + 2 * IDLE))).is_none());
        let a = n.poll_actions(at(T0 + 2 * IDLE + 1));
        assert_eq!(sleeps(&a), Some(T0 + 2 * IDLE + 1 + ALARM));
    }

    #[test]
    fn disabled_traffic_mode_and_an_open_election_wake_and_keep_awake() {
        let mut disabled = in_office();
        disabled.enabled = false;
        let mut traffic = in_office();
        traffic.traffic_awake = true;
        let mut election = in_office();
        election.next = Some(term(2, "broker-7"));
        for (s, reason) in [
            (disabled, WakeReason::Admin),
            (traffic, WakeReason::Traffic),
            (election, WakeReason::Election),
        ] {
            let mut n = dormant();
            n.handle_state(at(T0 + IDLE + 1), &s);
            assert_eq!(woke(&n.poll_actions(at(T0 + IDLE + 1))), Some(reason));
            assert!(
                sleeps(&n.poll_actions(at(T0 + 10 * IDLE))).is_none(),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn no_sleep_without_a_term_or_when_opted_out_or_staying_awake() {
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(at(T0), &PehraState::default());
        assert!(
            sleeps(&n.poll_actions(at(T0 + 10 * IDLE))).is_none(),
            "no Pehredar"
        );

        let mut c = config("broker-1");
        c.participating = false;
        let mut n = Node::new(c, at(T0));
        n.handle_state(at(T0), &in_office());
        let a = n.poll_actions(at(T0 + 10 * IDLE));
        assert!(sleeps(&a).is_none());
        let s = status(&a).expect("status");
        assert_eq!(s.role, NodeRole::OptedOut);
        assert!(!s.candidate);

        let mut c = config("broker-1");
        c.stay_awake = true;
        let mut n = Node::new(c, at(T0));
        n.handle_state(at(T0), &in_office());
        let a = n.poll_actions(at(T0 + 10 * IDLE));
        assert!(sleeps(&a).is_none());
        assert!(status(&a).expect("status").candidate);
    }

    fn stretches(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StretchLease { until_ms } => Some(*until_ms),
                _ => None,
            })
            .collect()
    }

    fn resumes(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::ResumeLease))
            .count()
    }

    /// An awake node that stays awake (here `stay_awake`) stretches its zookeeper lease
    /// once idle, renews the stretch when it runs out, and resumes heartbeats on its
    /// first request; with the quiet lease off it never stretches, nor as Pehredar.
    #[test]
    fn an_idle_node_that_stays_awake_renews_its_lease_once_per_quiet_lease() {
        const QUIET: u64 = 60_000;
        let mut c = config("broker-1");
        c.stay_awake = true;
        c.quiet_lease_ms = QUIET;
        let mut n = Node::new(c.clone(), at(T0));
        n.handle_state(at(T0), &in_office());
        assert!(stretches(&n.poll_actions(at(T0 + 1))).is_empty(), "busy");
        assert_eq!(n.poll_timeout(), Some(at(T0 + IDLE)), "idle then");
        let a = n.poll_actions(at(T0 + IDLE));
        assert_eq!(stretches(&a), vec![T0 + IDLE + QUIET]);
        assert!(sleeps(&a).is_none(), "it stays awake");
        assert_eq!(n.poll_timeout(), Some(at(T0 + IDLE + QUIET)), "the renewal");
        assert!(stretches(&n.poll_actions(at(T0 + IDLE + QUIET - 1))).is_empty());
        let a = n.poll_actions(at(T0 + IDLE + QUIET));
        assert_eq!(stretches(&a), vec![T0 + IDLE + 2 * QUIET]);
        // A request: it needs the node at once, which resumes the heartbeats.
        assert!(n.needs_traffic_at_once());
        let busy = T0 + IDLE + QUIET + 5;
        n.handle_traffic(at(busy));
        let a = n.poll_actions(at(busy));
        assert_eq!(resumes(&a), 1);
        assert!(stretches(&a).is_empty());
        assert_eq!(n.poll_timeout(), Some(at(busy + IDLE)), "idle again then");
        assert_eq!(
            stretches(&n.poll_actions(at(busy + IDLE))),
            vec![busy + IDLE + QUIET]
        );

        // PEHRA off: the plain heartbeat, whatever the quiet lease.
        let mut off = Node::new(c.clone(), at(T0));
        off.handle_state(
            at(T0),
            &PehraState {
                enabled: false,
                ..in_office()
            },
        );
        assert!(stretches(&off.poll_actions(at(T0 + 10 * IDLE))).is_empty());
        // In office: the Pehredar heartbeats (its death must end its session promptly).
        let mut pc = config("broker-9");
        pc.quiet_lease_ms = QUIET;
        let mut pehredar = Node::new(pc, at(T0));
        pehredar.handle_state(at(T0), &in_office());
        let a = pehredar.poll_actions(at(T0 + 10 * IDLE));
        assert_eq!(pehredar.office(), Some(1));
        assert!(stretches(&a).is_empty());
        // The quiet lease off: likewise.
        c.quiet_lease_ms = 0;
        let mut plain = Node::new(c, at(T0));
        plain.handle_state(at(T0), &in_office());
        assert!(stretches(&plain.poll_actions(at(T0 + 10 * IDLE))).is_empty());
    }

    /// A quiet node that may sleep goes dormant (the sleep stretches its lease itself)
    /// and wakes to the plain heartbeat, not to a quiet lease left over.
    #[test]
    fn a_quiet_node_that_goes_dormant_drops_its_quiet_lease() {
        let mut c = config("broker-1");
        c.quiet_lease_ms = 60_000;
        let mut n = Node::new(c, at(T0));
        // No term yet: it may not sleep, so it turns quiet.
        n.handle_state(at(T0), &PehraState::default());
        assert_eq!(stretches(&n.poll_actions(at(T0 + IDLE))).len(), 1);
        // A term: it sleeps (the driver's sleep stretches the lease to the alarm).
        n.handle_state(at(T0 + IDLE + 1), &in_office());
        let a = n.poll_actions(at(T0 + 2 * IDLE + 1));
        assert!(sleeps(&a).is_some());
        assert!(stretches(&a).is_empty() && resumes(&a) == 0);
        assert_eq!(
            n.poll_timeout(),
            sleeps(&a).map(at),
            "only the alarm: no quiet renewal while dormant"
        );
    }

    #[test]
    fn named_in_next_takes_office_and_steps_down_when_replaced() {
        let mut n = dormant();
        let mut s = in_office();
        s.next = Some(term(2, "broker-1"));
        n.handle_state(at(T0 + IDLE + 1), &s);
        let a = n.poll_actions(at(T0 + IDLE + 1));
        assert_eq!(woke(&a), Some(WakeReason::Election));
        let st = status(&a).expect("status");
        assert_eq!((st.role, st.office), (NodeRole::Pehredar, Some(2)));
        assert!(n.holds_produces(at(T0 + 1000 * IDLE)), "in office");
        // The coordinator moves next to term: still in office, never sleeps.
        s.term = s.next.take();
        n.handle_state(at(T0 + IDLE + 2), &s);
        assert!(n
            .poll_actions(at(T0 + 100 * IDLE))
            .iter()
            .all(|a| !matches!(a, Action::Sleep { .. })));
        assert_eq!(n.office(), Some(2));
        // Handover: broker-7 elected; broker-1 keeps office until it has taken it.
        s.next = Some(term(3, "broker-7"));
        n.handle_state(at(T0 + 100 * IDLE), &s);
        n.poll_actions(at(T0 + 100 * IDLE));
        assert_eq!(n.office(), Some(2));
        s.term = s.next.take();
        n.handle_state(at(T0 + 100 * IDLE + 1), &s);
        let a = n.poll_actions(at(T0 + 100 * IDLE + 1));
        let st = status(&a).expect("stepped down");
        assert_eq!((st.role, st.office), (NodeRole::Awake, None));
        // It still forwards the produces sent to it for a while, then no more.
        let left = T0 + 100 * IDLE + 1;
        assert!(n.holds_produces(at(left + HOLD_AFTER_OFFICE_MS - 1)));
        assert!(!n.holds_produces(at(left + HOLD_AFTER_OFFICE_MS)));
        // Then it may sleep like anyone, an idle period later.
        assert!(sleeps(&n.poll_actions(at(T0 + 101 * IDLE + 1))).is_some());
    }

    #[test]
    fn a_temporary_term_for_it_takes_office() {
        let mut n = Node::new(config("broker-1"), at(T0));
        let s = PehraState {
            term: Some(term(5, "broker-1")),
            temporary: true,
            ..PehraState::default()
        };
        n.handle_state(at(T0), &s);
        let a = n.poll_actions(at(T0));
        assert_eq!(status(&a).expect("status").office, Some(5));
        assert_eq!(n.role(), NodeRole::Pehredar);
    }

    #[test]
    fn the_pehredars_wake_call_wakes_without_asking_the_coordinator_again() {
        let mut n = dormant();
        n.handle_wake_call(at(T0 + IDLE + 50));
        let a = n.poll_actions(at(T0 + IDLE + 50));
        assert_eq!(woke(&a), Some(WakeReason::Traffic));
        assert!(requests(&a).is_empty(), "the Pehredar asked already");
        assert!(!status(&a).expect("status").idle);
        // Awake until idle again, as after traffic.
        assert_eq!(sleeps(&n.poll_actions(at(T0 + IDLE + 50 + IDLE - 1))), None);
    }

    #[test]
    fn traffic_requests_a_wake_all_once_per_generation_and_wakes() {
        let mut n = dormant();
        n.handle_traffic(at(T0 + IDLE + 50));
        let a = n.poll_actions(at(T0 + IDLE + 50));
        assert_eq!(woke(&a), Some(WakeReason::Traffic));
        assert_eq!(
            requests(&a),
            vec![&PehraRequest::WakeAll {
                from: "broker-1".to_string(),
                reason: WakeReason::Traffic,
                term: 1,
            }]
        );
        assert!(!status(&a).expect("status").idle);
        n.handle_traffic(at(T0 + IDLE + 60));
        assert!(
            requests(&n.poll_actions(at(T0 + IDLE + 60))).is_empty(),
            "once"
        );
        // The coordinator answered: traffic mode, no more requests.
        let mut s = in_office();
        s.wake_generation = 1;
        s.traffic_awake = true;
        n.handle_state(at(T0 + IDLE + 70), &s);
        n.handle_traffic(at(T0 + IDLE + 70));
        assert!(requests(&n.poll_actions(at(T0 + IDLE + 70))).is_empty());
        // Back in PEHRA mode at a new generation: traffic asks again.
        s.traffic_awake = false;
        n.handle_state(at(T0 + IDLE + 80), &s);
        n.handle_traffic(at(T0 + IDLE + 80));
        assert_eq!(requests(&n.poll_actions(at(T0 + IDLE + 80))).len(), 1);
    }

    #[test]
    fn no_wake_all_request_while_disabled() {
        let mut n = Node::new(config("broker-1"), at(T0));
        let mut s = in_office();
        s.enabled = false;
        n.handle_state(at(T0), &s);
        n.handle_traffic(at(T0 + 1));
        assert!(requests(&n.poll_actions(at(T0 + 1))).is_empty());
    }

    #[test]
    fn stay_awake_at_run_time_wakes_a_dormant_node() {
        let mut n = dormant();
        n.handle_stay_awake(at(T0 + IDLE + 1), true);
        let a = n.poll_actions(at(T0 + IDLE + 1));
        assert_eq!(woke(&a), Some(WakeReason::Maintenance));
        assert!(sleeps(&n.poll_actions(at(T0 + 100 * IDLE))).is_none());
        n.handle_stay_awake(at(T0 + 100 * IDLE), false);
        assert!(sleeps(&n.poll_actions(at(T0 + 100 * IDLE))).is_some());
    }

    #[test]
    fn the_pehredar_answers_check_ins() {
        let mut p = Node::new(config("broker-9"), at(T0));
        p.handle_state(at(T0), &in_office());
        p.poll_actions(at(T0));
        let checkin = CheckIn {
            node: "broker-1".to_string(),
            role: NodeRole::Dormant,
            mains_powered: true,
            next_alarm_ms: Some(T0 + 5_000),
            traffic_waiting: false,
            health: None,
        };
        let r = p.handle_checkin(at(T0), &checkin);
        assert_eq!(r.directive, Directive::SleepUntil { at_ms: T0 + 5_000 });
        assert_eq!(r.pehredar.as_deref(), Some("broker-9"));
        assert_eq!(r.term.map(|t| t.number), Some(1));
        let r = p.handle_checkin(
            at(T0),
            &CheckIn {
                next_alarm_ms: None,
                ..checkin.clone()
            },
        );
        assert_eq!(r.directive, Directive::SleepUntil { at_ms: T0 + ALARM });

        let mut s = in_office();
        s.traffic_awake = true;
        p.handle_state(at(T0), &s);
        assert_eq!(
            p.handle_checkin(at(T0), &checkin).directive,
            Directive::WakeNow
        );
        s.traffic_awake = false;
        s.enabled = false;
        p.handle_state(at(T0), &s);
        assert_eq!(
            p.handle_checkin(at(T0), &checkin).directive,
            Directive::WakeNow
        );
    }

    fn checkin_from(node: &str, next_alarm_ms: u64, rtt_ms: Option<u32>) -> CheckIn {
        CheckIn {
            node: node.to_string(),
            role: NodeRole::Dormant,
            mains_powered: true,
            next_alarm_ms: Some(next_alarm_ms),
            traffic_waiting: false,
            health: rtt_ms.map(|rtt_ms| NodeHealth {
                rtt_ms,
                ..NodeHealth::default()
            }),
        }
    }

    #[test]
    fn the_pehredar_gives_its_adaptive_lease_and_bounds_the_sleep_by_it() {
        let mut cfg = config("broker-9");
        cfg.vitals.lease.base_ms = 4_000;
        cfg.vitals.lease.min_ms = 1_000;
        let mut p = Node::new(cfg, at(T0));
        p.handle_state(at(T0), &in_office());
        p.handle_health(at(T0), NodeHealth::default());
        let a = p.poll_actions(at(T0));
        // Excellent, steady, idle: 4 000 × 0.9.
        assert_eq!(status(&a).expect("status").lease_ms, Some(3_600));
        assert_eq!(p.lease().map(|l| l.lease_ms), Some(3_600));
        let r = p.handle_checkin(at(T0), &checkin_from("broker-1", T0 + 5_000, None));
        assert_eq!(r.lease_ms, Some(3_600));
        assert_eq!(r.directive, Directive::SleepUntil { at_ms: T0 + 3_600 });
        // Out of office: no lease.
        let mut n = Node::new(config("broker-1"), at(T0));
        n.handle_state(at(T0), &in_office());
        assert_eq!(n.lease(), None);
        assert_eq!(
            status(&n.poll_actions(at(T0))).expect("status").lease_ms,
            None
        );
    }

    #[test]
    fn jitter_and_load_shorten_the_pehredars_lease_as_the_formula_says() {
        let mut p = Node::new(config("broker-9"), at(T0));
        p.handle_state(at(T0), &in_office());
        p.handle_health(at(T0), NodeHealth::default());
        p.poll_actions(at(T0));
        assert_eq!(p.lease().map(|l| l.lease_ms), Some(54_000));
        // Followers report 10 and 20 ms alternately: deviation 5 ms, −100 ‰.
        for (i, rtt) in [10, 20, 10, 20].into_iter().enumerate() {
            p.handle_checkin(
                at(T0),
                &checkin_from(&format!("broker-{i}"), T0 + 1, Some(rtt)),
            );
        }
        let l = p.lease().expect("in office");
        assert_eq!((l.network_factor, l.lease_ms), (-100, 48_000));
        // Its own CPU saturated: Good (−50), load −200.
        p.handle_health(
            at(T0),
            NodeHealth {
                cpu_permille: 1000,
                ..NodeHealth::default()
            },
        );
        let a = p.poll_actions(at(T0));
        assert_eq!(p.lease().map(|l| l.lease_ms), Some(39_000));
        let s = status(&a).expect("republished");
        assert_eq!(s.lease_ms, Some(39_000));
        assert_eq!(s.nhi, Some(750));
    }

    #[test]
    fn a_lease_below_the_sleepers_own_minimum_is_raised_to_it() {
        let mut n = dormant();
        let alarm = T0 + IDLE + ALARM;
        n.poll_actions(at(alarm));
        n.handle_checkin_result(
            at(alarm),
            Some(CheckInReply {
                pehredar: Some("broker-9".to_string()),
                pehredar_addr: None,
                gateway_ms: None,
                term: Some(term(1, "broker-9")),
                directive: Directive::SleepUntil { at_ms: alarm + 1 },
                pending: 0,
                lease_ms: Some(1),
            }),
        );
        // A 1 ms lease (a faulty or lying Pehredar) cannot make it spin: its own
        // minimum lease is 15 s, above its 10 s alarm, so it sleeps its alarm.
        let a = n.poll_actions(at(alarm));
        assert_eq!(
            sleeps(&a),
            Some(alarm + 1),
            "the Pehredar's own at_ms is kept"
        );
        n.poll_actions(at(alarm + 1));
        n.handle_checkin_result(
            at(alarm + 1),
            Some(CheckInReply {
                pehredar: Some("broker-9".to_string()),
                pehredar_addr: None,
                gateway_ms: None,
                term: Some(term(1, "broker-9")),
                directive: Directive::SleepUntil {
                    at_ms: alarm + 100 * ALARM,
                },
                pending: 0,
                lease_ms: Some(1),
            }),
        );
        assert_eq!(
            sleeps(&n.poll_actions(at(alarm + 1))),
            Some(alarm + 1 + ALARM)
        );
    }

    #[test]
    fn a_sleeper_checks_in_within_the_lease_of_the_pehredar_in_office() {
        let mut n = Node::new(
            NodeConfig {
                vitals: VitalsConfig {
                    lease: crate::health::LeaseConfig {
                        min_ms: 1_000,
                        ..crate::health::LeaseConfig::default()
                    },
                    ..VitalsConfig::default()
                },
                ..config("broker-1")
            },
            at(T0),
        );
        n.handle_state(at(T0), &in_office());
        n.poll_actions(at(T0));
        assert_eq!(
            sleeps(&n.poll_actions(at(T0 + IDLE))),
            Some(T0 + IDLE + ALARM)
        );
        let alarm = T0 + IDLE + ALARM;
        let a = n.poll_actions(at(alarm));
        assert!(matches!(&a[..], [Action::CheckIn { .. }]));
        let reply = |number: u64, lease_ms: u32| CheckInReply {
            pehredar: Some("broker-9".to_string()),
            pehredar_addr: None,
            gateway_ms: None,
            term: Some(term(number, "broker-9")),
            directive: Directive::SleepUntil {
                at_ms: alarm + 10 * ALARM,
            },
            pending: 0,
            lease_ms: Some(lease_ms),
        };
        n.handle_checkin_result(at(alarm + 4), Some(reply(1, 3_000)));
        assert_eq!(n.pehredar_lease_ms(), Some(3_000));
        assert_eq!(n.vitals().report(), None, "no health sampled yet");
        let a = n.poll_actions(at(alarm + 4));
        assert_eq!(sleeps(&a), Some(alarm + 4 + 3_000), "within the lease");
        // Its next check-in reports the round trip it measured and an alarm within it.
        n.handle_health(at(alarm + 5), NodeHealth::default());
        match &n.poll_actions(at(alarm + 4 + 3_000))[..] {
            [Action::CheckIn { checkin, .. }, Action::PublishStatus(_)] => {
                assert_eq!(checkin.health.map(|h| h.rtt_ms), Some(4));
                assert_eq!(checkin.next_alarm_ms, Some(alarm + 4 + 3_000 + 3_000));
            }
            other => panic!("expected a check-in, got {other:?}"),
        }
        // A lease heard under another term number is not this Pehredar's.
        n.handle_checkin_result(at(alarm + 7_010), Some(reply(7, 2_000)));
        assert_eq!(n.pehredar_lease_ms(), None);
        assert_eq!(
            sleeps(&n.poll_actions(at(alarm + 7_010))),
            Some(alarm + 7_010 + ALARM)
        );
    }

    #[test]
    fn devices_sleep_through_traffic_mode_and_elections_but_not_a_disabled_pehra() {
        let mut p = Node::new(config("broker-9"), at(T0));
        let mut s = in_office();
        s.traffic_awake = true;
        s.next = Some(term(2, "broker-3"));
        p.handle_state(at(T0), &s);
        p.poll_actions(at(T0));
        let checkin = CheckIn {
            node: "dev-0001".to_string(),
            role: NodeRole::Dormant,
            mains_powered: false,
            next_alarm_ms: Some(T0 + 2_000),
            traffic_waiting: true,
            health: None,
        };
        let r = p.handle_device_checkin(at(T0), &checkin);
        assert_eq!(r.directive, Directive::SleepUntil { at_ms: T0 + 2_000 });
        assert_eq!(r.gateway_ms, Some(T0));
        let first = CheckIn {
            next_alarm_ms: None,
            ..checkin.clone()
        };
        let r = p.handle_device_checkin(at(T0), &first);
        assert_eq!(r.directive, Directive::SleepUntil { at_ms: T0 + ALARM });
        s.enabled = false;
        p.handle_state(at(T0), &s);
        let r = p.handle_device_checkin(at(T0), &checkin);
        assert_eq!(r.directive, Directive::StayAwake);
    }
}
