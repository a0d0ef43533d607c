//! The PEHRA elector (see the module docs of [`super`] and `docs/pehra.md`).
//!
//! [`Coordinator`] holds the cluster's [`PehraState`] and decides, from what it is told,
//! how that state changes: random elections among the live candidates, terms and their
//! handover, wakeUpAll generations, traffic mode, the admin's switch and allDown. It is
//! sans-IO: the driver feeds it every live [`NodeStatus`], each [`PehraRequest`] and the
//! [`AdminSwitch`], calls [`Coordinator::poll_outputs`] (with the time, milliseconds since the
//! Unix epoch, and a CSPRNG) and writes what comes out; it calls `poll` again at
//! [`Coordinator::poll_timeout`] even if nothing else happened.
//!
//! The rules:
//!
//! - **election**: the Pehredar is drawn uniformly at random among the live candidates
//!   (statuses with `candidate == true`) rated at least `min_health` by their reported
//!   health (or not reporting any), among all live candidates if none is (seed 002:
//!   health narrows the pool, chance still picks), and written as `state.next` (number = the
//!   current term's + 1). It takes office when its status says `office == next.number`:
//!   `next` becomes `state.term` (started when it took office, ending `term_ms` later)
//!   and a [`TermRecord`] is emitted. One that does not take office within
//!   `takeover_timeout_ms` (or whose status goes) is passed over: another is drawn
//!   without it.
//! - **reElection**: `handover_ms` before the term ends a new election is held (the
//!   current Pehredar may be drawn again). The current Pehredar stays in `state.term`
//!   until its successor takes office: a term is extended, never left empty.
//! - **Pehredar lost**: its status is gone, or a `WakeAll { reason: PehredarLost }`
//!   names the current term: `wake_generation + 1`, reason `PehredarLost`, and an
//!   election without it at once. (`state.term` keeps naming it until the successor
//!   takes office, so `term` never becomes empty once set.)
//! - **wakeUpAll for traffic**: sets `traffic_awake` (and bumps the generation) unless
//!   already set. It is cleared once every live participant (role not `opted_out`) has
//!   obeyed that generation (`status.wake_generation` at least the traffic wake's) and
//!   reports `idle`: a status written before the wake does not count.
//! - **Reelect { exclude }**: an election now, without those nodes.
//! - **admin switch**: when its `issued_ms` differs from the last one applied: the
//!   generation grows (reason `Admin`) and `enabled` follows the switch.
//! - **allDown**: once no candidate is alive, the first to come back becomes a temporary
//!   Pehredar directly (`next`, then `term` with `state.temporary` once it takes office);
//!   once every node of `state.known` is back an ordinary election is held. If all come
//!   back at once the election is ordinary. On the very first start (`known` empty) the
//!   first candidate is simply elected.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use rand::{Rng, RngExt};

use crate::health::{HealthClass, NhiConfig, NhiThresholds};
use crate::time::{ClockSteps, UnixMs};
use crate::wire::{
    AdminSwitch, NodeRole, NodeStatus, PehraRequest, PehraState, Term, TermRecord, WakeReason,
};

/// The coordinator's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// How long a term lasts, from when the Pehredar took office.
    pub term_ms: u64,
    /// How long before a term ends its successor is elected.
    pub handover_ms: u64,
    /// How long an elected node has to take office before another is drawn.
    pub takeover_timeout_ms: u64,
    /// How candidates' Node Health Index (their status's `nhi`) is classed.
    pub thresholds: NhiThresholds,
    /// The draw is among the eligible candidates rated at least this (or reporting no
    /// health); only if there is none is it among all eligible candidates.
    pub min_health: HealthClass,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            term_ms: 60_000,
            handover_ms: 10_000,
            takeover_timeout_ms: 5_000,
            thresholds: NhiConfig::DEFAULT.thresholds,
            min_health: HealthClass::Good,
        }
    }
}

/// What the driver must do after a [`Coordinator::poll_outputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this as `/pehra/state` (only emitted when it changed).
    WriteState(PehraState),
    /// A Pehredar took office: write this as `/pehra/terms/{number:020}`.
    RecordTerm(TermRecord),
}

/// An election in progress: who may not be drawn, and who could be.
#[derive(Debug, Clone, Default)]
struct Election {
    /// Excluded for this election (a `Reelect`, or a lost Pehredar).
    exclude: BTreeSet<String>,
    /// Drawn but did not take office in time.
    passed_over: BTreeSet<String>,
    /// The last one passed over.
    last_passed: Option<String>,
    /// The eligible nodes of the last draw.
    candidates: Vec<String>,
    /// allDown's temporary Pehredar (no election proper).
    temporary: bool,
}

/// The sans-IO PEHRA elector. See the [module docs](self) for the rules.
#[derive(Debug, Clone)]
pub struct Coordinator {
    config: CoordinatorConfig,
    state: PehraState,
    /// The state as last emitted (or as given to [`Coordinator::new`]).
    written: PehraState,
    /// The live statuses, by node name; `None` until [`Coordinator::handle_nodes`] is called.
    live: Option<BTreeMap<String, NodeStatus>>,
    /// The election in progress, if any.
    election: Option<Election>,
    /// An election asked for (by a request, or a lost Pehredar), with its exclusions.
    wanted: Option<BTreeSet<String>>,
    /// The term number whose Pehredar was already declared lost.
    lost_term: Option<u64>,
    /// No candidate is alive (allDown): the first one back is made temporary Pehredar.
    all_down: bool,
    /// The generation of the wakeUpAll that set `traffic_awake`.
    traffic_generation: u64,
    /// The `issued_ms` of the last admin switch applied.
    admin_issued_ms: Option<u64>,
    /// Terms taken since the last poll.
    records: Vec<TermRecord>,
    /// The wall clock's steps back, which move the terms' times with them.
    clock: ClockSteps,
}

impl Coordinator {
    /// A coordinator resuming from `state` (as read from `/pehra/state`, or
    /// [`PehraState::default`] when there is none). `state` is taken to be what is
    /// stored: it is not emitted again unless it changes.
    pub fn new(config: CoordinatorConfig, state: PehraState) -> Coordinator {
        let election = state.next.as_ref().map(|_| Election {
            temporary: state.next_temporary,
            ..Election::default()
        });
        Coordinator {
            config,
            written: state.clone(),
            traffic_generation: state.wake_generation,
            state,
            live: None,
            election,
            wanted: None,
            lost_term: None,
            all_down: false,
            admin_issued_ms: None,
            records: Vec::new(),
            clock: ClockSteps::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The state now (including changes not yet emitted by [`Coordinator::poll_outputs`]).
    pub fn state(&self) -> &PehraState {
        &self.state
    }

    /// Marks the admin switch issued at `issued_ms` as already applied (a restart that
    /// finds `/pehra/admin` in agreement with `/pehra/state`), so feeding it again via
    /// [`Coordinator::handle_admin`] does not wake everyone again.
    pub fn admin_applied(&mut self, issued_ms: u64) {
        self.admin_issued_ms = Some(issued_ms);
    }

    /// Every live status under `/pehra/nodes` now (replacing what was known).
    pub fn handle_nodes(&mut self, now: UnixMs, statuses: &[NodeStatus]) {
        self.observe_clock(now);
        let live: BTreeMap<String, NodeStatus> = statuses
            .iter()
            .map(|s| (s.node.clone(), s.clone()))
            .collect();
        for s in live.values().filter(|s| s.candidate) {
            if let Err(at) = self.state.known.binary_search(&s.node) {
                self.state.known.insert(at, s.node.clone());
            }
        }
        self.live = Some(live);
    }

    /// A request from `/pehra/requests`.
    pub fn handle_request(&mut self, now: UnixMs, request: PehraRequest) {
        self.observe_clock(now);
        match request {
            PehraRequest::WakeAll { reason, term, .. } => match reason {
                WakeReason::Traffic => {
                    if !self.state.traffic_awake {
                        self.state.traffic_awake = true;
                        self.wake(WakeReason::Traffic);
                        self.traffic_generation = self.state.wake_generation;
                    }
                }
                WakeReason::PehredarLost => {
                    let current = self.state.term.as_ref().map(|t| t.number);
                    if current == Some(term) && self.lost_term != Some(term) {
                        self.pehredar_lost();
                    }
                }
                other => self.wake(other),
            },
            PehraRequest::Reelect { exclude } => {
                self.wanted = Some(exclude.into_iter().collect());
            }
        }
    }

    /// The admin's switch from `/pehra/admin`; applied once per `issued_ms`.
    pub fn handle_admin(&mut self, now: UnixMs, switch: AdminSwitch) {
        self.observe_clock(now);
        if self.admin_issued_ms == Some(switch.issued_ms) {
            return;
        }
        self.admin_issued_ms = Some(switch.issued_ms);
        self.state.enabled = switch.enabled;
        self.wake(WakeReason::Admin);
    }

    /// Decides what follows from everything fed so far at `now_ms`, drawing with `rng`
    /// (the operating system's CSPRNG in production). Returns the writes to make: the
    /// state if it changed, and a record per term taken.
    pub fn poll_outputs<R: Rng + ?Sized>(&mut self, now: UnixMs, rng: &mut R) -> Vec<Output> {
        self.observe_clock(now);
        let now_ms = now.as_millis();
        if self.live.is_some() {
            self.decide(now_ms, rng);
        }
        let mut out = Vec::new();
        if self.state != self.written {
            self.written = self.state.clone();
            out.push(Output::WriteState(self.state.clone()));
        }
        out.extend(self.records.drain(..).map(Output::RecordTerm));
        out
    }

    /// When [`Coordinator::poll_outputs`] must be called next even if nothing is fed (ms since
    /// the Unix epoch): the takeover timeout of an open election, or the re-election
    /// before the term ends.
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        self.deadline_ms().map(UnixMs::from_millis)
    }

    fn deadline_ms(&self) -> Option<u64> {
        if let Some(next) = &self.state.next {
            return Some(
                next.started_ms
                    .saturating_add(self.config.takeover_timeout_ms),
            );
        }
        if self.election.is_some() || self.wanted.is_some() {
            // Waiting for a candidate: only a status change can help.
            return None;
        }
        self.state
            .term
            .as_ref()
            .map(|t| t.ends_ms.saturating_sub(self.config.handover_ms))
    }

    /// Keeps the terms' times consistent with this coordinator's clock. A step back
    /// moves them back with it, so the term and an open election keep what was left of
    /// them (without this, an hour's NTP correction kept the Pehredar in office an hour
    /// longer). Times written under a clock ahead of this one (a restart after a
    /// correction, a gateway that boots with a wrong clock) are brought back to the
    /// latest they could be under it: a term ends at most one term from now, an
    /// election did not start in the future.
    fn observe_clock(&mut self, now: UnixMs) {
        let now_ms = now.as_millis();
        if let Some(back) = self.clock.observe(now) {
            for t in self.state.term.iter_mut().chain(self.state.next.iter_mut()) {
                shift_back(t, back);
            }
        }
        if let Some(t) = &mut self.state.term {
            let latest_end = now_ms.saturating_add(self.config.term_ms);
            if t.ends_ms > latest_end {
                let excess = t.ends_ms - latest_end;
                shift_back(t, excess);
            }
        }
        if let Some(t) = &mut self.state.next {
            if t.started_ms > now_ms {
                let excess = t.started_ms - now_ms;
                shift_back(t, excess);
            }
        }
    }

    fn wake(&mut self, reason: WakeReason) {
        self.state.wake_generation += 1;
        self.state.wake_reason = Some(reason);
    }

    /// The Pehredar of the current term is lost: wake everyone, elect without it.
    fn pehredar_lost(&mut self) {
        let Some(term) = &self.state.term else {
            return;
        };
        self.lost_term = Some(term.number);
        let mut exclude = self.wanted.take().unwrap_or_default();
        exclude.insert(term.pehredar.clone());
        if let Some(e) = &self.election {
            exclude.extend(e.exclude.iter().cloned());
        }
        self.wanted = Some(exclude);
        self.wake(WakeReason::PehredarLost);
    }

    fn is_live(&self, node: &str) -> bool {
        self.live.as_ref().is_some_and(|l| l.contains_key(node))
    }

    fn live_candidates(&self) -> Vec<String> {
        self.live
            .iter()
            .flat_map(|l| l.values())
            .filter(|s| s.candidate)
            .map(|s| s.node.clone())
            .collect()
    }

    /// The health rule of the draw: of `eligible`, those rated at least
    /// `min_health` or not rated at all; if none, all of `eligible` (randomness stays,
    /// health only narrows the pool; `docs/pehra.md` gives the reasons).
    fn healthy(&self, eligible: Vec<String>) -> Vec<String> {
        let rated_ok = |node: &String| {
            self.live
                .as_ref()
                .and_then(|l| l.get(node))
                .and_then(|s| s.nhi)
                .is_none_or(|i| self.config.thresholds.class_of(i) >= self.config.min_health)
        };
        let pool: Vec<String> = eligible.iter().filter(|n| rated_ok(n)).cloned().collect();
        if pool.is_empty() {
            eligible
        } else {
            pool
        }
    }

    fn decide<R: Rng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) {
        let candidates = self.live_candidates();

        // The elected node took office.
        if let Some(next) = self.state.next.clone() {
            let office = self
                .live
                .as_ref()
                .and_then(|l| l.get(&next.pehredar))
                .and_then(|s| s.office);
            if office == Some(next.number) {
                let election = self.election.take().unwrap_or_default();
                let term = Term {
                    number: next.number,
                    pehredar: next.pehredar,
                    started_ms: now_ms,
                    ends_ms: now_ms.saturating_add(self.config.term_ms),
                };
                self.state.term = Some(term.clone());
                self.state.next = None;
                self.state.next_temporary = false;
                self.state.temporary = election.temporary;
                self.records.push(TermRecord {
                    term,
                    candidates: election.candidates,
                    temporary: election.temporary,
                });
            } else if !self.is_live(&next.pehredar)
                || now_ms
                    >= next
                        .started_ms
                        .saturating_add(self.config.takeover_timeout_ms)
            {
                // Passed over: draw again without it.
                self.state.next = None;
                self.state.next_temporary = false;
                let e = self.election.get_or_insert_with(Election::default);
                e.passed_over.insert(next.pehredar.clone());
                e.last_passed = Some(next.pehredar);
                e.temporary = false;
            }
        }

        // The Pehredar in office is gone.
        if let Some(term) = &self.state.term {
            if !self.is_live(&term.pehredar) && self.lost_term != Some(term.number) {
                self.pehredar_lost();
            }
        }

        // allDown.
        if candidates.is_empty() {
            if !self.state.known.is_empty() {
                self.all_down = true;
            }
        } else if self.all_down {
            self.all_down = false;
            let all_back = self
                .state
                .known
                .iter()
                .all(|k| candidates.iter().any(|c| c == k));
            if !all_back && self.state.next.is_none() {
                self.wanted = None;
                self.election = Some(Election {
                    temporary: true,
                    ..Election::default()
                });
            } else {
                self.wanted.get_or_insert_with(BTreeSet::new);
            }
        }

        // A temporary Pehredar in office and everyone back: an ordinary election.
        if self.state.temporary && self.election.is_none() && self.wanted.is_none() {
            let all_back = self
                .state
                .known
                .iter()
                .all(|k| candidates.iter().any(|c| c == k));
            if all_back {
                self.wanted = Some(BTreeSet::new());
            }
        }

        // First start, or re-election before the term ends.
        if self.election.is_none() && self.wanted.is_none() {
            match &self.state.term {
                None => {
                    if !candidates.is_empty() {
                        self.wanted = Some(BTreeSet::new());
                    }
                }
                Some(t) => {
                    if now_ms >= t.ends_ms.saturating_sub(self.config.handover_ms) {
                        self.wanted = Some(BTreeSet::new());
                    }
                }
            }
        }

        // An election asked for replaces the one in progress.
        if let Some(exclude) = self.wanted.take() {
            self.state.next = None;
            self.election = Some(Election {
                exclude,
                ..Election::default()
            });
        }

        // Draw.
        if self.state.next.is_none() {
            let pool = self
                .election
                .as_ref()
                .map(|e| self.healthy(eligible(&candidates, e)));
            if let (Some(e), Some(eligible)) = (&mut self.election, pool) {
                if eligible.is_empty() {
                    // Nobody may be drawn. With the Pehredar in office alive, it simply
                    // stays (its term is extended); otherwise wait for a candidate.
                    let holder_live = self.state.term.as_ref().is_some_and(|t| {
                        self.lost_term != Some(t.number) && self.is_live(&t.pehredar)
                    });
                    if holder_live {
                        self.election = None;
                    }
                } else {
                    let i = rng.random_range(0..eligible.len());
                    let number = self.state.term.as_ref().map_or(0, |t| t.number) + 1;
                    self.state.next = Some(Term {
                        number,
                        pehredar: eligible[i].clone(),
                        started_ms: now_ms,
                        ends_ms: now_ms.saturating_add(self.config.term_ms),
                    });
                    self.state.next_temporary = e.temporary;
                    e.candidates = eligible;
                }
            }
        }

        // Traffic mode ends once every participant obeyed the wake and is idle.
        if self.state.traffic_awake {
            let generation = self.traffic_generation;
            let quiet = self.live.iter().flat_map(|l| l.values()).all(|s| {
                s.role == NodeRole::OptedOut || (s.idle && s.wake_generation >= generation)
            });
            if quiet {
                self.state.traffic_awake = false;
            }
        }
    }
}

/// Moves a term's times `ms` earlier.
fn shift_back(term: &mut Term, ms: u64) {
    term.started_ms = term.started_ms.saturating_sub(ms);
    term.ends_ms = term.ends_ms.saturating_sub(ms);
}

/// Who may be drawn: the live candidates, without the election's exclusions and
/// passed-over nodes; if that leaves nobody, the passed-over get another chance (but
/// not the last one passed over, if anyone else is left, and never the excluded).
fn eligible(candidates: &[String], e: &Election) -> Vec<String> {
    let pick = |skip: &dyn Fn(&String) -> bool| -> Vec<String> {
        candidates.iter().filter(|c| !skip(c)).cloned().collect()
    };
    let first = pick(&|c| e.exclude.contains(c) || e.passed_over.contains(c));
    if !first.is_empty() {
        return first;
    }
    let second = pick(&|c| e.exclude.contains(c) || e.last_passed.as_ref() == Some(c));
    if !second.is_empty() {
        return second;
    }
    pick(&|c| e.exclude.contains(c))
}

#[cfg(test)]
mod tests;
