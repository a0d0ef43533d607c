//! Pehra device firmware for QEMU's `mps2-an386` (Cortex-M4 + LAN9118 Ethernet).
//!
//! Boots, brings the LAN9118 up, gets an address by DHCPv4 (QEMU's user network gives
//! 10.0.2.15), then runs `pehra_device_fw`'s node loop (`Device::boot`, `run_cycle`,
//! `sleep`) on this board's parts (`board.rs`): each cycle it takes a reading from a
//! fake thermometer, checks in (`POST /dev/checkin`), publishes the buffered readings to
//! topic `readings` (`POST /dev/{name}/readings`), fetches its downlink records
//! (`downlink.{name}`, `POST /dev/{name}/downlink`) and hands them to the application
//! (printed; `set-interval N` obeyed), then sleeps on an embassy Timer until the next
//! alarm. One semihosting line per cycle.
//!
//! Every request is protected with OSCORE (RFC 8613) in the device's pairwise context
//! towards the broker it goes to (`pehra_device_fw::security`).
//!
//! Build-time settings (environment, defaults in `.cargo/config.toml`):
//! `PEHRA_DEVICE_CREDENTIALS` (the device's `NAME.cred` from `pehra keys`, compiled in by
//! build.rs through `../device_keys.rs`; without it the firmware is unprovisioned and
//! refused), `PEHRA_GATEWAY_IP` (10.0.2.2: the host's loopback seen from QEMU's user
//! network), `PEHRA_GATEWAY_PORT` (5683), `PEHRA_GATEWAY_BROKER` (1: the broker id
//! there), `PEHRA_DEVICE_NAME` (`qemu-1`; must agree with the credential file's name, which is used), `PEHRA_ALARM_S` (2),
//! `PEHRA_ACKS` (`all`; `1`/`leader`, `0`/`none`), `PEHRA_CYCLES` (0: forever; N: exit
//! QEMU through semihosting after N cycles, with success if every cycle checked in and
//! published).
#![no_std]
#![no_main]

extern crate alloc;

mod board;
mod lan9118;
mod time_driver;

use alloc::boxed::Box;
use alloc::string::String;
use core::future::Future;
use core::net::Ipv4Addr;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll};

use cortex_m::interrupt::InterruptNumber;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use embassy_executor::{Executor, Spawner};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, Stack, StackResources};
use embassy_time::Instant;
use embedded_alloc::LlffHeap as Heap;
use pehra_device_fw::hal::{EmbassyClock, NoRadio};
use pehra_device_fw::net::EmbassyUdp;
use pehra_device_fw::{Device, DeviceKeys, OwnFrame, Parts, Settings};
use pehra_shared::coap::Config;
use pehra_shared::pehra::addr::parse_ipv4;
use pehra_shared::pehra::device::DeviceConfig;
use pehra_shared::wire::{Acks, Directive};
use static_cell::{ConstStaticCell, StaticCell};

use lan9118::Lan9118;

/// The heap the CoAP engine, CBOR and the booted `Device` use. Its peak grows over the
/// first cycles (the duplicate cache fills with the NON answers of acks 0), so it is
/// measured over 30 (`PEHRA_CYCLES=30 run.sh`): 9.2 KiB with acks 0, 8.2 KiB with acks
/// all; with EDHOC 10.4 KiB (acks 0). About 1.1 KiB to spare either way (readings kept
/// while no gateway answers, up to 16, would take some: not measured).
const HEAP_SIZE: usize = if cfg!(feature = "edhoc") {
    11 * 1024 + 512
} else {
    10 * 1024 + 256
};

const GATEWAY_IP: &str = env!("PEHRA_GATEWAY_IP");
const GATEWAY_PORT: &str = env!("PEHRA_GATEWAY_PORT");
const CYCLES: &str = env!("PEHRA_CYCLES");
const GATEWAY_BROKER: &str = env!("PEHRA_GATEWAY_BROKER");
const NAME: &str = keys::NAME;

/// The device's identity (build.rs, from `PEHRA_DEVICE_CREDENTIALS`).
mod keys {
    include!(concat!(env!("OUT_DIR"), "/device_keys.rs"));
}
const ALARM_S: &str = env!("PEHRA_ALARM_S");
const ACKS: &str = env!("PEHRA_ACKS");

#[global_allocator]
static HEAP: PeakHeap = PeakHeap(Heap::empty());

/// The heap, keeping the most ever in use ([`HEAP_PEAK`]): what sizes `HEAP_SIZE`.
struct PeakHeap(Heap);

// SAFETY: every call goes to the inner allocator unchanged.
unsafe impl core::alloc::GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { self.0.alloc(layout) };
        HEAP_PEAK.fetch_max(self.0.used() as u32, Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

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

/// The most heap ever in use.
static HEAP_PEAK: AtomicU32 = AtomicU32::new(0);

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
    let mut v = [const {
        Vector {
            handler: unused_irq,
        }
    }; 32];
    v[lan9118::IRQ as usize] = Vector {
        handler: ethernet_irq,
    };
    v
};

/// A panic exits QEMU with failure and one fixed line: formatting its message would
/// link every panic site's message, Debug impls and file name (several KiB of flash).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    hprintln!("pehra-fw: panic");
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

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
        unsafe { HEAP.0.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
    }
    let cp = cortex_m::Peripherals::take().unwrap();
    time_driver::init(cp.SYST);
    hprintln!(
        "pehra-fw: boot (mps2-an386, Cortex-M4, SysTick {} Hz)",
        time_driver::TICK_HZ
    );

    let executor = EXECUTOR.init(Executor::new());
    executor.run(|spawner| spawner.spawn(main_task(spawner).unwrap()))
}

fn exit(ok: bool) -> ! {
    hprintln!(
        "pehra-fw: exit {} (heap peak {} B of {}, stack used {} B, eth irqs {}, systicks {})",
        Text(if ok { "ok" } else { "FAILED" }),
        HEAP_PEAK.load(Ordering::Relaxed),
        HEAP_SIZE,
        stack_used(),
        ETH_IRQS.load(Ordering::Relaxed),
        time_driver::TICKS_TAKEN.load(Ordering::Relaxed),
    );
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// Brings the LAN9118 up and starts embassy-net on it (its task spawned): the stack and
/// the boot seed. A function of its own (`#[inline(never)]`): its temporaries (the
/// driver and the stack being made) are not in the main task's poll frame, which stays
/// on the stack under every cycle.
#[inline(never)]
fn start_network(spawner: Spawner) -> (Stack<'static>, [u8; 32]) {
    // ConstStaticCell: the buffers are made in place (in .bss), never on the stack.
    static RX_BUF: ConstStaticCell<[u8; lan9118::MTU + 4]> =
        ConstStaticCell::new([0; lan9118::MTU + 4]);
    static TX_BUF: ConstStaticCell<[u8; lan9118::MTU]> = ConstStaticCell::new([0; lan9118::MTU]);
    let rx_buf = RX_BUF.take();
    let tx_buf = TX_BUF.take();
    let eth = match Lan9118::new(rx_buf, tx_buf) {
        Ok(eth) => eth,
        // Each error as its own line (`{:?}` would link the Debug machinery for it).
        Err(lan9118::InitError::NoChip(test)) => {
            hprintln!("pehra-fw: no LAN9118: BYTE_TEST read {:#010x}", test);
            exit(false)
        }
        Err(lan9118::InitError::ResetTimeout) => {
            hprintln!("pehra-fw: no LAN9118: it did not leave reset");
            exit(false)
        }
    };
    let mac = eth.mac();
    hprintln!(
        "pehra-fw: LAN9118 id {:#010x}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        eth.id_rev(),
        // As u32s: the only u8s printed in hex (u8's LowerHex would be linked for them).
        u32::from(mac[0]),
        u32::from(mac[1]),
        u32::from(mac[2]),
        u32::from(mac[3]),
        u32::from(mac[4]),
        u32::from(mac[5])
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

    // Two sockets: DHCP and the node loop's UDP socket.
    static RESOURCES: ConstStaticCell<StackResources<2>> =
        ConstStaticCell::new(StackResources::new());
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(eth, config, RESOURCES.take(), net_seed);
    spawner.spawn(net_task(runner).unwrap());
    (stack, seed)
}

#[embassy_executor::task]
async fn main_task(spawner: Spawner) {
    let (stack, seed) = start_network(spawner);
    hprintln!("pehra-fw: waiting for DHCP");
    stack.wait_config_up().await;
    if let Some(cfg) = stack.config_v4() {
        hprintln!(
            "pehra-fw: DHCP lease {} gateway {} dns {} (after {} ms)",
            Ip4(cfg.address.address().octets(), Some(cfg.address.prefix_len())),
            Ip4(cfg.gateway.map_or([0; 4], |g| g.octets()), None),
            Ip4(cfg.dns_servers.first().map_or([0; 4], |d| d.octets()), None),
            Instant::now().as_millis()
        );
    }

    let ok = node_loop(stack, seed).await;
    exit(ok)
}

/// A directive as a str and its time (plain strs and integers: `{:?}` costs flash).
fn directive_text(d: Option<Directive>) -> (&'static str, Option<u64>) {
    match d {
        Some(Directive::SleepUntil { at_ms }) => ("SleepUntil at_ms ", Some(at_ms)),
        Some(Directive::StayAwake) => ("StayAwake", None),
        Some(Directive::WakeNow) => ("WakeNow", None),
        Some(Directive::Rejoin) => ("Rejoin", None),
        None => ("none (no gateway answered)", None),
    }
}

/// An integer, or nothing when `None`.
struct U64OrNothing(Option<u64>);

/// A str printed as it is (`str`'s `Display` pads: `Formatter::pad`, 0.6 KiB, for
/// prints that never ask for a width).
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl core::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// An IPv4 address (and prefix length) as its octets (`Ipv4Addr`'s `Display` and
/// smoltcp's `Ipv4Cidr`'s link a buffer and `Formatter::pad` for padding never asked for).
struct Ip4([u8; 4], Option<u8>);

impl core::fmt::Display for Ip4 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // As u32s: u8's Display would be linked for these alone.
        let [a, b, c, d] = self.0.map(u32::from);
        write!(f, "{}.{}.{}.{}", a, b, c, d)?;
        match self.1 {
            Some(len) => write!(f, "/{}", u32::from(len)),
            None => Ok(()),
        }
    }
}

impl core::fmt::Display for U64OrNothing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => core::fmt::Display::fmt(&n, f),
            None => Ok(()),
        }
    }
}

fn acks_setting() -> Acks {
    match ACKS {
        "0" | "none" => Acks::None,
        "1" | "leader" => Acks::Leader,
        _ => Acks::All,
    }
}

/// The device on this board's parts.
type NodeDevice = Device<
    EmbassyUdp<'static, board::HostAlias>,
    EmbassyClock,
    board::Thermometer,
    pehra_device_fw::hal::RamStorage,
    NoRadio,
    board::PrintingApp,
>;

/// A future whose output is moved to the heap in its own (`#[inline(never)]`) poll, so
/// the caller's frame holds a pointer, not the value.
struct BoxedOutput<F>(F);

impl<F: Future + Unpin> Future for BoxedOutput<F> {
    type Output = Box<F::Output>;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Box::new)
    }
}

/// The gateway's address, port, the broker there and the alarm interval, ms (build-time
/// settings).
fn gateway_settings() -> (Ipv4Addr, u16, u32, u64) {
    let ip = parse_ipv4(GATEWAY_IP).unwrap_or(Ipv4Addr::new(10, 0, 2, 2));
    let port: u16 = GATEWAY_PORT.parse().unwrap_or(5683);
    let broker: u32 = GATEWAY_BROKER.parse().unwrap_or(1);
    let alarm_ms = ALARM_S.parse::<u64>().unwrap_or(2).max(1) * 1000;
    (ip, port, broker, alarm_ms)
}

/// The device's boot (`Device::boot_secured` on this board's parts), boxed here: the
/// future (2.7 KiB) and its arguments are made in this function's frame, gone before
/// it is polled, not in the node loop's frame, which stays on the stack under every
/// cycle (the stack's high-water mark was the node loop's 4.7 KiB frame plus the boot).
#[inline(never)]
fn make_boot(stack: Stack<'static>, seed: [u8; 32]) -> Pin<Box<impl Future<Output = NodeDevice>>> {
    let (ip, port, broker, alarm_ms) = gateway_settings();
    let gateway = board::to_cluster(ip, port);

    static RX_META: ConstStaticCell<[PacketMetadata; 4]> =
        ConstStaticCell::new([PacketMetadata::EMPTY; 4]);
    static TX_META: ConstStaticCell<[PacketMetadata; 4]> =
        ConstStaticCell::new([PacketMetadata::EMPTY; 4]);
    static SOCKET_RX: ConstStaticCell<[u8; 1024]> = ConstStaticCell::new([0; 1024]);
    static SOCKET_TX: ConstStaticCell<[u8; 1024]> = ConstStaticCell::new([0; 1024]);
    let mut socket = UdpSocket::new(
        stack,
        RX_META.take(),
        SOCKET_RX.take(),
        TX_META.take(),
        SOCKET_TX.take(),
    );
    let local_port = 49152 + (u16::from_le_bytes([seed[8], seed[9]]) % 16384);
    socket.bind(local_port).unwrap();

    let coap = Config {
        // The last 8 separate answers kept for duplicate detection (16 took ~2 KiB of
        // heap once full, with acks 0); a device makes one request at a time.
        dedup_capacity: 8,
        max_body_size: 1024,
        block_size: 512,
        max_payload: 512,
        ..Config::default()
    };
    let settings = Settings {
        topic: String::from("readings"),
        acks: acks_setting(),
        max_batch: 16,
        downlink_max_bytes: 512,
        alarm_interval_ms: alarm_ms,
    };
    let parts = Parts {
        udp: EmbassyUdp::new(socket, EmbassyClock::default(), board::HostAlias),
        clock: EmbassyClock::default(),
        sensor: board::Thermometer { name: NAME },
        storage: pehra_device_fw::hal::RamStorage,
        radio: NoRadio,
        app: board::PrintingApp,
    };
    let config = DeviceConfig::new(NAME, alloc::vec![gateway], alarm_ms);
    // No TRNG under QEMU: the boot seed (MAC and SysTick phase), expanded. Only the
    // boot draws from it: moved into its (boxed) future, not kept in a static.
    let rng = pehra_device_fw::SeededRng::new(seed);
    let brokers = alloc::vec![(gateway, broker)];
    Box::pin(Device::boot_secured(
        config,
        settings,
        coap,
        parts,
        rng,
        identity(),
        brokers,
    ))
}

/// The device's identity from its credential file (build.rs): an EDHOC key pair (with
/// feature `edhoc`), or a pre-shared identity key.
fn identity() -> pehra_device_fw::DeviceIdentity {
    #[cfg(feature = "edhoc")]
    if let Some((private, ccs)) = keys::EDHOC_KEY {
        let key = pehra_shared::edhoc::StaticKey::from_parts(private, ccs)
            .expect("the credential file's EDHOC private key and CCS are one key pair");
        let servers = keys::EDHOC_SERVERS
            .iter()
            .map(|(kid, ccs)| (kid.to_vec(), ccs.to_vec()))
            .collect();
        return pehra_device_fw::EdhocKeys { key, servers }.into();
    }
    DeviceKeys {
        kid: keys::KID.to_vec(),
        identity_key: keys::KEY,
    }
    .into()
}

/// The node loop (`pehra_device_fw::Device`): boot it on this board's parts, then
/// cycle (check in, publish, fetch downlink, obey) and sleep until the next alarm.
/// Returns after `PEHRA_CYCLES` cycles (never if 0), with whether every cycle checked in
/// and published.
async fn node_loop(stack: Stack<'static>, seed: [u8; 32]) -> bool {
    let cycles: u32 = CYCLES.parse().unwrap_or(0);
    // The device on the heap (1.4 KiB): out of this frame and this task's state.
    let mut device = BoxedOutput(make_boot(stack, seed)).await;
    let (ip, port, broker, alarm_ms) = gateway_settings();
    hprintln!(
        "pehra-fw: node {} via broker {} at {}:{} (OSCORE{}{}), alarm {} s, readings to topic readings (acks {})",
        Text(NAME),
        broker,
        Ip4(ip.octets(), None),
        // As a u32: the only u16 printed (its Display would be linked for it).
        u32::from(port),
        Text(if keys::EDHOC_KEY.is_some() { " from EDHOC" } else { "" }),
        Text(if keys::PROVISIONED { "" } else { ", UNPROVISIONED: no credentials compiled in" }),
        alarm_ms / 1000,
        Text(ACKS)
    );

    let mut good = 0u32;
    let mut cycle = 0u32;
    loop {
        cycle += 1;
        let report = OwnFrame(device.run_cycle()).await;
        let stats = device.stats();
        let (directive, at_ms) = directive_text(report.directive);
        let now = Instant::now().as_millis();
        hprintln!(
            "pehra-fw: cycle {}: directive {}{}, readings published {} (+{}), downlink records {} (+{}), next alarm at {} ms (in {} ms{})",
            cycle,
            Text(directive),
            U64OrNothing(at_ms),
            stats.readings_published,
            report.published,
            stats.downlink_records,
            report.downlink,
            report.wake_at_ms,
            report.wake_at_ms.saturating_sub(now),
            Text(if report.deep_sleep { ", deep sleep" } else { ", awake" })
        );
        if report.directive.is_some() && report.published > 0 {
            good += 1;
        }
        if cycles != 0 && cycle >= cycles {
            hprintln!(
                "pehra-fw: {} cycles, {} checked in and published; readings taken {}, published {}, failed publishes {}, timeouts {}, bad responses {}, EDHOC handshakes {}",
                cycle,
                good,
                stats.readings_taken,
                stats.readings_published,
                stats.publish_failures,
                stats.timeouts,
                stats.bad_responses,
                stats.handshakes
            );
            return good == cycles;
        }
        OwnFrame(device.sleep(&report)).await;
        hprintln!("pehra-fw: woke at {} ms", Instant::now().as_millis());
    }
}
