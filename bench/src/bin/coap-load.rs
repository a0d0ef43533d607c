//! `coap-load`: a closed-loop CoAP (or raw UDP) load client for loopback benchmarks.
//!
//! Every worker thread owns one connected UDP socket and a window of exactly
//! `--in-flight` outstanding requests. As soon as one request completes (or is given
//! up), a new one is sent in its slot, so the offered load adapts to the server.
//!
//! * `--mode coap`: CON GET with Uri-Path options, a unique message ID and a unique
//!   4-byte token per request. A piggybacked `ACK 2.05` completes the request. An empty
//!   ACK (separate response announced) is counted and the request then waits for the
//!   separate response (which is ACKed); anything other than 2.05 counts as an error.
//!   Requests without an answer are retransmitted with the same message ID after
//!   `--ack-timeout-ms` (doubling, RFC 7252 style) up to `--max-retransmit` times,
//!   then counted as a timeout.
//! * `--mode raw`: a small datagram carrying the 4-byte token; any datagram that comes
//!   back with a known token completes the request (for a UDP echo server: the ceiling).
//!
//! Tokens are assigned so that `token % in_flight` is the slot index: lookups are O(1)
//! and need no hashing, and tokens are still unique for 2^32 requests per thread.
//!
//! Only events within the measurement window (after `--warmup`) are counted. The whole
//! run is bounded by warmup + duration + 2 s (a watchdog exits the process otherwise).
//! Exit status: 0 if at least one request completed in the window, 1 otherwise.

use pehra_bench::{json_str, Latencies};
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use coap_lite::{
    CoapOption, Header, HeaderRaw, MessageClass, MessageType, RequestType, ResponseType,
};
use pehra_shared::coap::Packet;
use pehra_shared::oscore::{ContextParams, RequestBinding, SecurityContext};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// CoAP CON GET requests, matched by token.
    Coap,
    /// Raw UDP ping-pong: any datagram back with the same 4-byte token completes.
    Raw,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Coap => "coap",
            Mode::Raw => "raw",
        }
    }
}

/// Closed-loop CoAP / UDP load client.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long)]
    target: String,
    /// Uri-Path of the requested resource (segments separated by '/').
    #[arg(long, default_value = "bench")]
    path: String,
    /// Concurrent outstanding requests per thread.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Measurement duration in seconds (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up in seconds before measuring (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// coap = CoAP GET, raw = UDP ping-pong.
    #[arg(long, value_enum, default_value_t = Mode::Coap)]
    mode: Mode,
    /// Worker threads; each has its own socket and its own in-flight window.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    json: bool,
    /// Initial retransmission timeout in milliseconds (doubles per retransmission).
    #[arg(long, default_value_t = 1000)]
    ack_timeout_ms: u64,
    /// Retransmissions before a request is counted as a timeout.
    #[arg(long, default_value_t = 4)]
    max_retransmit: u32,
    /// Datagram size in raw mode (at least 4 bytes).
    #[arg(long, default_value_t = 16)]
    raw_size: usize,
    /// Free-form label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Protect every request with OSCORE as the benchmark identity
    /// (`pehra_bench::bench_oscore`; the server runs `coap-bench-server --oscore`), each
    /// thread in a context of its own; the server's first answer asks for Echo, once.
    #[arg(long)]
    oscore: bool,
}

/// One request slot of a worker's in-flight window.
#[derive(Clone, Copy)]
struct Slot {
    token: u32,
    mid: u16,
    first_sent: Instant,
    last_sent: Instant,
    retransmits: u32,
    /// Empty ACK received: the server promised a separate response.
    acked: bool,
}

#[derive(Default)]
struct Stats {
    sent: u64,
    completed: u64,
    errors: u64,
    retransmissions: u64,
    timeouts: u64,
    empty_acks: u64,
    separate: u64,
    unexpected: u64,
    send_errors: u64,
    resp_bytes: u64,
    /// Latencies of completed requests.
    lat: Latencies,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.completed += o.completed;
        self.errors += o.errors;
        self.retransmissions += o.retransmissions;
        self.timeouts += o.timeouts;
        self.empty_acks += o.empty_acks;
        self.separate += o.separate;
        self.unexpected += o.unexpected;
        self.send_errors += o.send_errors;
        self.resp_bytes += o.resp_bytes;
        self.lat.add(o.lat);
    }
}

struct Plan {
    args: Args,
    target: SocketAddr,
    /// Request template (CoAP: MID and token patched in; raw: token patched in).
    template: Vec<u8>,
    t0: Instant,
    measure_start: Instant,
    end: Instant,
}

/// Builds the request template with coap-lite: CON GET, 4-byte token, Uri-Path options.
fn coap_template(path: &str) -> Result<Vec<u8>> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = 0;
    p.set_token(vec![0; 4]);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    let bytes = p
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("encoding request template: {e:?}"))?;
    if bytes.len() < 8 || bytes[0] & 0x0f != 4 {
        bail!("unexpected request template layout");
    }
    Ok(bytes)
}

fn fill_request(buf: &mut [u8], mode: Mode, token: u32, mid: u16) {
    match mode {
        Mode::Coap => {
            buf[2..4].copy_from_slice(&mid.to_be_bytes());
            buf[4..8].copy_from_slice(&token.to_be_bytes());
        }
        Mode::Raw => buf[0..4].copy_from_slice(&token.to_be_bytes()),
    }
}

fn lat_ns(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

struct Worker<'a> {
    plan: &'a Plan,
    sock: UdpSocket,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    next_mid: u16,
    stats: Stats,
    /// With `--oscore`: the thread's context and each slot's protected request.
    oscore: Option<Oscore>,
}

/// A worker's OSCORE state.
struct Oscore {
    ctx: SecurityContext,
    /// Each slot's request as sent (retransmissions repeat it, Partial IV and all).
    wire: Vec<Vec<u8>>,
    bindings: Vec<Option<RequestBinding>>,
    /// The server's Echo value, until a request carrying it succeeded.
    echo: Option<Vec<u8>>,
}

impl Oscore {
    fn new(slots: usize, thread: usize) -> Result<Oscore> {
        use pehra_bench::bench_oscore;
        let secret = pehra_shared::security::pairwise_secret(
            &bench_oscore::IDENTITY_KEY,
            &bench_oscore::server_kid(),
        );
        let id_context = pehra_shared::coap::client_id_context(
            std::process::id() as u64 ^ ((thread as u64) << 32) ^ now_nanos(),
        );
        let params = ContextParams {
            master_secret: &secret,
            master_salt: &[],
            id_context: Some(&id_context),
            sender_id: &bench_oscore::client().kid,
            recipient_id: &bench_oscore::server_kid(),
        };
        Ok(Oscore {
            ctx: SecurityContext::new(&params, None).map_err(|e| anyhow::anyhow!("{e}"))?,
            wire: vec![Vec::new(); slots],
            bindings: vec![None; slots],
            echo: None,
        })
    }

    /// Protects slot `i`'s plain request `plain` and keeps it for (re)sending.
    fn protect(&mut self, i: usize, plain: &[u8]) {
        let Ok(mut packet) = Packet::from_bytes(plain) else {
            return;
        };
        if let Some(echo) = &self.echo {
            packet.add_option(CoapOption::Unknown(pehra_shared::coap::ECHO), echo.clone());
        }
        if let Ok(protected) = self.ctx.protect_request(&packet) {
            self.wire[i] = protected.packet.to_bytes().unwrap_or_default();
            self.bindings[i] = Some(protected.binding);
        }
    }

    /// The inner response to slot `i`'s request, if the answer verifies.
    fn unprotect(&mut self, i: usize, datagram: &[u8]) -> Option<Packet> {
        let packet = Packet::from_bytes(datagram).ok()?;
        let binding = self.bindings[i].as_mut()?;
        self.ctx
            .unprotect_response(binding, &packet)
            .ok()
            .map(|v| v.packet)
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Worker<'_> {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.plan.measure_start
    }

    fn send_slot(&mut self, i: usize, now: Instant) {
        let s = self.slots[i];
        let sent = match &self.oscore {
            Some(oscore) => self.sock.send(&oscore.wire[i]),
            None => {
                fill_request(&mut self.buf, self.plan.args.mode, s.token, s.mid);
                self.sock.send(&self.buf)
            }
        };
        if sent.is_err() && self.in_window(now) {
            // e.g. ECONNREFUSED from an earlier ICMP; the retransmission timer recovers.
            self.stats.send_errors += 1;
        }
    }

    /// Starts a fresh request in slot `i` (new token = old + in_flight, new MID).
    fn new_request(&mut self, i: usize, now: Instant, first: bool) {
        let n = self.slots.len() as u32;
        let s = &mut self.slots[i];
        if !first {
            // Keep `token % n == i`, also across the (theoretical) u32 wrap.
            s.token = s.token.checked_add(n).unwrap_or(i as u32);
        }
        s.mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        s.first_sent = now;
        s.last_sent = now;
        s.retransmits = 0;
        s.acked = false;
        let (token, mid) = (s.token, s.mid);
        if self.in_window(now) {
            self.stats.sent += 1;
        }
        if let Some(oscore) = self.oscore.as_mut() {
            fill_request(&mut self.buf, self.plan.args.mode, token, mid);
            oscore.protect(i, &self.buf);
        }
        self.send_slot(i, now);
    }

    /// A request in slot `i` finished (successfully or not) at `now`.
    fn finish(&mut self, i: usize, now: Instant, ok: bool, len: usize) {
        if self.in_window(now) {
            if ok {
                self.stats.completed += 1;
                self.stats.resp_bytes += len as u64;
                self.stats.lat.record(lat_ns(self.slots[i].first_sent, now));
            } else {
                self.stats.errors += 1;
            }
        }
        if now < self.plan.end {
            self.new_request(i, now, false);
        }
    }

    fn slot_by_token(&self, token: u32) -> Option<usize> {
        let i = (token % self.slots.len() as u32) as usize;
        (self.slots[i].token == token).then_some(i)
    }

    fn slot_by_mid(&self, mid: u16) -> Option<usize> {
        self.slots.iter().position(|s| s.mid == mid && !s.acked)
    }

    fn on_datagram(&mut self, d: &[u8], now: Instant) {
        match self.plan.args.mode {
            Mode::Raw => {
                let tok = d
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                match tok.and_then(|t| self.slot_by_token(t)) {
                    Some(i) => self.finish(i, now, true, d.len()),
                    None => self.count_unexpected(now),
                }
            }
            Mode::Coap => self.on_coap(d, now),
        }
    }

    fn count_unexpected(&mut self, now: Instant) {
        if self.in_window(now) {
            self.stats.unexpected += 1;
        }
    }

    fn on_coap(&mut self, d: &[u8], now: Instant) {
        let Ok(raw) = HeaderRaw::try_from(d) else {
            return self.count_unexpected(now);
        };
        let h = Header::from_raw(&raw);
        let tkl = usize::from(h.get_token_length());
        if h.get_version() != 1 || tkl > 8 || d.len() < 4 + tkl {
            return self.count_unexpected(now);
        }
        let mid = h.message_id;
        let ty = h.get_type();
        match (ty, h.code) {
            (MessageType::Acknowledgement, MessageClass::Empty) => {
                // Separate response announced: stop retransmitting, wait for it.
                match self.slot_by_mid(mid) {
                    Some(i) => {
                        self.slots[i].acked = true;
                        if self.in_window(now) {
                            self.stats.empty_acks += 1;
                        }
                    }
                    None => self.count_unexpected(now),
                }
            }
            (MessageType::Reset, _) => match self.slot_by_mid(mid) {
                Some(i) => self.finish(i, now, false, d.len()),
                None => self.count_unexpected(now),
            },
            (ty, code) => {
                if ty == MessageType::Confirmable {
                    // Separate (or unsolicited) CON response: ACK it with an empty ACK.
                    let mut ack = [0x60u8, 0, 0, 0];
                    ack[2..4].copy_from_slice(&mid.to_be_bytes());
                    let _ = self.sock.send(&ack);
                }
                let token = (tkl == 4).then(|| u32::from_be_bytes([d[4], d[5], d[6], d[7]]));
                let slot = token.and_then(|t| self.slot_by_token(t));
                let Some(i) = slot else {
                    // Late duplicate (answer to a retransmission) or foreign token.
                    return self.count_unexpected(now);
                };
                if ty == MessageType::Acknowledgement && self.slots[i].mid != mid {
                    return self.count_unexpected(now);
                }
                if ty != MessageType::Acknowledgement && self.in_window(now) {
                    self.stats.separate += 1;
                }
                let code = match self.oscore.as_mut() {
                    None => code,
                    Some(oscore) => {
                        let Some(inner) = oscore.unprotect(i, d) else {
                            return self.finish(i, now, false, d.len());
                        };
                        let echo = pehra_shared::coap::ECHO;
                        if let Some(value) = inner
                            .get_option(CoapOption::Unknown(echo))
                            .and_then(|v| v.first())
                        {
                            // The server's first answer in this context: repeat with Echo.
                            oscore.echo = Some(value.clone());
                            return self.new_request(i, now, false);
                        }
                        oscore.echo = None;
                        inner.header.code
                    }
                };
                let ok = code == MessageClass::Response(ResponseType::Content);
                self.finish(i, now, ok, d.len());
            }
        }
    }

    /// Retransmits overdue requests; gives up after `max_retransmit`.
    fn check_timers(&mut self, now: Instant) {
        let base = Duration::from_millis(self.plan.args.ack_timeout_ms);
        let max = self.plan.args.max_retransmit;
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if now >= self.plan.end {
                break;
            }
            let wait = base * 2u32.saturating_pow(s.retransmits.min(16));
            if s.acked {
                // Waiting for a separate response: give up after the whole retransmit span.
                if now.duration_since(s.first_sent) >= base * 2u32.saturating_pow(max.min(16) + 1) {
                    if self.in_window(now) {
                        self.stats.timeouts += 1;
                    }
                    self.new_request(i, now, false);
                }
                continue;
            }
            if now.duration_since(s.last_sent) < wait {
                continue;
            }
            if s.retransmits >= max {
                if self.in_window(now) {
                    self.stats.timeouts += 1;
                }
                self.new_request(i, now, false);
            } else {
                self.slots[i].retransmits += 1;
                self.slots[i].last_sent = now;
                if self.in_window(now) {
                    self.stats.retransmissions += 1;
                }
                self.send_slot(i, now);
            }
        }
    }

    fn run(mut self) -> Stats {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            self.new_request(i, now, true);
        }
        let tick = Duration::from_millis(10);
        let mut next_check = now + tick;
        let mut rbuf = [0u8; 2048];
        loop {
            let res = self.sock.recv(&mut rbuf);
            let now = Instant::now();
            if now >= self.plan.end {
                break;
            }
            match res {
                Ok(n) => self.on_datagram(&rbuf[..n], now),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    // ECONNREFUSED (nobody listening yet) and the like.
                    if self.in_window(now) {
                        self.stats.errors += 1;
                    }
                }
            }
            if now >= next_check {
                self.check_timers(now);
                next_check = now + tick;
            }
        }
        self.stats
    }
}

fn worker(plan: Arc<Plan>, thread: usize) -> Result<Stats> {
    let bind = pehra_shared::driver::any_local_for(plan.target);
    let sock = UdpSocket::bind(bind).context("bind")?;
    sock.connect(plan.target).context("connect")?;
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    let n = plan.args.in_flight;
    // Per-thread random-ish MID start so threads/runs do not collide in server caches.
    let seed = plan.t0.elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let next_mid = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16 ^ (thread as u16) << 12;
    let slots = (0..n)
        .map(|i| Slot {
            token: i as u32,
            mid: 0,
            first_sent: plan.t0,
            last_sent: plan.t0,
            retransmits: 0,
            acked: false,
        })
        .collect();
    let oscore = if plan.args.oscore {
        Some(Oscore::new(n, thread)?)
    } else {
        None
    };
    let w = Worker {
        oscore,
        buf: plan.template.clone(),
        plan: &plan,
        sock,
        slots,
        next_mid,
        stats: Stats::default(),
    };
    Ok(w.run())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.in_flight == 0 || args.threads == 0 {
        bail!("--in-flight and --threads must be at least 1");
    }
    let finite = args.duration.is_finite() && args.warmup.is_finite();
    if !finite || args.duration <= 0.0 || args.warmup < 0.0 {
        bail!("--duration must be > 0 and --warmup >= 0");
    }
    if args.mode == Mode::Raw && args.raw_size < 4 {
        bail!("--raw-size must be at least 4");
    }
    let target = args
        .target
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", args.target))?
        .next()
        .context("target resolved to no address")?;
    let template = match args.mode {
        Mode::Coap => coap_template(&args.path)?,
        Mode::Raw => vec![0x5a; args.raw_size],
    };
    let req_bytes = template.len();
    let t0 = Instant::now();
    let measure_start = t0 + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan {
        args: args.clone(),
        target,
        template,
        t0,
        measure_start,
        end,
    });

    // Watchdog: the run must never outlive warmup + duration + 2 s.
    let limit = end + Duration::from_secs(2);
    std::thread::spawn(move || {
        std::thread::sleep(limit.saturating_duration_since(Instant::now()));
        eprintln!("coap-load: watchdog fired, aborting");
        std::process::exit(3);
    });

    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let plan = Arc::clone(&plan);
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || worker(plan, t))
        })
        .collect::<std::io::Result<_>>()?;
    let mut st = Stats::default();
    for h in handles {
        let s = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        st.merge(s);
    }

    let l = st.lat.summary_us();
    let (mean_us, p50, p90, p99, p999, max_us) = (l.mean, l.p50, l.p90, l.p99, l.p999, l.max);
    let rps = st.completed as f64 / args.duration;
    let resp_bytes = if st.completed > 0 {
        st.resp_bytes as f64 / st.completed as f64
    } else {
        0.0
    };

    if args.json {
        println!(
            "{{\"label\":{},\"mode\":\"{}\",\"target\":{},\"path\":{},\"threads\":{},\"in_flight\":{},\
             \"warmup_s\":{},\"duration_s\":{},\"req_bytes\":{},\"resp_bytes\":{:.1},\"sent\":{},\
             \"completed\":{},\"rps\":{:.1},\"lat_mean_us\":{:.1},\"lat_p50_us\":{:.1},\
             \"lat_p90_us\":{:.1},\"lat_p99_us\":{:.1},\"lat_p999_us\":{:.1},\"lat_max_us\":{:.1},\
             \"errors\":{},\"retransmissions\":{},\"timeouts\":{},\"empty_acks\":{},\
             \"separate\":{},\"unexpected\":{},\"send_errors\":{}}}",
            json_str(&args.label),
            args.mode.name(),
            json_str(&args.target),
            json_str(&args.path),
            args.threads,
            args.in_flight,
            args.warmup,
            args.duration,
            req_bytes,
            resp_bytes,
            st.sent,
            st.completed,
            rps,
            mean_us,
            p50,
            p90,
            p99,
            p999,
            max_us,
            st.errors,
            st.retransmissions,
            st.timeouts,
            st.empty_acks,
            st.separate,
            st.unexpected,
            st.send_errors,
        );
    } else {
        let what = match args.mode {
            Mode::Coap => format!("coap GET /{}", args.path.trim_start_matches('/')),
            Mode::Raw => format!("raw udp {} B", args.raw_size),
        };
        println!(
            "{what} -> {}  threads={} in-flight={} warmup={}s duration={}s",
            args.target, args.threads, args.in_flight, args.warmup, args.duration
        );
        println!(
            "  completed {} ({rps:.0} req/s), request {req_bytes} B, response {resp_bytes:.1} B",
            st.completed
        );
        println!(
            "  latency us: mean {mean_us:.1}  p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  \
             p99.9 {p999:.1}  max {max_us:.1}"
        );
        println!(
            "  errors {}  retransmissions {}  timeouts {}  empty-acks {}  separate {}  \
             unexpected {}  send-errors {}",
            st.errors,
            st.retransmissions,
            st.timeouts,
            st.empty_acks,
            st.separate,
            st.unexpected,
            st.send_errors
        );
    }
    if st.completed == 0 {
        eprintln!("coap-load: no request completed");
        std::process::exit(1);
    }
    Ok(())
}
