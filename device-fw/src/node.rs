//! The node loop: [`Device::run_cycle`] at each alarm, [`Device::sleep`] between.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use pehra_shared::coap::{Config, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::pehra::addr::parse_socket_addr;
use pehra_shared::pehra::device::{
    DeviceConfig, DeviceNode, FailOutcome, Plan, ReadingsBuffer, ReplyOutcome,
};
use pehra_shared::time::{Instant, UnixMs};
use pehra_shared::wire::{
    self, Acks, CheckInReply, DeviceReadings, Directive, DownlinkRequest, DownlinkResponse,
    NodeHealth, ProduceResponse, Record,
};

use crate::client::CoapClient;
use crate::energy::{Meter, PowerState, StateTimes};
use crate::hal::{Clock, Persisted, Radio, RadioMode, Rng, Sensor, Storage, UdpSocket};
use crate::security::{broker_id, DeviceIdentity, DeviceSecurity};

/// The readings kept while no gateway answers (oldest dropped first, counted): 64, or 16
/// with feature `small-buffer` (boards with little RAM: 48 fewer readings are ~2.3 KiB of
/// heap less, plus their bytes while the gateway is away).
#[cfg(not(feature = "small-buffer"))]
pub const READINGS_CAPACITY: usize = 64;
/// The readings kept while no gateway answers (oldest dropped first, counted): 16 with
/// feature `small-buffer` (64 without).
#[cfg(feature = "small-buffer")]
pub const READINGS_CAPACITY: usize = 16;

/// The longest a cycle waits for its last datagrams to leave the device, ms.
const FLUSH_LIMIT_MS: u64 = 1_000;

/// What the application may change at run time (from downlink records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The topic readings go to.
    pub topic: String,
    /// The acks asked for them ([`Acks::None`]: sent NON, not retried).
    pub acks: Acks,
    /// At most this many readings in one publish.
    pub max_batch: usize,
    /// A downlink answer carries at most about this many bytes.
    pub downlink_max_bytes: u32,
    /// The alarm interval, ms.
    pub alarm_interval_ms: u64,
}

/// The application: hears each downlink record, may change the settings.
pub trait Application {
    /// A downlink record, in offset order.
    fn on_downlink(&mut self, offset: u64, record: &Record, settings: &mut Settings);
}

/// An application that understands `set-interval SECONDS` and ignores the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetInterval;

impl Application for SetInterval {
    fn on_downlink(&mut self, _offset: u64, record: &Record, settings: &mut Settings) {
        let Ok(text) = core::str::from_utf8(&record.value) else {
            return;
        };
        if let Some(s) = text.trim().strip_prefix("set-interval ") {
            if let Ok(secs) = s.trim().parse::<u64>() {
                if (1..=86_400).contains(&secs) {
                    settings.alarm_interval_ms = secs * 1000;
                }
            }
        }
    }
}

/// The board's parts the device runs on.
pub struct Parts<U, C, S, St, R, A> {
    /// The UDP socket.
    pub udp: U,
    /// The clock.
    pub clock: C,
    /// The sensor.
    pub sensor: S,
    /// The storage kept across deep sleep.
    pub storage: St,
    /// The radio hooks.
    pub radio: R,
    /// The application.
    pub app: A,
}

/// Counters of the node loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Cycles run.
    pub cycles: u64,
    /// Readings taken.
    pub readings_taken: u64,
    /// Readings the gateway acknowledged (or sent NON with acks 0).
    pub readings_published: u64,
    /// Publishes that failed (the readings stay buffered).
    pub publish_failures: u64,
    /// Downlink records handed to the application.
    pub downlink_records: u64,
    /// Responses that were errors or did not decode (ignored).
    pub bad_responses: u64,
    /// Requests that got no answer.
    pub timeouts: u64,
    /// Sensor or storage errors.
    pub hal_errors: u64,
    /// Requests not sent because no OSCORE context could be had for the gateway (its
    /// broker id unknown, or EDHOC with it failed): a secured device never sends in
    /// the clear.
    pub no_context: u64,
    /// EDHOC runs this device completed (message_2 verified, keys made; the broker
    /// confirms them by answering the request that carries message_3): one per broker,
    /// and again after a broker lost or refused the context.
    pub handshakes: u64,
}

/// What a cycle did, and when to wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleReport {
    /// The gateway that answered the check-in, if one did.
    pub gateway: Option<SocketAddr>,
    /// The directive obeyed.
    pub directive: Option<Directive>,
    /// Readings published in this cycle.
    pub published: usize,
    /// Downlink records received in this cycle.
    pub downlink: usize,
    /// When to wake, device ms.
    pub wake_at_ms: u64,
    /// Deep sleep until then (`false`: stay awake).
    pub deep_sleep: bool,
}

/// Why a call got no usable answer.
enum CallError {
    NoAnswer,
    Bad,
}

/// A device: the PEHRA logic, the CoAP client and the board.
pub struct Device<U, C, S, St, R, A> {
    node: DeviceNode,
    client: CoapClient<U>,
    clock: C,
    sensor: S,
    storage: St,
    radio: R,
    app: A,
    /// Boxed: 64 records are about 5 KiB, which would otherwise be copied on the stack
    /// each time the device moves (from `boot` to its caller).
    readings: alloc::boxed::Box<ReadingsBuffer<READINGS_CAPACITY>>,
    settings: Settings,
    persisted: Persisted,
    meter: Meter,
    stats: DeviceStats,
    last_rtt_ms: u32,
    /// OSCORE towards the brokers (`None`: plain CoAP).
    security: Option<DeviceSecurity>,
    /// EDHOC's message_3 for the broker at this address, to go with the first request
    /// in the new context (RFC 9668's combined request).
    #[cfg(feature = "edhoc")]
    message_3: Option<(SocketAddr, Vec<u8>)>,
}

impl<U, C, S, St, R, A> Device<U, C, S, St, R, A>
where
    U: UdpSocket,
    C: Clock,
    S: Sensor,
    St: Storage,
    R: Radio,
    A: Application,
{
    /// Boots a device: takes up what storage kept (readings counter, the state
    /// machine's schedule, clock offset, Pehredar and downlink offset, the readings not
    /// yet acknowledged), seeds the CoAP engine from `rng` (a generator, or a `&mut` to
    /// one: a generator only the boot draws from can be moved into its future instead
    /// of outliving it in a static). After a deep sleep that reset the device it goes
    /// on where it was; without storage it starts afresh (a new incarnation).
    pub async fn boot(
        config: DeviceConfig,
        settings: Settings,
        coap: Config,
        parts: Parts<U, C, S, St, R, A>,
        rng: impl Rng,
    ) -> Self {
        Self::boot_with(config, settings, coap, parts, rng, None).await
    }

    /// Boots a device that protects every request with OSCORE (`docs/security.md`):
    /// `identity` from its credential file (a [`crate::DeviceKeys`], or with feature
    /// `edhoc` an [`crate::security::EdhocKeys`]), `brokers` the broker id serving at
    /// each configured gateway (it learns the Pehredar's from check-in replies).
    /// Storage keeps its ID Context, a claim on sequence numbers and the contexts EDHOC
    /// made (see [`crate::security`]).
    pub async fn boot_secured(
        config: DeviceConfig,
        settings: Settings,
        coap: Config,
        parts: Parts<U, C, S, St, R, A>,
        rng: impl Rng,
        identity: impl Into<DeviceIdentity>,
        brokers: Vec<(SocketAddr, u32)>,
    ) -> Self {
        let secured = Some((identity.into(), brokers));
        Self::boot_with(config, settings, coap, parts, rng, secured).await
    }

    async fn boot_with(
        config: DeviceConfig,
        mut settings: Settings,
        coap: Config,
        mut parts: Parts<U, C, S, St, R, A>,
        mut rng: impl Rng,
        secured: Option<(DeviceIdentity, Vec<(SocketAddr, u32)>)>,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut hal_errors = 0;
        let loaded = match parts.storage.load().await {
            Ok(p) => p.filter(|p| p.name == config.name),
            Err(_) => {
                hal_errors += 1;
                None
            }
        };
        let mut persisted = loaded.unwrap_or_else(|| {
            let mut bytes = [0u8; 4];
            rng.fill_bytes(&mut bytes);
            Persisted {
                name: config.name.clone(),
                incarnation: u32::from_be_bytes(bytes),
                ..Persisted::default()
            }
        });
        let mut node = DeviceNode::new(config, None);
        node.set_alarm_interval(settings.alarm_interval_ms);
        node.restore(&persisted.node);
        settings.alarm_interval_ms = node.config().alarm_interval_ms;
        let restored = core::mem::take(&mut persisted.readings);
        let security = secured.map(|(identity, brokers)| {
            let mut random = [0u8; 8];
            rng.fill_bytes(&mut random);
            let resume = persisted.oscore.take();
            let security =
                DeviceSecurity::new(identity, brokers, resume, u64::from_be_bytes(random));
            #[cfg(feature = "edhoc")]
            let security = {
                let mut security = security;
                security.restore_sessions(core::mem::take(&mut persisted.edhoc));
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                security.seed_handshakes(seed);
                security
            };
            security
        });
        let now = parts.clock.now_ms();
        let mut device = Device {
            node,
            client: CoapClient::new(parts.udp, coap, seed),
            clock: parts.clock,
            sensor: parts.sensor,
            storage: parts.storage,
            radio: parts.radio,
            app: parts.app,
            readings: alloc::boxed::Box::default(),
            settings,
            persisted,
            meter: Meter::new(now, PowerState::Active),
            stats: DeviceStats {
                hal_errors,
                ..DeviceStats::default()
            },
            last_rtt_ms: 0,
            security,
            #[cfg(feature = "edhoc")]
            message_3: None,
        };
        for record in restored {
            device.readings.push(record);
        }
        if device.security.is_some() && device.persist().await {
            // The claim on sequence numbers is stored before anything is sent.
            if let Some(security) = device.security.as_mut() {
                security.claim_stored();
            }
        }
        device
    }

    /// The PEHRA state.
    pub fn node(&self) -> &DeviceNode {
        &self.node
    }

    /// The counters.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Readings buffered now, and how many were dropped so far.
    pub fn buffered(&self) -> (usize, u64) {
        (self.readings.len(), self.readings.dropped())
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What storage holds (as of the last cycle).
    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    /// The storage (a board's own state, such as whether everything fitted).
    pub fn storage(&self) -> &St {
        &self.storage
    }

    /// The time spent per power state so far.
    pub fn energy(&self) -> StateTimes {
        let mut m = self.meter;
        m.enter(self.clock.now_ms(), m.state());
        m.times()
    }

    /// The CoAP client (its counters).
    pub fn client(&self) -> &CoapClient<U> {
        &self.client
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// One cycle: take a reading, check in (rotating through the gateways), obey the
    /// directive, publish the buffered readings in one batch, collect downlink records
    /// for the application, persist; says when to wake. Never panics on what the
    /// network says: bad answers are counted and ignored.
    pub async fn run_cycle(&mut self) -> CycleReport {
        let now = self.clock.now_ms();
        self.meter.enter(now, PowerState::Active);
        self.stats.cycles += 1;
        self.take_reading(now).await;

        let mut target = self.node.handle_alarm(Instant::from_millis(now));
        let plan = loop {
            let Some(to) = target else {
                // No gateway configured at all.
                break Err(now + self.settings.alarm_interval_ms);
            };
            let now = self.clock.now_ms();
            let health = self.health();
            let checkin = self.node.poll_checkin(
                Instant::from_millis(now),
                health,
                !self.readings.is_empty(),
            );
            let sent = self.clock.now_ms();
            // Encoded, then dropped: not kept (nor its strings on the heap) while the
            // request is out.
            let body = wire::encode_by_hand(&checkin);
            drop(checkin);
            let reply = self
                .call(to, "/dev/checkin", body)
                .await
                .and_then(|r| self.decode::<CheckInReply>(&r));
            let now = self.clock.now_ms();
            match reply {
                Ok(reply) => {
                    self.last_rtt_ms = now.saturating_sub(sent).min(u32::MAX as u64) as u32;
                    self.learn_pehredar(&reply);
                    match self.node.handle_checkin_reply(
                        Instant::from_millis(now),
                        to,
                        &reply,
                        self.readings.len(),
                    ) {
                        ReplyOutcome::Work(plan) => break Ok(plan),
                        ReplyOutcome::CheckInAgain(next) => target = Some(next),
                    }
                }
                Err(_) => match self.node.handle_checkin_failed(Instant::from_millis(now)) {
                    FailOutcome::Try(next) => target = Some(next),
                    FailOutcome::BackOff { wake_at } => break Err(wake_at.as_millis()),
                },
            }
        };
        let report = match plan {
            Ok(plan) => crate::frame::OwnFrame(self.work(plan)).await,
            Err(wake_at_ms) => {
                log_warn!("no gateway answered; backing off");
                CycleReport {
                    gateway: None,
                    directive: None,
                    published: 0,
                    downlink: 0,
                    wake_at_ms,
                    deep_sleep: true,
                }
            }
        };
        self.persist().await;
        // What was sent without waiting for an answer must leave before the radio sleeps.
        let deadline = self.clock.now_ms() + FLUSH_LIMIT_MS;
        if self.client.socket_mut().flush(deadline).await.is_err() {
            self.stats.hal_errors += 1;
        }
        self.radio.set_mode(RadioMode::Off);
        let now = self.clock.now_ms();
        self.meter.enter(now, PowerState::Active);
        report
    }

    /// Sleeps as the report says (deep, or awake with the radio up), accounting it.
    pub async fn sleep(&mut self, report: &CycleReport) {
        let now = self.clock.now_ms();
        if report.deep_sleep {
            self.radio.set_mode(RadioMode::Off);
            self.meter.enter(now, PowerState::Sleep);
        } else {
            self.radio.set_mode(RadioMode::Rx);
            self.meter.enter(now, PowerState::Listen);
        }
        self.clock.sleep_until(report.wake_at_ms).await;
        let now = self.clock.now_ms();
        self.meter.enter(now, PowerState::Active);
    }

    /// Runs forever: cycle, sleep, cycle...
    pub async fn run(&mut self) -> ! {
        loop {
            let report = self.run_cycle().await;
            self.sleep(&report).await;
        }
    }

    async fn take_reading(&mut self, now: u64) {
        let seq = self.persisted.readings_seq;
        match self.sensor.read(seq).await {
            Ok(value) => {
                self.persisted.readings_seq += 1;
                self.stats.readings_taken += 1;
                self.readings.push(Record {
                    key: Some(self.node.config().name.as_bytes().to_vec()),
                    value,
                    timestamp_ms: self
                        .node
                        .gateway_time(Instant::from_millis(now))
                        .map_or(0, UnixMs::as_millis),
                    headers: Vec::new(),
                });
            }
            Err(_) => self.stats.hal_errors += 1,
        }
    }

    fn health(&mut self) -> NodeHealth {
        NodeHealth {
            rtt_ms: self.last_rtt_ms,
            battery_permille: self.sensor.battery_permille(),
            failures: (self.stats.timeouts + self.stats.bad_responses + self.stats.hal_errors)
                .min(u32::MAX as u64) as u32,
            ..NodeHealth::default()
        }
    }

    async fn work(&mut self, plan: Plan) -> CycleReport {
        log_debug!("checked in");
        let mut published = 0;
        if plan.publish && !self.readings.is_empty() {
            published = crate::frame::OwnFrame(self.publish(plan.gateway)).await;
        }
        let mut downlink = 0;
        if plan.fetch_downlink {
            downlink = crate::frame::OwnFrame(self.fetch_downlink(plan.gateway)).await;
        }
        // The application may have changed the interval: a sleep that was one alarm
        // away follows it.
        let mut wake_at_ms = plan.wake_at.as_millis();
        if self.settings.alarm_interval_ms != self.node.config().alarm_interval_ms {
            self.node
                .set_alarm_interval(self.settings.alarm_interval_ms);
            if plan.deep_sleep {
                let now = self.clock.now_ms();
                wake_at_ms = wake_at_ms.min(now + self.settings.alarm_interval_ms);
            }
        }
        CycleReport {
            gateway: Some(plan.gateway),
            directive: Some(plan.directive),
            published,
            downlink,
            wake_at_ms,
            deep_sleep: plan.deep_sleep,
        }
    }

    async fn publish(&mut self, gateway: SocketAddr) -> usize {
        let batch = self.readings.batch(self.settings.max_batch.max(1));
        let n = batch.len();
        // The buffer holds the newest readings not yet acknowledged, in order: the
        // oldest has sequence number "taken so far - buffered". With it the gateway
        // stores a repeated request once.
        let first_seq = self
            .persisted
            .readings_seq
            .wrapping_sub(self.readings.len() as _) as u32;
        // Encoded at once: the batch (copies of up to `max_batch` readings) is not kept
        // on the heap, nor in this future, while the request is out.
        let body = wire::encode_by_hand(&DeviceReadings {
            topic: self.settings.topic.clone(),
            acks: self.settings.acks,
            records: batch,
            first_seq: Some(first_seq),
            incarnation: self.persisted.incarnation,
        });
        // Joined, not `format!`ed: the firmware links no `alloc::fmt::format` for it.
        let path = ["/dev/", self.node.config().name.as_str(), "/readings"].concat();
        if self.settings.acks == Acks::None {
            let request = cbor_request(&path, body);
            if !self.secure(gateway).await {
                return 0;
            }
            self.radio.set_mode(RadioMode::Tx);
            let before = self.client.stats().bytes_sent;
            self.client
                .send_non(&mut self.clock, gateway, request)
                .await;
            self.meter
                .transmitted(self.client.stats().bytes_sent - before);
            self.readings.ack(n);
            self.stats.readings_published += n as u64;
            return n;
        }
        let result = self.call(gateway, &path, body).await;
        match result.and_then(|r| self.decode::<ProduceResponse>(&r)) {
            Ok(_) => {
                self.readings.ack(n);
                self.stats.readings_published += n as u64;
                n
            }
            Err(_) => {
                self.stats.publish_failures += 1;
                0
            }
        }
    }

    async fn fetch_downlink(&mut self, gateway: SocketAddr) -> usize {
        let path = ["/dev/", self.node.config().name.as_str(), "/downlink"].concat();
        let mut got = 0;
        // A few rounds at most: what remains waits for the next cycle.
        for _ in 0..4 {
            let body = wire::encode_by_hand(&DownlinkRequest {
                from: self.node.downlink_from(),
                max_bytes: self.settings.downlink_max_bytes,
            });
            let Ok(response) = self
                .call(gateway, &path, body)
                .await
                .and_then(|r| self.decode::<DownlinkResponse>(&r))
            else {
                break;
            };
            let pending = response.pending;
            let records = self.node.handle_downlink(response);
            for (offset, record) in &records {
                self.app.on_downlink(*offset, record, &mut self.settings);
            }
            got += records.len();
            self.stats.downlink_records += records.len() as u64;
            if pending == 0 || records.is_empty() {
                break;
            }
        }
        got
    }

    /// Saves the state; `false` if storage failed.
    async fn persist(&mut self) -> bool {
        self.persisted.node = self.node.memory();
        self.persisted.readings = self.readings.batch(READINGS_CAPACITY);
        self.persisted.oscore = self.security.as_ref().map(DeviceSecurity::resume);
        #[cfg(feature = "edhoc")]
        {
            self.persisted.edhoc = self
                .security
                .as_ref()
                .map(|s| s.sessions().to_vec())
                .unwrap_or_default();
        }
        if self.storage.save(&self.persisted).await.is_err() {
            self.stats.hal_errors += 1;
            return false;
        }
        true
    }

    /// Makes a request to `to` ready to go out: with OSCORE, a context for its broker
    /// (derived on first use; for an EDHOC identity, EDHOC runs first) and the claim on
    /// sequence numbers stored if it must be raised. `false`: it must not be sent (no
    /// context: its broker is unknown, or EDHOC with it failed).
    async fn secure(&mut self, to: SocketAddr) -> bool {
        #[cfg(feature = "edhoc")]
        if !self.client.is_secured(&to)
            && self
                .security
                .as_ref()
                .is_some_and(|s| s.needs_handshake(to))
            && !self.handshake(to).await
        {
            self.stats.no_context += 1;
            return false;
        }
        let Some(security) = self.security.as_mut() else {
            return true;
        };
        if !self.client.is_secured(&to) {
            match security.context_for(to) {
                #[cfg(feature = "edhoc")]
                Some(Ok(context)) if self.message_3.as_ref().is_some_and(|(a, _)| *a == to) => {
                    let (_, message_3) = self.message_3.take().expect("checked");
                    self.client.secure_peer_combined(to, context, message_3);
                }
                Some(Ok(context)) => self.client.secure_peer(to, context),
                _ => {
                    self.stats.no_context += 1;
                    return false;
                }
            }
        }
        let next = self.client.next_sequence(&to).unwrap_or(0);
        if security.before_request(next) {
            // A claim not stored must not be used: a reset would go back to the last
            // one stored, below numbers this request would use.
            if !self.persist().await {
                return false;
            }
            if let Some(security) = self.security.as_mut() {
                security.claim_stored();
            }
        }
        true
    }

    /// A check-in reply named the Pehredar and its address: with OSCORE, which broker
    /// serves there.
    fn learn_pehredar(&mut self, reply: &CheckInReply) {
        let Some(security) = self.security.as_mut() else {
            return;
        };
        let addr = reply.pehredar_addr.as_deref().map(parse_socket_addr);
        let id = reply.pehredar.as_deref().and_then(broker_id);
        if let (Some(Some(addr)), Some(id)) = (addr, id) {
            if security.learn(addr, id) && self.client.is_secured(&addr) {
                // Another broker serves there now: its context replaces the old one
                // (or, an EDHOC identity without a session with it, EDHOC runs first).
                match security.context_for(addr) {
                    Some(Ok(context)) => self.client.secure_peer(addr, context),
                    _ => self.client.unsecure_peer(&addr),
                }
            }
        }
    }

    /// POSTs `body` (CBOR) and waits for a 2.xx answer. Not
    /// generic (one copy of the exchange's state machine for every message type).
    async fn call(
        &mut self,
        to: SocketAddr,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response, CallError> {
        // With EDHOC, once more if the broker lost a context EDHOC made earlier (not
        // one it just refused: a key it does not know would only be refused again).
        let attempts = if cfg!(feature = "edhoc") { 2 } else { 1 };
        let mut body = body;
        for attempt in 1..=attempts {
            let body = if attempt < attempts {
                body.clone()
            } else {
                core::mem::take(&mut body)
            };
            let request = cbor_request(path, body);
            let handshakes = self.stats.handshakes;
            if !self.secure(to).await {
                return Err(CallError::NoAnswer);
            }
            let response = crate::frame::OwnFrame(self.exchange(to, request)).await?;
            if self.lost_context(to, &response) && self.stats.handshakes == handshakes {
                continue;
            }
            if !response.code().is_success() {
                self.stats.bad_responses += 1;
                return Err(CallError::Bad);
            }
            return Ok(response);
        }
        self.stats.bad_responses += 1;
        Err(CallError::Bad)
    }

    /// Whether `response` says the broker at `to` has no context for us although we hold
    /// an EDHOC session with it (it restarted: 4.01 "Security context not found"; or
    /// it refused the message_3 our request carried: an EDHOC error message): the
    /// session is forgotten, so that the next request runs EDHOC again.
    #[cfg(feature = "edhoc")]
    fn lost_context(&mut self, to: SocketAddr, response: &Response) -> bool {
        use pehra_shared::coap::Code;
        let edhoc_error = response.code().class() == 4
            && response.content_format() == Some(pehra_shared::edhoc::CONTENT_FORMAT_EDHOC);
        let unknown = response.code() == Code::UNAUTHORIZED
            && response.payload() == b"Security context not found";
        let lost = (edhoc_error || unknown)
            && self.security.as_mut().is_some_and(|s| s.forget_session(to));
        if lost {
            self.client.unsecure_peer(&to);
        }
        lost
    }

    /// Without EDHOC a broker derives our context again by itself: never lost.
    #[cfg(not(feature = "edhoc"))]
    fn lost_context(&mut self, _to: SocketAddr, _response: &Response) -> bool {
        false
    }

    /// Runs EDHOC with the broker at `to` (plain CoAP to `/.well-known/edhoc`: message_1
    /// out, message_2 back); `true` once the session is made. message_3 goes with the
    /// next request, in the new context (RFC 9668's combined request: one round trip
    /// less than sending it alone).
    #[cfg(feature = "edhoc")]
    async fn handshake(&mut self, to: SocketAddr) -> bool {
        use pehra_shared::edhoc::{CONTENT_FORMAT_CID_EDHOC, WELL_KNOWN_EDHOC};
        let request = |payload| {
            Request::post(WELL_KNOWN_EDHOC)
                .with_content_format(CONTENT_FORMAT_CID_EDHOC)
                .with_payload(payload)
        };
        let Some((initiator, message_1)) =
            self.security.as_mut().and_then(|s| s.start_handshake(to))
        else {
            return false;
        };
        log_debug!("EDHOC with a broker");
        let Ok(message_2) = self.exchange(to, request(message_1)).await else {
            return false;
        };
        if message_2.code() != pehra_shared::coap::Code::CHANGED {
            self.stats.bad_responses += 1;
            return false;
        }
        let Ok((message_3, keys)) = initiator.finish_combined(message_2.payload()) else {
            self.stats.bad_responses += 1;
            return false;
        };
        if let Some(security) = self.security.as_mut() {
            security.handshake_done(to, keys);
        }
        self.message_3 = Some((to, message_3));
        self.stats.handshakes += 1;
        true
    }

    /// Sends `request` to `to` as it is and waits for its answer, with the radio and the
    /// energy meter in receive meanwhile.
    async fn exchange(&mut self, to: SocketAddr, request: Request) -> Result<Response, CallError> {
        self.radio.set_mode(RadioMode::Rx);
        let now = self.clock.now_ms();
        self.meter.enter(now, PowerState::Rx);
        let before = self.client.stats().bytes_sent;
        let result = self.client.request(&mut self.clock, to, request).await;
        self.meter
            .transmitted(self.client.stats().bytes_sent - before);
        let now = self.clock.now_ms();
        self.meter.enter(now, PowerState::Active);
        result.map_err(|_| {
            self.stats.timeouts += 1;
            CallError::NoAnswer
        })
    }

    /// A 2.xx answer's body as `T` (counted as a bad response if it is not one).
    fn decode<T: wire::HandDecode>(&mut self, response: &Response) -> Result<T, CallError> {
        wire::decode_by_hand::<T>(response.payload()).ok_or_else(|| {
            self.stats.bad_responses += 1;
            CallError::Bad
        })
    }
}

fn cbor_request(path: &str, body: Vec<u8>) -> Request {
    Request::post(path)
        .with_content_format(CONTENT_FORMAT_CBOR)
        .with_payload(body)
}
