//! Pehra device firmware for the nRF52840-DK (Cortex-M4F, IEEE 802.15.4 / 6LoWPAN).
//!
//! Boots (embassy-nrf: DC/DC on, 32.768 kHz crystal, RTC1 as the embassy-time driver),
//! brings up the 802.15.4 radio under embassy-net (static IPv6 over 6LoWPAN, this
//! board's driver in [`ieee802154`]), and runs `pehra-device-fw`'s node loop: at each
//! alarm read the die temperature, check in with the gateway (a Pehra broker, through a
//! 6LoWPAN border router), publish, collect downlink records (`set-interval N` is
//! understood), persist, sleep.
//!
//! Sleep between alarms: **System ON idle**. The embassy executor waits in WFE, RTC1
//! wakes it at the next alarm, RAM is retained, the radio is disabled and the 64 MHz
//! crystal stopped (the node loop's `Radio::set_mode(Off)`, see [`ieee802154`]). Not
//! System OFF: nothing on the nRF52840 can wake it on a timer (the RTCs stop; only GPIO,
//! LPCOMP, NFC or a reset wake it), and its wake is a reset that starts the firmware over
//! without the node loop's state or the storage (RAM is off by default in System OFF), so
//! a periodic sensor would need an external timer chip.
//!
//! Every request is protected with OSCORE in the device's pairwise context towards the
//! broker it goes to; its credentials are compiled in from `PEHRA_DEVICE_CREDENTIALS`
//! (`../device_keys.rs`, see the README).
//!
//! Build-time settings: see [`settings`] (environment only, placeholders when unset).
//! Logs: defmt over RTT (`probe-rs run`), the core's own lines included.
//!
//! Not yet run on hardware: there is no board here, and QEMU has no nRF52840 machine.
#![no_std]
#![no_main]

extern crate alloc;

mod board;
mod ieee802154;
mod settings;

/// The device's identity (build.rs, from `PEHRA_DEVICE_CREDENTIALS`).
mod keys {
    include!(concat!(env!("OUT_DIR"), "/device_keys.rs"));
}

use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Runner, StackResources};
use embassy_nrf::config::{Config as NrfConfig, HfclkSource, LfclkSource};
use embassy_nrf::radio::ieee802154::Radio;
use embassy_nrf::temp::Temp;
use embassy_nrf::{bind_interrupts, pac, peripherals, radio, rng, temp};
use embassy_time::Instant;
use embedded_alloc::LlffHeap as Heap;
use pehra_device_fw::hal::{EmbassyClock, Rng as _};
use pehra_device_fw::net::{Direct, EmbassyUdp};
use pehra_device_fw::{Device, DeviceKeys, OwnFrame, Parts, SeededRng, Settings};
use pehra_shared::coap::Config as CoapConfig;
use pehra_shared::pehra::device::DeviceConfig;
use pehra_shared::wire::Acks;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

use board::{DieTemperature, LoggingApp};
use ieee802154::RadioSwitch;
use pehra_device_fw::hal::RamStorage;

bind_interrupts!(struct Irqs {
    RADIO => radio::InterruptHandler<peripherals::RADIO>;
    RNG => rng::InterruptHandler<peripherals::RNG>;
    TEMP => temp::InterruptHandler;
});

/// The heap the CoAP engine and CBOR use (the QEMU board, same core, peaks at 8 KiB of
/// its 10 KiB with 16 buffered readings; this board keeps a larger margin, not measured
/// on hardware).
const HEAP_SIZE: usize = 20 * 1024;

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// UDP socket buffers: one CoAP exchange at a time, a 256-byte block plus headers.
const UDP_BUF: usize = 1024;

/// This device's IEEE 802.15.4 extended address: FICR DEVICEADDR (the chip's 48-bit
/// random static address) widened to an EUI-64 as EUI-48s are (ff:fe in the middle),
/// marked locally administered and unicast.
fn ext_addr() -> [u8; 8] {
    let lo = pac::FICR.deviceaddr(0).read().to_le_bytes();
    let hi = pac::FICR.deviceaddr(1).read().to_le_bytes();
    // DEVICEADDR[0] holds the low 32 bits, DEVICEADDR[1] the next 16.
    let a = [hi[1], hi[0], lo[3], lo[2], lo[1], lo[0]];
    [
        (a[0] | 0x02) & !0x01,
        a[1],
        a[2],
        0xff,
        0xfe,
        a[3],
        a[4],
        a[5],
    ]
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut config = NrfConfig::default();
    // The DK has the 32.768 kHz crystal and the DC/DC inductor for REG1 (VDD is supplied
    // directly, so REG0 is unused). The 64 MHz crystal (HFXO) is started by the radio
    // driver only while the radio is on.
    config.lfclk_source = LfclkSource::ExternalXtal;
    config.hfclk_source = HfclkSource::Internal;
    config.dcdc.reg1 = true;
    let p = embassy_nrf::init(config);
    {
        use core::mem::MaybeUninit;
        static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
        // SAFETY: called once, before any allocation; the region is ours alone.
        unsafe { HEAP.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
    }

    // Seeds from the hardware RNG: the CoAP engine's, the stack's, the local port.
    let mut seed = [0u8; 32];
    let mut net_seed = [0u8; 8];
    {
        let mut hw = rng::Rng::new(p.RNG, Irqs);
        hw.set_bias_correction(true);
        hw.fill_bytes(&mut seed).await;
        hw.fill_bytes(&mut net_seed).await;
    }
    let mut rng = SeededRng::new(seed);

    let ext = ext_addr();
    let name = settings::device_name(&ext);
    let gateways = settings::gateways();
    defmt::info!(
        "boot (nrf52840dk): node {}, 802.15.4 channel {} PAN {:#06x}, ext addr {:02x}, alarm {} s",
        name.as_str(),
        settings::CHANNEL,
        settings::PAN_ID,
        ext,
        settings::INTERVAL_MS / 1000
    );

    // The radio and its embassy-net driver.
    let mut radio = Radio::new(p.RADIO, Irqs);
    radio.set_channel(settings::CHANNEL);
    radio.set_transmission_power(settings::TX_POWER_DBM);
    static RADIO_STATE: StaticCell<ieee802154::State> = StaticCell::new();
    let (radio_runner, device) = ieee802154::new(
        RADIO_STATE.init(ieee802154::State::new()),
        radio,
        ieee802154::Config {
            pan_id: settings::PAN_ID,
            ext_addr: ext,
        },
    );
    spawner.spawn(radio_task(radio_runner).unwrap());

    let ip = settings::ipv6_config(&ext);
    defmt::info!("IPv6 {}, gateways {}", ip.address, gateways.len());
    static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();
    let (stack, net_runner) = embassy_net::new(
        device,
        embassy_net::Config::ipv6_static(ip),
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(net_seed),
    );
    spawner.spawn(net_task(net_runner).unwrap());

    static RX_META: StaticCell<[PacketMetadata; 4]> = StaticCell::new();
    static TX_META: StaticCell<[PacketMetadata; 4]> = StaticCell::new();
    static RX_BUF: StaticCell<[u8; UDP_BUF]> = StaticCell::new();
    static TX_BUF: StaticCell<[u8; UDP_BUF]> = StaticCell::new();
    let mut socket = UdpSocket::new(
        stack,
        RX_META.init([PacketMetadata::EMPTY; 4]),
        RX_BUF.init([0; UDP_BUF]),
        TX_META.init([PacketMetadata::EMPTY; 4]),
        TX_BUF.init([0; UDP_BUF]),
    );
    let mut port = [0u8; 2];
    rng.fill_bytes(&mut port);
    if socket
        .bind(49152 + u16::from_le_bytes(port) % 16384)
        .is_err()
    {
        // Only a port of 0 or a socket already bound fails; neither can happen here.
        defmt::error!("UDP bind failed");
    }

    // Over 802.15.4 a frame carries at most ~100 bytes of UDP payload: smaller blocks
    // and batches than the Wi-Fi board's mean fewer 6LoWPAN fragments per datagram.
    let settings = Settings {
        topic: settings::TOPIC.into(),
        acks: Acks::Leader,
        max_batch: 8,
        downlink_max_bytes: 256,
        alarm_interval_ms: settings::INTERVAL_MS,
    };
    let coap = CoapConfig {
        dedup_capacity: 16,
        max_body_size: 1024,
        block_size: 256,
        max_payload: 256,
        ..CoapConfig::default()
    };
    let parts = Parts {
        udp: EmbassyUdp::new(socket, EmbassyClock::default(), Direct),
        clock: EmbassyClock::default(),
        sensor: DieTemperature(Temp::new(p.TEMP, Irqs)),
        storage: RamStorage,
        radio: RadioSwitch,
        app: LoggingApp,
    };
    if !keys::PROVISIONED {
        defmt::warn!(
            "unprovisioned (no PEHRA_DEVICE_CREDENTIALS at build): every broker refuses it"
        );
    }
    let addrs = gateways.iter().map(|&(a, _)| a).collect();
    let device_keys = DeviceKeys {
        kid: keys::KID.to_vec(),
        identity_key: keys::KEY,
    };
    let mut device = OwnFrame(Device::boot_secured(
        DeviceConfig::new(&name, addrs, settings::INTERVAL_MS),
        settings,
        coap,
        parts,
        &mut rng,
        device_keys,
        gateways,
    ))
    .await;
    let p = device.persisted();
    defmt::info!(
        "storage: incarnation {:08x}, {} readings so far",
        p.incarnation,
        p.readings_seq
    );

    loop {
        let report = OwnFrame(device.run_cycle()).await;
        let now = Instant::now().as_millis();
        let stats = device.stats();
        defmt::info!(
            "cycle {}: gateway {}, published {} (total {}), downlink {}, timeouts {}, wake in {} ms ({})",
            stats.cycles,
            report.gateway.is_some(),
            report.published,
            stats.readings_published,
            report.downlink,
            stats.timeouts,
            report.wake_at_ms.saturating_sub(now),
            if report.deep_sleep { "radio off" } else { "listening" }
        );
        // System ON idle until the alarm: WFE in the executor, RTC1 wakes it.
        OwnFrame(device.sleep(&report)).await;
    }
}

#[embassy_executor::task]
async fn radio_task(runner: ieee802154::Runner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, ieee802154::Device>) -> ! {
    runner.run().await
}
