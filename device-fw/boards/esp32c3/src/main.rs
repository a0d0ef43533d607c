//! Pehra device firmware for the ESP32-C3 (RISC-V `riscv32imc`, Wi-Fi).
//!
//! Boots (esp-hal, esp-rtos running the embassy executor and time driver), joins the
//! Wi-Fi network, gets an address by DHCPv4 (embassy-net), and runs `pehra-device-fw`'s
//! node loop: at each alarm take a reading (the chip's temperature sensor), check in,
//! publish, collect downlink records, persist in RTC fast memory, sleep.
//!
//! Sleep between alarms, chosen per sleep by the energy model
//! (`pehra_device_fw::energy::Board::choose_wake` on `ESP32_C3`, docs/devices.md "Energy
//! model"): a sleep the node loop marks deep and long enough that a deep sleep and a
//! reconnect cost less than staying associated (about 1.5 s with the reconnect cache,
//! 9.5 s without; `PEHRA_DEEP_SLEEP_MIN_S` overrides the model with a fixed minimum, 0:
//! never) is an RTC-timer **deep sleep** (the chip resets on wake and boots again; what
//! survives is `Persisted` in RTC fast memory: the schedule, the clock offset, the
//! downlink offset and the readings not yet acknowledged, measured on a clock that runs
//! on through the sleep, [`board::rtc_clock`]); a shorter one, or `stay_awake`, is an
//! embassy timer wait with the Wi-Fi modem in power-save (`PowerSaveMode::Minimum`: the
//! station wakes for each DTIM beacon) and the CPU in WFI. esp-rtos' automatic light
//! sleep is not used: esp-radio holds a wake lock while Wi-Fi is initialized, so it
//! would never engage.
//!
//! The wake's reconnect: after a full connect (scan, association, DHCP) the board keeps
//! the access point's BSSID and channel and the lease in RTC fast memory
//! ([`board::WifiCache`]); a wake within `PEHRA_LEASE_CACHE_S` (3600) of the lease goes
//! straight to that BSSID on its channel with the lease as a static address (no scan, no
//! DHCP). If the link is not up within 3 s the cache is dropped and the chip resets into
//! a full connect.
//!
//! OSCORE: every request is protected in the device's pairwise context towards the broker
//! it goes to (credentials compiled in from `PEHRA_DEVICE_CREDENTIALS`, see the README).
//! RTC fast memory keeps the ID Context and a claim on sequence numbers across the deep
//! sleep (and any other reset that keeps it), so a wake goes on in the same contexts: no
//! Echo round trip, and no nonce is used twice (the claim is stored before a number at
//! or past it could be used, `pehra_device_fw::security`). A power-on reset loses it:
//! a new random ID Context, new contexts.
//!
//! Build-time settings (environment, read with `env!`/`option_env!`; never committed):
//! `PEHRA_WIFI_SSID`, `PEHRA_WIFI_PASSWORD` (feature `wifi`), `PEHRA_DEVICE_CREDENTIALS`
//! (the device's `NAME.cred` from `pehra keys`), `PEHRA_GATEWAY` (`[N@]ip:port`,
//! comma-separated for several; `N` the broker id there, else its position from 1),
//! optional `PEHRA_NODE` (default: the credential file's name, else `esp32c3-` + the
//! last 3 MAC bytes), `PEHRA_INTERVAL_S` (alarm interval, 60),
//! `PEHRA_DEEP_SLEEP_MIN_S` (30; 0: never deep sleep), `PEHRA_TOPIC` (`readings`).
#![no_std]
#![no_main]

extern crate alloc;

mod board;

/// The device's identity (build.rs, from `PEHRA_DEVICE_CREDENTIALS`).
mod keys {
    include!(concat!(env!("OUT_DIR"), "/device_keys.rs"));
}

use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use embassy_executor::Spawner;
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rtc_cntl::sleep::{LowPower, RtcSleepConfig};
use esp_hal::timer::timg::TimerGroup;
use esp_hal::tsens::TemperatureSensor;
use esp_println::println;
use pehra_device_fw::energy::{self, WakeMode};
use pehra_device_fw::hal::Clock as _;
use pehra_device_fw::{Device, DeviceKeys, OwnFrame, Parts, SetInterval, Settings};
use pehra_shared::coap::Config as CoapConfig;
use pehra_shared::pehra::addr::parse_socket_addr;
use pehra_shared::pehra::device::DeviceConfig;
use pehra_shared::wire::Acks;

use board::{ChipTemperature, HwRng, RtcStorage, WifiCache};

esp_bootloader_esp_idf::esp_app_desc!();

const GATEWAY: &str = env!("PEHRA_GATEWAY");
const NODE: Option<&str> = option_env!("PEHRA_NODE");

const fn parse_u64(s: Option<&str>, default: u64) -> u64 {
    let Some(s) = s else { return default };
    let b = s.as_bytes();
    if b.is_empty() {
        return default;
    }
    let mut i = 0;
    let mut n = 0u64;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "not a number");
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}

const INTERVAL_MS: u64 = parse_u64(option_env!("PEHRA_INTERVAL_S"), 60) * 1000;
/// A fixed minimum deep sleep instead of the model's choice (`PEHRA_DEEP_SLEEP_MIN_S`,
/// checked at build time), ms; `None`: the model chooses.
const DEEP_SLEEP_MIN_MS: Option<u64> = match option_env!("PEHRA_DEEP_SLEEP_MIN_S") {
    Some(s) if !s.is_empty() => Some(parse_u64(Some(s), 30) * 1000),
    _ => None,
};
/// How long a cached lease is used as a static address, ms.
const LEASE_CACHE_MS: u64 = parse_u64(
    option_env!("PEHRA_LEASE_CACHE_S"),
    energy::LEASE_CACHE_MS / 1000,
) * 1000;

/// How to spend a sleep of `sleep_ms`: the model's cheapest (a reconnect from the cache
/// if one is kept), or deep sleep past the fixed minimum if one is set.
fn wake_mode(sleep_ms: u64, cache: bool) -> WakeMode {
    match DEEP_SLEEP_MIN_MS {
        Some(min_ms) => match (min_ms != 0 && sleep_ms >= min_ms, cache) {
            (false, _) => WakeMode::StayAssociated,
            (true, true) => WakeMode::DeepSleepCached,
            (true, false) => WakeMode::DeepSleepFull,
        },
        None => energy::ESP32_C3.choose_wake(sleep_ms, &energy::TYPICAL_CYCLE, cache),
    }
}

/// Heap in the RAM the ESP-IDF bootloader used (reclaimed after boot) plus some of the
/// main RAM: Wi-Fi buffers, the CoAP engine, CBOR.
const HEAP_RECLAIMED: usize = 64 * 1024;
const HEAP_MAIN: usize = 32 * 1024;

/// The configured gateways, each with the broker id serving there.
fn gateways() -> Vec<(SocketAddr, u32)> {
    let gws: Vec<(SocketAddr, u32)> = GATEWAY
        .split(',')
        .enumerate()
        .filter_map(|(i, s)| {
            let (broker, addr) = pehra_device_fw::split_broker(s.trim());
            Some((parse_socket_addr(addr)?, broker.unwrap_or(i as u32 + 1)))
        })
        .collect();
    if gws.is_empty() {
        println!("pehra-fw: PEHRA_GATEWAY {:?} has no ip:port", GATEWAY);
    }
    gws
}

fn node_name() -> String {
    if keys::PROVISIONED {
        return keys::NAME.into();
    }
    if let Some(n) = NODE.filter(|n| !n.is_empty()) {
        return n.into();
    }
    let mac = esp_hal::efuse::base_mac_address();
    let m = mac.as_bytes();
    alloc::format!("esp32c3-{:02x}{:02x}{:02x}", m[3], m[4], m[5])
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    let config = esp_hal::Config::default().with_cpu_clock(CpuClock::max());
    let peripherals = esp_hal::init(config);

    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: HEAP_RECLAIMED);
    esp_alloc::heap_allocator!(size: HEAP_MAIN);

    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    let clock = board::rtc_clock(&esp_hal::rtc_cntl::Rtc::new(peripherals.RTC_TIMER));
    let wake = esp_hal::system::wakeup_cause();
    println!("pehra-fw: boot (esp32c3), wakeup cause {:?}", wake);

    let name = node_name();
    let gateways = gateways();
    println!(
        "pehra-fw: node {} gateways {:?} alarm {} s",
        name,
        gateways,
        INTERVAL_MS / 1000
    );

    let mut rng = HwRng(esp_hal::rng::Rng::new());

    // A reconnect from the cache if one is kept and the model picks it for the interval.
    let cache = WifiCache::load(clock.now_ms(), LEASE_CACHE_MS)
        .filter(|_| wake_mode(INTERVAL_MS, true) == WakeMode::DeepSleepCached);
    #[cfg(feature = "wifi")]
    let udp = net::up(spawner, peripherals.WIFI, &mut rng, clock, cache).await;
    #[cfg(not(feature = "wifi"))]
    let udp = {
        let _ = (spawner, cache);
        println!("pehra-fw: built without Wi-Fi (feature `wifi` off): no gateway will answer");
        board::NoNet(clock)
    };

    let tsens =
        TemperatureSensor::new(peripherals.TSENS, Default::default()).expect("temperature sensor");
    let settings = Settings {
        topic: option_env!("PEHRA_TOPIC").unwrap_or("readings").into(),
        acks: Acks::Leader,
        max_batch: 16,
        downlink_max_bytes: 512,
        alarm_interval_ms: INTERVAL_MS,
    };
    let coap = CoapConfig {
        dedup_capacity: 16,
        max_body_size: 1024,
        block_size: 512,
        max_payload: 512,
        ..CoapConfig::default()
    };
    let parts = Parts {
        udp,
        clock,
        sensor: ChipTemperature(tsens),
        storage: RtcStorage::default(),
        radio: pehra_device_fw::hal::NoRadio,
        app: SetInterval,
    };
    if !keys::PROVISIONED {
        println!("pehra-fw: unprovisioned (no PEHRA_DEVICE_CREDENTIALS at build): every broker refuses it");
    }
    let addrs = gateways.iter().map(|&(a, _)| a).collect();
    let device_keys = DeviceKeys {
        kid: keys::KID.to_vec(),
        identity_key: keys::KEY,
    };
    let mut device = OwnFrame(Device::boot_secured(
        DeviceConfig::new(&name, addrs, INTERVAL_MS),
        settings,
        coap,
        parts,
        &mut rng,
        device_keys,
        gateways,
    ))
    .await;
    let p = device.persisted();
    println!(
        "pehra-fw: storage: incarnation {:08x}, {} readings so far, {} waiting, downlink from {:?}, alarm {} s",
        p.incarnation,
        p.readings_seq,
        device.buffered().0,
        p.node.downlink_from,
        device.settings().alarm_interval_ms / 1000
    );

    let mut lpwr = LowPower::new(peripherals.LPWR);
    loop {
        let report = OwnFrame(device.run_cycle()).await;
        let now = device.clock().now_ms();
        let stats = device.stats();
        println!(
            "pehra-fw: cycle {}: gateway {:?}, published {}, downlink {}, wake in {} ms ({})",
            stats.cycles,
            report.gateway,
            report.published,
            report.downlink,
            report.wake_at_ms.saturating_sub(now),
            if report.deep_sleep { "sleep" } else { "awake" }
        );
        let sleep_ms = report.wake_at_ms.saturating_sub(now);
        // Deep sleep only if the model (or the fixed minimum) says so for this sleep and
        // the slot in RTC memory kept every waiting reading (it holds about 4 KiB; the
        // buffer at most 64 readings).
        let cached = WifiCache::load(now, LEASE_CACHE_MS).is_some();
        let mode = wake_mode(sleep_ms, cached);
        if report.deep_sleep
            && mode != WakeMode::StayAssociated
            && device.storage().kept_everything()
        {
            // `run_cycle` persisted the state in RTC fast memory.
            println!("pehra-fw: deep sleep {} ms ({:?})", sleep_ms, mode);
            let deadline =
                esp_hal::time::Instant::now() + esp_hal::time::Duration::from_millis(sleep_ms);
            lpwr.set_wakeup_deadline(deadline);
            lpwr.sleep_deep(RtcSleepConfig::deep());
        }
        OwnFrame(device.sleep(&report)).await;
    }
}

#[cfg(feature = "wifi")]
mod net {
    use core::net::Ipv4Addr;
    use embassy_executor::Spawner;
    use embassy_net::udp::{PacketMetadata, UdpSocket};
    use embassy_net::{Ipv4Cidr, Runner, StackResources, StaticConfigV4};
    use embassy_time::{with_timeout, Duration, Timer};
    use esp_println::println;
    use esp_radio::wifi::sta::StationConfig;
    use esp_radio::wifi::{
        AuthenticationMethodConfig, Config, ControllerConfig, Interface, PowerSaveMode,
        WifiController,
    };
    use pehra_device_fw::hal::{Clock as _, Rng as _};
    use static_cell::StaticCell;

    use crate::board::{HwRng, WifiCache};
    use pehra_device_fw::hal::EmbassyClock;
    use pehra_device_fw::net::{Direct, EmbassyUdp};

    const SSID: &str = env!("PEHRA_WIFI_SSID");
    const PASSWORD: &str = env!("PEHRA_WIFI_PASSWORD");

    /// The BSSID and channel of the last connect (`connection_task`).
    static CONNECTED: critical_section::Mutex<core::cell::Cell<Option<([u8; 6], u8)>>> =
        critical_section::Mutex::new(core::cell::Cell::new(None));

    /// Starts Wi-Fi and the network stack and returns a bound UDP socket: with `cache`,
    /// straight to its BSSID on its channel with its lease as a static address (a reset
    /// into a full connect if the link is not up in 3 s); else a scan and DHCP, whose
    /// result is cached for the next wake.
    pub async fn up(
        spawner: Spawner,
        wifi: esp_hal::peripherals::WIFI<'static>,
        rng: &mut HwRng,
        clock: EmbassyClock,
        cache: Option<WifiCache>,
    ) -> EmbassyUdp<'static> {
        let auth = if PASSWORD.is_empty() {
            AuthenticationMethodConfig::Open
        } else {
            AuthenticationMethodConfig::Wpa2Personal(PASSWORD.try_into().expect("password"))
        };
        let mut station = StationConfig::default()
            .with_ssid(SSID.try_into().expect("SSID of 1-32 bytes"))
            .with_authentication(auth);
        if let Some(c) = cache {
            station = station.with_bssid(c.bssid).with_channel(c.channel);
        }
        let mut controller = WifiController::new(
            wifi,
            ControllerConfig::default().with_initial_config(Config::Station(station)),
        )
        .expect("Wi-Fi init");
        // Modem sleep between DTIM beacons while connected.
        if let Err(e) = controller.set_power_saving(PowerSaveMode::Minimum) {
            println!("pehra-fw: power saving: {:?}", e);
        }
        let sta = Interface::station();

        let mut seed = [0u8; 8];
        rng.fill_bytes(&mut seed);
        static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
        let net_config = match cache {
            Some(c) => embassy_net::Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(Ipv4Addr::from(c.address), c.prefix_len),
                gateway: (c.gateway != [0; 4]).then(|| Ipv4Addr::from(c.gateway)),
                dns_servers: Default::default(),
            }),
            None => embassy_net::Config::dhcpv4(Default::default()),
        };
        let (stack, runner) = embassy_net::new(
            sta,
            net_config,
            RESOURCES.init(StackResources::new()),
            u64::from_le_bytes(seed),
        );
        spawner.spawn(connection_task(controller).unwrap());
        spawner.spawn(net_task(runner).unwrap());

        if let Some(c) = cache {
            println!(
                "pehra-fw: reconnecting from the cache (channel {}, lease {:?}/{})",
                c.channel,
                Ipv4Addr::from(c.address),
                c.prefix_len
            );
            if with_timeout(Duration::from_secs(3), stack.wait_link_up())
                .await
                .is_err()
            {
                println!("pehra-fw: the cached access point did not answer: full connect");
                WifiCache::clear();
                esp_hal::system::software_reset();
            }
        } else {
            println!("pehra-fw: waiting for DHCP");
            stack.wait_config_up().await;
            if let Some(cfg) = stack.config_v4() {
                println!(
                    "pehra-fw: DHCP lease {} gateway {:?}",
                    cfg.address, cfg.gateway
                );
                let ap = critical_section::with(|cs| CONNECTED.borrow(cs).get());
                if let Some((bssid, channel)) = ap {
                    WifiCache {
                        bssid,
                        channel,
                        address: cfg.address.address().octets(),
                        prefix_len: cfg.address.prefix_len(),
                        gateway: cfg.gateway.map_or([0; 4], |g| g.octets()),
                        leased_at_ms: clock.now_ms(),
                    }
                    .store();
                }
            }
        }

        static RX_META: StaticCell<[PacketMetadata; 4]> = StaticCell::new();
        static TX_META: StaticCell<[PacketMetadata; 4]> = StaticCell::new();
        static RX_BUF: StaticCell<[u8; 1536]> = StaticCell::new();
        static TX_BUF: StaticCell<[u8; 1536]> = StaticCell::new();
        let mut socket = UdpSocket::new(
            stack,
            RX_META.init([PacketMetadata::EMPTY; 4]),
            RX_BUF.init([0; 1536]),
            TX_META.init([PacketMetadata::EMPTY; 4]),
            TX_BUF.init([0; 1536]),
        );
        let mut port = [0u8; 2];
        rng.fill_bytes(&mut port);
        socket
            .bind(49152 + u16::from_le_bytes(port) % 16384)
            .expect("bind");
        EmbassyUdp::new(socket, clock, Direct)
    }

    /// Keeps the station connected: connect, wait for a disconnect, retry after 5 s.
    #[embassy_executor::task]
    async fn connection_task(mut controller: WifiController<'static>) {
        loop {
            match controller.connect_async().await {
                Ok(info) => {
                    println!("pehra-fw: Wi-Fi connected (channel {})", info.channel);
                    critical_section::with(|cs| {
                        CONNECTED.borrow(cs).set(Some((info.bssid, info.channel)))
                    });
                    let _ = controller.wait_for_disconnect_async().await;
                    println!("pehra-fw: Wi-Fi disconnected");
                }
                Err(e) => println!("pehra-fw: Wi-Fi connect failed: {:?}", e),
            }
            Timer::after(Duration::from_secs(5)).await;
        }
    }

    #[embassy_executor::task]
    async fn net_task(mut runner: Runner<'static, Interface>) -> ! {
        runner.run().await
    }
}
