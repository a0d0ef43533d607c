//! Pehra device firmware for QEMU's `mps2-an386` (Cortex-M4 + LAN9118 Ethernet).
//!
//! Boots, brings the LAN9118 up, gets an address by DHCPv4 (QEMU's user network gives
//! 10.0.2.15), then checks in with the gateway every few seconds: a confirmable CoAP
//! `POST /dev/checkin` carrying a CBOR `CheckIn`, made and read by `pehra_shared`'s
//! sans-IO CoAP engine and wire types, and prints the `CheckInReply`'s directive over
//! semihosting.
//!
//! Build-time settings (environment, defaults in `.cargo/config.toml`):
//! `PEHRA_GATEWAY_IP` (10.0.2.2: the host's loopback seen from QEMU's user network),
//! `PEHRA_GATEWAY_PORT` (5683), `PEHRA_CYCLES` (0: forever; N: exit QEMU through
//! semihosting after N cycles, with success if every cycle got a reply).
#![no_std]
#![no_main]

extern crate alloc;

mod lan9118;
mod time_driver;

use alloc::string::String;
use core::net::Ipv4Addr;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::interrupt::InterruptNumber;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use embassy_executor::{Executor, Spawner};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Runner, Stack, StackResources};
use embassy_time::{with_deadline, Duration, Instant, Timer};
use embedded_alloc::LlffHeap as Heap;
use panic_semihosting as _;
use pehra_shared::coap::{Config, Engine, Event, ExchangeError, Request, Response};
use pehra_shared::wire::{self, CheckIn, CheckInReply, Directive, NodeHealth, NodeRole};
use static_cell::StaticCell;

use lan9118::Lan9118;

/// The node's name in its check-ins.
const NODE: &str = "qemu-an386-0001";
/// Seconds between check-ins.
const PERIOD: Duration = Duration::from_secs(3);
/// The heap the CoAP engine and CBOR use.
const HEAP_SIZE: usize = 16 * 1024;

const GATEWAY_IP: &str = env!("PEHRA_GATEWAY_IP");
const GATEWAY_PORT: &str = env!("PEHRA_GATEWAY_PORT");
const CYCLES: &str = env!("PEHRA_CYCLES");

#[global_allocator]
static HEAP: Heap = Heap::empty();

// ---------------------------------------------------------------------------------------
// Interrupts: the AN386 has 32 external lines; the LAN9118 is on 13.

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: the numbers are valid external interrupt lines of the AN386.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// The most heap seen in use (sampled around each exchange).
static HEAP_PEAK: AtomicU32 = AtomicU32::new(0);

fn sample_heap() {
    HEAP_PEAK.fetch_max(HEAP.used() as u32, Ordering::Relaxed);
}

static ETH_IRQS: AtomicU32 = AtomicU32::new(0);

extern "C" fn ethernet_irq() {
    ETH_IRQS.fetch_add(1, Ordering::Relaxed);
    lan9118::on_interrupt();
}

extern "C" fn unused_irq() {}

#[doc(hidden)]
pub union Vector {
    handler: unsafe extern "C" fn(),
    _reserved: usize,
}

#[doc(hidden)]
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; 32] = {
    let mut v = [const { Vector { handler: unused_irq } }; 32];
    v[lan9118::IRQ as usize] = Vector {
        handler: ethernet_irq,
    };
    v
};

#[exception]
fn SysTick() {
    time_driver::on_tick();
}

// ---------------------------------------------------------------------------------------
// Stack high-water mark: paint the free RAM below the stack at boot, look at the end.

const PAINT: u32 = 0x5EA5_5EA5;

unsafe extern "C" {
    static mut __ebss: u32;
    static _stack_start: u32;
}

fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = &raw mut __ebss as usize;
    while p + 64 < sp {
        // SAFETY: between the end of .bss and (below) the live stack: free RAM.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack ever used, as far as painting tells.
fn stack_used() -> usize {
    let top = &raw const _stack_start as usize;
    let mut p = &raw mut __ebss as usize;
    // SAFETY: reads of RAM between .bss and the stack top.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}

// ---------------------------------------------------------------------------------------

static EXECUTOR: StaticCell<Executor> = StaticCell::new();

#[entry]
fn main() -> ! {
    paint_stack();
    {
        use core::mem::MaybeUninit;
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; the region is ours alone.
        unsafe { HEAP.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
    }
    let cp = cortex_m::Peripherals::take().unwrap();
    time_driver::init(cp.SYST);
    hprintln!("pehra-fw: boot (mps2-an386, Cortex-M4, SysTick {} Hz)", time_driver::TICK_HZ);

    let executor = EXECUTOR.init(Executor::new());
    executor.run(|spawner| spawner.spawn(main_task(spawner).unwrap()))
}

fn exit(ok: bool) -> ! {
    hprintln!(
        "pehra-fw: exit {} (heap peak {} B of {}, stack used {} B, eth irqs {}, systicks {})",
        if ok { "ok" } else { "FAILED" },
        HEAP_PEAK.load(Ordering::Relaxed),
        HEAP_SIZE,
        stack_used(),
        ETH_IRQS.load(Ordering::Relaxed),
        time_driver::TICKS_TAKEN.load(Ordering::Relaxed),
    );
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn main_task(spawner: Spawner) {
    static RX_BUF: StaticCell<[u8; lan9118::MTU + 4]> = StaticCell::new();
    static TX_BUF: StaticCell<[u8; lan9118::MTU]> = StaticCell::new();
    let rx_buf = RX_BUF.init([0; lan9118::MTU + 4]);
    let tx_buf = TX_BUF.init([0; lan9118::MTU]);
    let eth = match Lan9118::new(rx_buf, tx_buf) {
        Ok(eth) => eth,
        Err(e) => {
            hprintln!("pehra-fw: no LAN9118: {:?}", e);
            exit(false)
        }
    };
    let mac = eth.mac();
    hprintln!(
        "pehra-fw: LAN9118 id {:#010x}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        eth.id_rev(),
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    // SAFETY: the handler is in the vector table and the chip is configured.
    unsafe { cortex_m::peripheral::NVIC::unmask(Irq(lan9118::IRQ)) };

    // No hardware RNG: seed from the MAC and the SysTick phase (good enough for message
    // IDs, tokens and ephemeral ports under QEMU; a real board uses its TRNG).
    let mut seed = [0u8; 32];
    let cvr = cortex_m::peripheral::SYST::get_current();
    for (i, b) in seed.iter_mut().enumerate() {
        *b = mac[i % 6] ^ (cvr >> ((i % 4) * 8)) as u8 ^ (i as u8).wrapping_mul(0x9d);
    }
    let net_seed = u64::from_le_bytes(seed[..8].try_into().unwrap()) ^ Instant::now().as_ticks();

    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(eth, config, RESOURCES.init(StackResources::new()), net_seed);
    spawner.spawn(net_task(runner).unwrap());

    hprintln!("pehra-fw: waiting for DHCP");
    stack.wait_config_up().await;
    if let Some(cfg) = stack.config_v4() {
        hprintln!(
            "pehra-fw: DHCP lease {} gateway {} dns {} (after {} ms)",
            cfg.address,
            Ipv4Addr::from(cfg.gateway.map_or([0; 4], |g| g.octets())),
            Ipv4Addr::from(cfg.dns_servers.first().map_or([0; 4], |d| d.octets())),
            Instant::now().as_millis()
        );
    }

    let ok = checkin_loop(stack, seed).await;
    exit(ok)
}

/// An integer, or nothing when `None`.
struct U64OrNothing(Option<u64>);

impl core::fmt::Display for U64OrNothing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => core::fmt::Display::fmt(&n, f),
            None => Ok(()),
        }
    }
}

/// The gateway's address as the engine keys it.
type Peer = ([u8; 4], u16);

fn now_engine() -> pehra_shared::Instant {
    pehra_shared::Instant::from_micros(Instant::now().as_micros())
}

/// Checks in every [`PERIOD`]; returns after `PEHRA_CYCLES` cycles (never if 0), with
/// whether every one of them got a reply.
async fn checkin_loop(stack: Stack<'static>, seed: [u8; 32]) -> bool {
    let ip: Ipv4Addr = GATEWAY_IP.parse().unwrap_or(Ipv4Addr::new(10, 0, 2, 2));
    let port: u16 = GATEWAY_PORT.parse().unwrap_or(5683);
    let cycles: u32 = CYCLES.parse().unwrap_or(0);
    let gateway = IpEndpoint::new(IpAddress::Ipv4(ip), port);
    let peer: Peer = (ip.octets(), port);

    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 1024];
    let mut tx_buf = [0u8; 1024];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    let local_port = 49152 + (u16::from_le_bytes([seed[8], seed[9]]) % 16384);
    socket.bind(local_port).unwrap();

    let config = Config {
        dedup_capacity: 16,
        max_body_size: 1024,
        block_size: 512,
        max_payload: 512,
        ..Config::default()
    };
    let mut engine: Engine<Peer> = Engine::new(config, seed);
    let mut replies = 0u32;
    let mut failures = 0u32;
    let mut rtt_ms = 0u32;

    hprintln!("pehra-fw: checking in with {}:{} every {} s", ip, port, PERIOD.as_secs());
    let mut cycle = 0u32;
    loop {
        cycle += 1;
        let started = Instant::now();
        let checkin = CheckIn {
            node: String::from(NODE),
            role: NodeRole::Dormant,
            mains_powered: false,
            next_alarm_ms: None,
            traffic_waiting: false,
            health: Some(NodeHealth {
                cpu_permille: 10,
                memory_permille: (HEAP.used() * 1000 / HEAP_SIZE) as u16,
                disk_io_permille: 0,
                rtt_ms,
                battery_permille: Some(1000u16.saturating_sub(cycle as u16)),
                failures,
            }),
        };
        let body = match wire::encode(&checkin) {
            Ok(b) => b,
            Err(e) => {
                hprintln!("pehra-fw: encode: {}", e);
                return false;
            }
        };
        let request = Request::post("/dev/checkin")
            .with_content_format(wire::CONTENT_FORMAT_CBOR)
            .with_payload(body);
        match exchange(&mut engine, &mut socket, gateway, peer, request).await {
            Ok(response) => {
                rtt_ms = (Instant::now() - started).as_millis() as u32;
                if response.code().is_success() {
                    match wire::decode::<CheckInReply>(response.payload()) {
                        Ok(reply) => {
                            replies += 1;
                            // Plain strs and integers: no `{:?}` (its str escaping and
                            // unicode tables cost flash).
                            let (directive, at_ms) = match reply.directive {
                                Directive::SleepUntil { at_ms } => ("SleepUntil at_ms ", at_ms),
                                Directive::StayAwake => ("StayAwake", 0),
                                Directive::WakeNow => ("WakeNow", 0),
                                Directive::Rejoin => ("Rejoin", 0),
                            };
                            let at_ms = Some(at_ms).filter(|_| directive.ends_with(' '));
                            hprintln!(
                                "pehra-fw: reply #{} {} in {} ms: directive {}{}, pending {}, pehredar {}",
                                replies,
                                response.code(),
                                rtt_ms,
                                directive,
                                U64OrNothing(at_ms),
                                reply.pending,
                                reply.pehredar.as_deref().unwrap_or("-")
                            );
                        }
                        Err(e) => {
                            failures += 1;
                            hprintln!("pehra-fw: cycle {}: bad CheckInReply: {}", cycle, e);
                        }
                    }
                } else {
                    failures += 1;
                    hprintln!(
                        "pehra-fw: cycle {}: gateway answered {} {}",
                        cycle,
                        response.code(),
                        core::str::from_utf8(response.payload()).unwrap_or("")
                    );
                }
            }
            Err(e) => {
                failures += 1;
                hprintln!("pehra-fw: cycle {}: no reply: {}", cycle, e);
            }
        }
        if cycles != 0 && cycle >= cycles {
            hprintln!("pehra-fw: {} cycles, {} replies, {} failures", cycle, replies, failures);
            return failures == 0 && replies == cycles;
        }
        Timer::at(started + PERIOD).await;
    }
}

/// Runs one request through the engine to its end: sends (and retransmits) what it says,
/// feeds it what arrives, and returns the response or why there was none.
async fn exchange(
    engine: &mut Engine<Peer>,
    socket: &mut UdpSocket<'_>,
    gateway: IpEndpoint,
    peer: Peer,
    request: Request,
) -> Result<Response, ExchangeError> {
    let id = engine.request(now_engine(), peer, request);
    sample_heap();
    let mut buf = [0u8; 1024];
    loop {
        while let Some(t) = engine.poll_transmit() {
            let to = if t.peer == peer {
                gateway
            } else {
                IpEndpoint::new(IpAddress::Ipv4(Ipv4Addr::from(t.peer.0)), t.peer.1)
            };
            if let Err(e) = socket.send_to(&t.bytes, to).await {
                hprintln!("pehra-fw: send: {:?}", e);
            }
        }
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Response { id: rid, response } if rid == id => return Ok(response),
                Event::Failed { id: rid, error } if rid == id => return Err(error),
                // The engine is built without its server half: a request to the device
                // is answered with Reset by the engine itself and never reaches us.
                _ => {}
            }
        }
        let recv = socket.recv_from(&mut buf);
        let received = match engine.poll_timeout() {
            Some(at) => with_deadline(Instant::from_micros(at.as_micros()), recv).await.ok(),
            None => Some(recv.await),
        };
        match received {
            Some(Ok((n, meta))) => {
                let from: Peer = match meta.endpoint.addr {
                    IpAddress::Ipv4(a) => (a.octets(), meta.endpoint.port),
                };
                engine.handle_datagram(now_engine(), from, &buf[..n]);
                sample_heap();
            }
            Some(Err(e)) => hprintln!("pehra-fw: recv: {:?}", e),
            None => engine.handle_timeout(now_engine()),
        }
    }
}
