//! The node loop in virtual time against fake gateways (each a real CoAP engine
//! answering the `/dev/*` routes as `docs/devices.md` says).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use pehra_device_fw::hal::NoRadio;
use pehra_device_fw::DeviceKeys;
use pehra_device_fw::{
    Clock, Device, Parts, Persisted, Rng, Sensor, SetInterval, Settings, Storage, UdpSocket,
};
use pehra_shared::coap::{Code, Config, Engine, Event, IncomingRequest, Response, ServerSecurity};
use pehra_shared::pehra::device::DeviceConfig;
use pehra_shared::security::{broker_kid, kid, pairwise_secret, Identity, KeyTable, PeerKey, Role};
use pehra_shared::wire::{
    self, Acks, CheckIn, CheckInReply, DeviceReadings, Directive, DownlinkRequest,
    DownlinkResponse, ProduceResponse, Record,
};
use pehra_shared::Instant;

const ALARM: u64 = 60_000;
/// The gateways' clock is the device's plus this.
const GW_OFFSET: u64 = 1_700_000_000_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
const DEVICE: u16 = 40_000;

struct Gateway {
    engine: Engine<SocketAddr>,
    alive: bool,
    garble: bool,
    checkins: u32,
}

#[derive(Default)]
struct Net {
    gateways: BTreeMap<SocketAddr, Gateway>,
    inbox: VecDeque<(Vec<u8>, SocketAddr)>,
    /// What every gateway answers.
    directive: Option<Directive>,
    pehredar: Option<SocketAddr>,
    readings: Vec<Record>,
    publishes: u32,
    downlink: Vec<Record>,
    committed: Option<u64>,
    last_checkin: Option<CheckIn>,
    /// Datagrams the device sent since it last flushed its socket.
    unflushed: u32,
    /// The gateways take only requests that verified as device `dev-0001` (OSCORE).
    secure: bool,
    /// Requests refused for that.
    refused: u32,
}

#[derive(Clone)]
struct World {
    now: Rc<Cell<u64>>,
    net: Rc<RefCell<Net>>,
}

impl World {
    fn new(ports: &[u16]) -> World {
        let mut net = Net::default();
        for (i, p) in ports.iter().enumerate() {
            net.gateways.insert(
                addr(*p),
                Gateway {
                    engine: Engine::new(Config::default(), [i as u8 + 1; 32]),
                    alive: true,
                    garble: false,
                    checkins: 0,
                },
            );
        }
        World {
            now: Rc::new(Cell::new(1_000)),
            net: Rc::new(RefCell::new(net)),
        }
    }

    fn set(&self, f: impl FnOnce(&mut Net)) {
        f(&mut self.net.borrow_mut())
    }

    fn gw(&self, port: u16, f: impl FnOnce(&mut Gateway)) {
        f(self.net.borrow_mut().gateways.get_mut(&addr(port)).unwrap())
    }

    fn checkins(&self, port: u16) -> u32 {
        self.net.borrow().gateways[&addr(port)].checkins
    }
}

/// The device's identity key in the secured tests.
const DEVICE_KEY: [u8; 32] = [0x5e; 32];

fn device_identity() -> Identity {
    Identity {
        name: "dev-0001".into(),
        role: Role::Device,
        kid: kid(Role::Device, 1),
    }
}

impl World {
    /// Gateways that take OSCORE only, gateway `p` being broker `p`, knowing device
    /// `dev-0001` with identity key `DEVICE_KEY`.
    fn secure(ports: &[u16]) -> World {
        let w = World::new(ports);
        w.set(|n| {
            n.secure = true;
            for (a, g) in n.gateways.iter_mut() {
                let me = broker_kid(a.port() as u32);
                let mut keys = KeyTable::new();
                keys.insert(PeerKey {
                    identity: device_identity(),
                    secret: pairwise_secret(&DEVICE_KEY, &me),
                });
                g.engine
                    .set_server_security(ServerSecurity::new(me, keys, 0));
            }
        });
        w
    }
}

fn answer(
    net: &mut Net,
    gw: SocketAddr,
    now: u64,
    incoming: &IncomingRequest<SocketAddr>,
) -> Response {
    let request = &incoming.request;
    if net.secure && incoming.identity != Some(device_identity()) {
        net.refused += 1;
        return Response::new(Code::UNAUTHORIZED);
    }
    let path: Vec<String> = request.path_segments().map(String::from).collect();
    let garble = net.gateways[&gw].garble;
    if garble {
        return Response::cbor(vec![0xff, 0x1c, 0x00]);
    }
    match path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dev", "checkin"] => {
            let Ok(c) = wire::decode::<CheckIn>(request.payload()) else {
                return Response::new(Code::BAD_REQUEST);
            };
            net.last_checkin = Some(c);
            net.gateways.get_mut(&gw).unwrap().checkins += 1;
            let g = now + GW_OFFSET;
            let committed = net.committed.unwrap_or(0) as usize;
            let reply = CheckInReply {
                pehredar: net.pehredar.map(|p| format!("broker-{}", p.port())),
                pehredar_addr: net.pehredar.map(|p| p.to_string()),
                term: None,
                gateway_ms: Some(g),
                directive: net
                    .directive
                    .unwrap_or(Directive::SleepUntil { at_ms: g + ALARM }),
                pending: net.downlink.len().saturating_sub(committed) as u32,
                lease_ms: None,
            };
            Response::cbor(wire::encode(&reply).unwrap())
        }
        ["dev", _, "readings"] => {
            let r: DeviceReadings = wire::decode(request.payload()).unwrap();
            let base = net.readings.len() as u64;
            let n = r.records.len() as u32;
            net.readings.extend(r.records);
            net.publishes += 1;
            Response::cbor(
                wire::encode(&ProduceResponse {
                    base_offset: base,
                    record_count: n,
                    leader_epoch: 0,
                })
                .unwrap(),
            )
        }
        ["dev", _, "downlink"] => {
            let r: DownlinkRequest = wire::decode(request.payload()).unwrap();
            if let Some(from) = r.from {
                net.committed = Some(from);
            }
            let from = net.committed.unwrap_or(0);
            let records: Vec<(u64, Record)> = net
                .downlink
                .iter()
                .enumerate()
                .skip(from as usize)
                .take(2)
                .map(|(i, r)| (i as u64, r.clone()))
                .collect();
            let next = from + records.len() as u64;
            let pending = (net.downlink.len() as u64).saturating_sub(next) as u32;
            Response::cbor(
                wire::encode(&DownlinkResponse {
                    records,
                    next,
                    pending,
                })
                .unwrap(),
            )
        }
        _ => Response::new(Code::NOT_FOUND),
    }
}

struct FakeUdp(World);

impl UdpSocket for FakeUdp {
    type Error = Infallible;

    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), Infallible> {
        let now = self.0.now.get();
        let t = Instant::from_millis(now);
        let mut net = self.0.net.borrow_mut();
        net.unflushed += 1;
        let Some(gw) = net.gateways.get_mut(&to) else {
            return Ok(());
        };
        if !gw.alive {
            return Ok(());
        }
        gw.engine.handle_datagram(t, addr(DEVICE), bytes);
        let mut requests = Vec::new();
        while let Some(e) = gw.engine.poll_event() {
            if let Event::Request(r) = e {
                requests.push(r);
            }
        }
        for r in requests {
            let response = answer(&mut net, to, now, &r);
            net.gateways
                .get_mut(&to)
                .unwrap()
                .engine
                .respond(t, r.id, response);
        }
        let gw = net.gateways.get_mut(&to).unwrap();
        let mut out = Vec::new();
        while let Some(tx) = gw.engine.poll_transmit() {
            out.push((tx.bytes, to));
        }

        net.inbox.extend(out);
        Ok(())
    }

    async fn flush(&mut self, _deadline_ms: u64) -> Result<(), Infallible> {
        self.0.net.borrow_mut().unflushed = 0;
        Ok(())
    }

    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, SocketAddr)>, Infallible> {
        if let Some((bytes, from)) = self.0.net.borrow_mut().inbox.pop_front() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Ok(Some((n, from)));
        }
        self.0.now.set(self.0.now.get().max(deadline_ms));
        Ok(None)
    }
}

struct FakeClock(Rc<Cell<u64>>);

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
    async fn sleep_until(&mut self, at_ms: u64) {
        self.0.set(self.0.get().max(at_ms));
    }
}

struct Thermometer;

impl Sensor for Thermometer {
    type Error = Infallible;
    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        Ok(format!("{{\"t\":21.5,\"seq\":{seq}}}").into_bytes())
    }
    fn battery_permille(&mut self) -> Option<u16> {
        Some(900)
    }
}

/// Storage; `.1` set: every save fails.
#[derive(Clone, Default)]
struct Flash(Rc<RefCell<Option<Vec<u8>>>>, Rc<Cell<bool>>);

impl Storage for Flash {
    type Error = ();
    async fn load(&mut self) -> Result<Option<Persisted>, ()> {
        Ok(self.0.borrow().as_deref().and_then(Persisted::decode))
    }
    async fn save(&mut self, p: &Persisted) -> Result<(), ()> {
        if self.1.get() {
            return Err(());
        }
        *self.0.borrow_mut() = Some(p.encode().to_vec());
        Ok(())
    }
}

struct FixedRng;

impl Rng for FixedRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        buf.fill(7);
    }
}

type Dev = Device<FakeUdp, FakeClock, Thermometer, Flash, NoRadio, SetInterval>;

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the fakes never block: the future should be ready");
}

fn device(world: &World, gateways: &[u16], flash: Flash) -> Dev {
    device_with_acks(world, gateways, flash, Acks::Leader)
}

fn device_with_acks(world: &World, gateways: &[u16], flash: Flash, acks: Acks) -> Dev {
    let config = DeviceConfig::new(
        "dev-0001",
        gateways.iter().map(|p| addr(*p)).collect(),
        ALARM,
    );
    let settings = Settings {
        topic: "readings".into(),
        acks,
        max_batch: 16,
        downlink_max_bytes: 512,
        alarm_interval_ms: ALARM,
    };
    let coap = Config {
        ack_timeout: std::time::Duration::from_millis(1000),
        max_retransmit: 2,
        response_timeout: std::time::Duration::from_secs(5),
        ..Config::default()
    };
    let parts = Parts {
        udp: FakeUdp(world.clone()),
        clock: FakeClock(world.now.clone()),
        sensor: Thermometer,
        storage: flash,
        radio: NoRadio,
        app: SetInterval,
    };
    block_on(Device::boot(config, settings, coap, parts, &mut FixedRng))
}

fn cycle(d: &mut Dev) -> pehra_device_fw::CycleReport {
    block_on(async {
        let r = d.run_cycle().await;
        d.sleep(&r).await;
        r
    })
}

#[test]
fn the_alarm_schedule_follows_sleep_until_and_readings_are_published_each_cycle() {
    let w = World::new(&[1]);
    let mut d = device(&w, &[1], Flash::default());
    let mut wakes = Vec::new();
    for _ in 0..3 {
        let start = w.now.get();
        let r = cycle(&mut d);
        assert!(r.deep_sleep);
        assert_eq!(r.published, 1);
        assert_eq!(
            r.wake_at_ms,
            start + ALARM,
            "sleep_until is gateway now + alarm"
        );
        wakes.push(w.now.get());
    }
    assert_eq!(wakes[2] - wakes[1], ALARM);
    assert_eq!(w.net.borrow().readings.len(), 3);
    let c = w.net.borrow().last_checkin.clone().unwrap();
    assert_eq!(c.node, "dev-0001");
    assert!(!c.mains_powered);
    assert_eq!(c.health.unwrap().battery_permille, Some(900));
    let e = d.energy();
    assert!(e.sleep_us >= 2 * ALARM * 1000);
    assert!(e.tx_bytes > 0);
}

#[test]
fn stay_awake_wake_now_and_rejoin_are_obeyed() {
    let w = World::new(&[1, 2]);
    let mut d = device(&w, &[1, 2], Flash::default());
    w.set(|n| n.directive = Some(Directive::StayAwake));
    let start = w.now.get();
    let r = cycle(&mut d);
    assert!(!r.deep_sleep);
    assert_eq!(r.wake_at_ms, start + ALARM / 10);
    assert!(
        d.energy().listen_us >= ALARM / 10 * 1000,
        "awake: the radio stays up"
    );

    w.set(|n| {
        n.directive = Some(Directive::WakeNow);
        n.downlink.push(rec("hello"));
    });
    let r = cycle(&mut d);
    assert_eq!(r.directive, Some(Directive::WakeNow));
    assert_eq!(r.downlink, 1);

    w.set(|n| n.directive = Some(Directive::Rejoin));
    let before = w.checkins(1);
    let r = cycle(&mut d);
    // Rejoin: checked in again at once, then (told again) backs off to the alarm.
    assert_eq!(w.checkins(1), before + 2);
    assert!(r.deep_sleep);
    assert_eq!(d.node().clock_offset_ms(), None);
}

#[test]
fn a_lost_pehredar_rotates_to_another_gateway_and_the_new_one_is_rediscovered() {
    let w = World::new(&[1, 2, 3]);
    let mut d = device(&w, &[1, 2, 3], Flash::default());
    w.set(|n| n.pehredar = Some(addr(2)));
    cycle(&mut d);
    assert_eq!(w.checkins(1), 1);
    cycle(&mut d);
    assert_eq!(w.checkins(2), 1, "the Pehredar named is asked next");
    // The Pehredar dies; the cluster elects 3.
    w.gw(2, |g| g.alive = false);
    w.set(|n| n.pehredar = Some(addr(3)));
    let r = cycle(&mut d);
    assert_eq!(r.gateway, Some(addr(1)), "rotated to another gateway");
    assert_eq!(d.node().pehredar(), Some(addr(3)));
    let r = cycle(&mut d);
    assert_eq!(r.gateway, Some(addr(3)));
    assert_eq!(w.checkins(2), 1);
}

#[test]
fn no_gateway_answers_backs_off_keeps_readings_and_batches_them_later() {
    let w = World::new(&[1, 2]);
    let mut d = device(&w, &[1, 2], Flash::default());
    cycle(&mut d);
    w.gw(1, |g| g.alive = false);
    w.gw(2, |g| g.alive = false);
    for _ in 0..3 {
        let r = cycle(&mut d);
        assert_eq!(r.gateway, None);
        assert!(r.deep_sleep);
    }
    assert_eq!(d.buffered().0, 3);
    assert_eq!(d.node().counters().failed_cycles, 3);
    w.gw(2, |g| g.alive = true);
    let publishes = w.net.borrow().publishes;
    let r = cycle(&mut d);
    assert_eq!(r.gateway, Some(addr(2)));
    assert_eq!(
        r.published, 4,
        "the three kept and the new one, in one batch"
    );
    assert_eq!(w.net.borrow().publishes, publishes + 1);
    assert_published_in_order_once(&w, 5);
    assert_eq!(d.buffered(), (0, 0));
}

#[test]
fn garbled_answers_are_counted_ignored_and_another_gateway_is_tried() {
    let w = World::new(&[1, 2]);
    let mut d = device(&w, &[1, 2], Flash::default());
    w.gw(1, |g| g.garble = true);
    let r = cycle(&mut d);
    assert_eq!(r.gateway, Some(addr(2)));
    assert!(d.stats().bad_responses >= 1);
    // Everyone garbles: backs off, nothing panics, readings stay.
    w.gw(2, |g| g.garble = true);
    let r = cycle(&mut d);
    assert_eq!(r.gateway, None);
    assert_eq!(d.buffered().0, 1);
}

/// The gateways got readings 0..n, each once, in order.
fn assert_published_in_order_once(w: &World, n: usize) {
    let values: Vec<String> = w
        .net
        .borrow()
        .readings
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    assert_eq!(values.len(), n, "{values:?}");
    for (i, v) in values.iter().enumerate() {
        assert!(v.contains(&format!("\"seq\":{i}")), "in order, once: {v}");
    }
}

fn rec(text: &str) -> Record {
    Record {
        key: None,
        value: text.as_bytes().to_vec(),
        timestamp_ms: 0,
        headers: vec![],
    }
}

#[test]
fn the_downlink_offset_advances_is_committed_survives_a_restart_and_sets_the_interval() {
    let w = World::new(&[1]);
    let flash = Flash::default();
    let mut d = device(&w, &[1], flash.clone());
    w.set(|n| {
        n.downlink.push(rec("a"));
        n.downlink.push(rec("b"));
        n.downlink.push(rec("set-interval 30"));
    });
    let r = cycle(&mut d);
    assert_eq!(r.downlink, 3, "two rounds: 2 then 1");
    assert_eq!(d.node().downlink_from(), Some(3));
    assert_eq!(d.settings().alarm_interval_ms, 30_000);
    assert!(r.wake_at_ms <= w.now.get());
    // Next cycle commits offset 3 at the gateway.
    cycle(&mut d);
    assert_eq!(w.net.borrow().committed, Some(3));
    // A restart (deep sleep, RAM lost) resumes from storage.
    drop(d);
    let d = device(&w, &[1], flash);
    assert_eq!(d.node().downlink_from(), Some(3));
    assert_eq!(d.persisted().readings_seq, 2);
}

#[test]
fn a_deep_sleep_reset_goes_on_with_the_schedule_clock_readings_and_back_off() {
    let w = World::new(&[1]);
    let flash = Flash::default();
    let mut d = device(&w, &[1], flash.clone());
    w.set(|n| n.downlink.push(rec("set-interval 30")));
    cycle(&mut d);
    assert_eq!(d.settings().alarm_interval_ms, 30_000);
    // The gateway goes away: two cycles back off (30 s, then 60 s), keeping 2 readings.
    w.gw(1, |g| g.alive = false);
    let first = cycle(&mut d);
    let second = block_on(d.run_cycle());
    assert_eq!(second.wake_at_ms - w.now.get(), 2 * 30_000);
    assert!(first.deep_sleep && second.deep_sleep);
    block_on(d.sleep(&second));
    assert_eq!(d.buffered().0, 2);
    // Deep sleep resets the device: RAM is lost; the clock (the RTC) runs on.
    drop(d);
    let mut d = device(&w, &[1], flash.clone());
    assert_eq!(d.buffered().0, 2, "the unacknowledged readings were kept");
    assert_eq!(
        d.settings().alarm_interval_ms,
        30_000,
        "set-interval was kept"
    );
    assert_eq!(
        d.node().clock_offset_ms(),
        Some(GW_OFFSET as i64),
        "the clock offset was kept"
    );
    // Still nobody: the back-off goes on doubling (4 × 30 s), not back to one alarm.
    let r = block_on(d.run_cycle());
    assert_eq!(r.wake_at_ms - w.now.get(), 4 * 30_000);
    block_on(d.sleep(&r));
    drop(d);
    // The gateway is back: after another reset the three readings go in one batch,
    // stamped with the gateway's time although no check-in has answered since boot.
    w.gw(1, |g| g.alive = true);
    let mut d = device(&w, &[1], flash);
    let taken_at = w.now.get();
    let r = cycle(&mut d);
    assert_eq!(r.published, 4, "three kept and the new one");
    let last = w.net.borrow().readings.last().unwrap().timestamp_ms;
    assert_eq!(last, taken_at + GW_OFFSET);
    assert_published_in_order_once(&w, 5);
}

#[test]
fn readings_sent_without_acks_leave_the_device_before_it_sleeps() {
    let w = World::new(&[1]);
    let mut d = device_with_acks(&w, &[1], Flash::default(), Acks::None);
    let r = block_on(d.run_cycle());
    assert_eq!(r.published, 1);
    assert_eq!(w.net.borrow().readings.len(), 1);
    assert_eq!(
        w.net.borrow().unflushed,
        0,
        "the socket is flushed after the last send of the cycle"
    );
}

/// Fills with one byte value (a device's boots draw different values; FixedRng's 7s).
struct ByteRng(u8);

impl Rng for ByteRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        buf.fill(self.0);
    }
}

fn secured_device(world: &World, gateways: &[u16], flash: Flash, key: [u8; 32]) -> Dev {
    secured_device_drawing(world, gateways, flash, key, 7)
}

fn secured_device_drawing(
    world: &World,
    gateways: &[u16],
    flash: Flash,
    key: [u8; 32],
    random: u8,
) -> Dev {
    let keys = DeviceKeys {
        kid: kid(Role::Device, 1),
        identity_key: key,
    };
    boot_secured(world, gateways, flash, keys, random)
}

/// Boots device `dev-0001` (acks 1) protecting every request as `identity`, gateway
/// `p` being broker `p`, drawing `random` for its seeds.
fn boot_secured(
    world: &World,
    gateways: &[u16],
    flash: Flash,
    identity: impl Into<pehra_device_fw::DeviceIdentity>,
    random: u8,
) -> Dev {
    let config = DeviceConfig::new(
        "dev-0001",
        gateways.iter().map(|p| addr(*p)).collect(),
        ALARM,
    );
    let settings = Settings {
        topic: "readings".into(),
        acks: Acks::Leader,
        max_batch: 16,
        downlink_max_bytes: 512,
        alarm_interval_ms: ALARM,
    };
    let parts = Parts {
        udp: FakeUdp(world.clone()),
        clock: FakeClock(world.now.clone()),
        sensor: Thermometer,
        storage: flash,
        radio: NoRadio,
        app: SetInterval,
    };
    let brokers = gateways.iter().map(|p| (addr(*p), *p as u32)).collect();
    block_on(Device::boot_secured(
        config,
        settings,
        Config::default(),
        parts,
        &mut ByteRng(random),
        identity,
        brokers,
    ))
}

#[test]
fn a_secured_device_publishes_and_reads_downlink_over_oscore_only() {
    let w = World::secure(&[1]);
    let mut d = secured_device(&w, &[1], Flash::default(), DEVICE_KEY);
    w.set(|n| n.downlink.push(rec("set-interval 30")));
    let mut sent = Vec::new();
    for _ in 0..3 {
        let r = cycle(&mut d);
        assert_eq!(r.published, 1);
        sent.push(d.client().stats().datagrams_sent);
    }
    // Check-in (repeated once with the gateway's Echo: a new context), publish,
    // downlink; then check-in, publish and the downlink commit; check-in, publish.
    assert_eq!(sent, [4, 7, 9]);
    assert_eq!(d.settings().alarm_interval_ms, 30_000, "downlink read");
    assert_published_in_order_once(&w, 3);
    assert_eq!(w.net.borrow().refused, 0);
    assert_eq!(d.stats().bad_responses, 0);
}

#[test]
fn a_device_with_the_wrong_key_is_refused_and_publishes_nothing() {
    let w = World::secure(&[1]);
    let mut d = secured_device(&w, &[1], Flash::default(), [0x11; 32]);
    let r = cycle(&mut d);
    assert_eq!(r.directive, None, "no check-in answered");
    assert_eq!(r.published, 0);
    assert!(w.net.borrow().readings.is_empty());
    // A plain device is refused too.
    let mut plain = device(&w, &[1], Flash::default());
    assert_eq!(cycle(&mut plain).published, 0);
    assert!(w.net.borrow().refused > 0);
    assert!(w.net.borrow().readings.is_empty());
}

#[test]
fn a_reset_resumes_the_id_context_above_every_sequence_number_used() {
    let w = World::secure(&[1]);
    let flash = Flash::default();
    let mut d = secured_device(&w, &[1], flash.clone(), DEVICE_KEY);
    let stored = |f: &Flash| {
        Persisted::decode(f.0.borrow().as_ref().unwrap())
            .unwrap()
            .oscore
    };
    let at_boot = stored(&flash).expect("the claim is stored before anything is sent");
    // Many cycles: the claim is raised (and stored) before it could be reached.
    for _ in 0..40 {
        assert_eq!(cycle(&mut d).published, 1);
        let next = d.client().next_sequence(&addr(1)).unwrap();
        assert!(next < stored(&flash).unwrap().claim);
    }
    assert_published_in_order_once(&w, 40);
    let before = stored(&flash).unwrap();
    assert_eq!(before.id_context, at_boot.id_context);
    assert!(before.claim > at_boot.claim);
    // A reset (deep sleep on an ESP32-C3, or a watchdog mid-cycle): the same ID
    // Context, numbers from the claim on: the gateway's context goes on, no Echo.
    drop(d);
    let mut d = secured_device(&w, &[1], flash.clone(), DEVICE_KEY);
    assert_eq!(
        d.client().next_sequence(&addr(1)),
        None,
        "derived on first use"
    );
    assert_eq!(cycle(&mut d).published, 1);
    assert_eq!(
        d.client().stats().datagrams_sent,
        2,
        "check-in and publish: no Echo round trip"
    );
    assert_eq!(w.net.borrow().refused, 0, "nothing refused as a replay");
    let after = stored(&flash).unwrap();
    assert_eq!(after.id_context, before.id_context);
    assert!(after.claim >= before.claim + pehra_device_fw::security::CLAIM_STEP);
    // Without storage: a new random ID Context, a new context at the gateway.
    drop(d);
    let mut d = secured_device_drawing(&w, &[1], Flash::default(), DEVICE_KEY, 8);
    assert_eq!(cycle(&mut d).published, 1);
    assert_eq!(
        d.client().stats().datagrams_sent,
        3,
        "with an Echo round trip"
    );
    assert_eq!(w.net.borrow().readings.len(), 42);
}

#[test]
fn a_secured_device_follows_the_pehredar_to_another_broker() {
    let w = World::secure(&[1, 2]);
    // Configured with broker 1 only: it learns broker 2 from the check-in reply.
    let mut d = secured_device(&w, &[1], Flash::default(), DEVICE_KEY);
    w.set(|n| n.pehredar = Some(addr(2)));
    cycle(&mut d);
    let r = cycle(&mut d);
    assert_eq!(r.gateway, Some(addr(2)));
    assert_eq!(r.published, 1);
    assert_eq!(w.checkins(2), 1);
    assert_eq!(w.net.borrow().refused, 0);
    assert_eq!(d.stats().no_context, 0);
}

#[test]
fn a_secured_device_sends_nothing_while_it_cannot_store_its_claim() {
    let w = World::secure(&[1]);
    let flash = Flash::default();
    flash.1.set(true);
    let mut d = secured_device(&w, &[1], flash.clone(), DEVICE_KEY);
    let r = cycle(&mut d);
    assert_eq!(r.published, 0);
    assert_eq!(d.client().stats().datagrams_sent, 0, "nothing sent");
    // Storage works again: the claim is stored, then the requests go.
    flash.1.set(false);
    assert_eq!(cycle(&mut d).published, 2);
    let stored = Persisted::decode(flash.0.borrow().as_ref().unwrap()).unwrap();
    let next = d.client().next_sequence(&addr(1)).unwrap();
    assert!(next < stored.oscore.unwrap().claim);
}

/// Devices with only a static key pair: EDHOC with each broker, then OSCORE.
#[cfg(feature = "edhoc")]
mod edhoc {
    use super::*;
    use pehra_device_fw::EdhocKeys;
    use pehra_shared::edhoc::{KnownPeer, Limits, ResponderConfig, StaticKey};

    fn device_key() -> StaticKey {
        StaticKey::derive(&[0xED; 32], &kid(Role::Device, 1), "dev-0001")
    }

    fn broker_key(port: u16) -> StaticKey {
        let id = port as u32;
        StaticKey::derive(&[port as u8; 32], &broker_kid(id), &format!("broker-{id}"))
    }

    /// A gateway's engine as it starts: no pre-shared keys, EDHOC on, knowing the
    /// device's credential `known`.
    fn gateway_engine(port: u16, known: &StaticKey, seed: u8) -> Engine<SocketAddr> {
        let mut engine = Engine::new(Config::default(), [seed; 32]);
        let mut security = ServerSecurity::new(broker_kid(port as u32), KeyTable::new(), 0);
        security.edhoc = Some(ResponderConfig {
            key: broker_key(port),
            peers: vec![KnownPeer {
                identity: device_identity(),
                credential: known.credential(),
            }],
            limits: Limits::default(),
        });
        engine.set_server_security(security);
        engine
    }

    /// Gateways that take only OSCORE contexts made by EDHOC with device `dev-0001`.
    fn world(ports: &[u16]) -> World {
        let w = World::new(ports);
        w.set(|n| {
            n.secure = true;
            for (a, g) in n.gateways.iter_mut() {
                g.engine = gateway_engine(a.port(), &device_key(), 1);
            }
        });
        w
    }

    /// The gateway on `port` restarts: every context EDHOC made with it is gone.
    fn restart(w: &World, port: u16) {
        w.gw(port, |g| g.engine = gateway_engine(port, &device_key(), 9));
    }

    fn edhoc_device(w: &World, gateways: &[u16], flash: Flash, key: StaticKey, random: u8) -> Dev {
        // The device knows every broker's credential (its file's `edhoc_peers`).
        let keys = EdhocKeys {
            key,
            servers: [1u16, 2]
                .iter()
                .map(|&p| (broker_kid(p as u32), broker_key(p).ccs().to_vec()))
                .collect(),
        };
        boot_secured(w, gateways, flash, keys, random)
    }

    #[test]
    fn an_edhoc_device_runs_edhoc_once_per_broker_then_speaks_oscore() {
        let w = world(&[1, 2]);
        let mut d = edhoc_device(&w, &[1], Flash::default(), device_key(), 7);
        w.set(|n| n.downlink.push(rec("set-interval 30")));
        assert_eq!(cycle(&mut d).published, 1);
        // message_1, then the check-in carrying message_3 (RFC 9668's combined
        // request: no round trip of its own), the publish and the downlink fetch.
        assert_eq!(d.client().stats().datagrams_sent, 4);
        for _ in 0..2 {
            assert_eq!(cycle(&mut d).published, 1);
        }
        assert_eq!(d.stats().handshakes, 1, "one EDHOC run with broker 1");
        assert_eq!(d.settings().alarm_interval_ms, 30_000, "downlink read");
        assert_published_in_order_once(&w, 3);
        assert_eq!(
            w.net.borrow().refused,
            0,
            "every request verified as the device"
        );
        // The Pehredar moves to broker 2: a context of its own, from EDHOC with it.
        w.set(|n| n.pehredar = Some(addr(2)));
        cycle(&mut d);
        let r = cycle(&mut d);
        assert_eq!(r.gateway, Some(addr(2)));
        assert_eq!(r.published, 1);
        assert_eq!(d.stats().handshakes, 2);
        assert_eq!(w.net.borrow().refused, 0);
        assert_eq!(d.stats().no_context, 0);
    }

    #[test]
    fn a_reset_keeps_the_edhoc_session_and_a_restarted_broker_gets_a_new_one() {
        let w = world(&[1]);
        let flash = Flash::default();
        let mut d = edhoc_device(&w, &[1], flash.clone(), device_key(), 7);
        assert_eq!(cycle(&mut d).published, 1);
        assert_eq!(d.stats().handshakes, 1);
        let stored = Persisted::decode(flash.0.borrow().as_ref().unwrap()).unwrap();
        assert_eq!(stored.edhoc.len(), 1, "the session is stored");
        assert_eq!(stored.edhoc[0].broker, 1);
        let used = d.client().next_sequence(&addr(1)).unwrap();
        assert!(used < stored.oscore.unwrap().claim);
        // A reset (deep sleep on an ESP32-C3): the stored session goes on, numbers from
        // the claim on, no handshake and nothing refused as a replay.
        drop(d);
        let mut d = edhoc_device(&w, &[1], flash.clone(), device_key(), 8);
        assert_eq!(cycle(&mut d).published, 1);
        assert_eq!(d.stats().handshakes, 0, "no EDHOC after a reset");
        assert_eq!(d.client().stats().datagrams_sent, 2, "check-in and publish");
        assert_eq!(w.net.borrow().refused, 0);
        // The broker restarts and forgets the context: it answers 4.01 "Security
        // context not found", the device runs EDHOC again and the check-in goes through.
        restart(&w, 1);
        assert_eq!(cycle(&mut d).published, 1);
        assert_eq!(
            d.stats().handshakes,
            1,
            "EDHOC again with the restarted broker"
        );
        assert_eq!(d.stats().timeouts, 0);
        assert_published_in_order_once(&w, 3);
        assert_eq!(w.net.borrow().refused, 0);
    }

    #[test]
    fn an_edhoc_device_the_broker_does_not_know_sends_nothing_in_the_clear() {
        let w = world(&[1]);
        let stranger = StaticKey::derive(&[0x11; 32], &kid(Role::Device, 1), "dev-0001");
        let mut d = edhoc_device(&w, &[1], Flash::default(), stranger, 7);
        let r = cycle(&mut d);
        assert_eq!(r.published, 0);
        assert_eq!(r.directive, None, "no check-in answered");
        // Its message_3 (with the check-in) is refused with an EDHOC error: the
        // session is dropped and the check-in fails, without another handshake (it
        // would be refused again; the next cycle tries anew).
        assert_eq!(d.stats().handshakes, 1);
        assert!(d.stats().bad_responses > 0);
        let net = w.net.borrow();
        assert!(net.readings.is_empty());
        assert_eq!(
            net.refused, 0,
            "no request reached the gateway's application"
        );
        assert!(net.last_checkin.is_none());
    }
}
