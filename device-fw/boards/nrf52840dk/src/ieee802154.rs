//! An embassy-net driver for the nRF52840's radio in IEEE 802.15.4 mode
//! (`embassy_nrf::radio::ieee802154::Radio`), through `embassy-net-driver-channel`.
//!
//! embassy-net (smoltcp) builds and parses the 802.15.4 MAC frames and does 6LoWPAN
//! (header compression, fragmentation); this module moves those frames between the
//! channel and the radio ([`Runner::run`], one task) and does what the MAC layer below
//! smoltcp must:
//!
//! - **PAN id**: smoltcp writes the PAN id it was configured with, and embassy-net does not
//!   pass one on (it leaves the field as it was in the buffer), so [`Runner`] writes
//!   [`Config::pan_id`] into each outgoing frame's destination PAN field.
//! - **Receive filter**: the radio has no address filter here; a frame is handed to the
//!   stack only if it is a data frame for this PAN (or the broadcast PAN) and for this
//!   device's extended address (or the broadcast short address, which neighbour discovery
//!   uses). A frame that does not parse, fails its CRC, or has an impossible length is
//!   dropped: nothing from the air can panic the driver.
//! - **CSMA**: a send whose clear-channel assessment finds the channel busy is retried
//!   after a short, jittered back-off, up to [`CCA_ATTEMPTS`] times, then dropped (the
//!   CoAP layer retransmits).
//! - **No link-layer ACKs** are sent or asked for (smoltcp's frames do not request them),
//!   so the border router must not request them either (see the README).
//! - **Power**: the radio listens only while the node loop wants it ([`RadioSwitch`], the
//!   core's `Radio::set_mode` hook). When it is switched off the runner sends what the
//!   stack has still queued (a NON publish goes out just before the switch-off), then
//!   disables the radio (DISABLED state, not the RXIDLE the driver's receive cancel leaves)
//!   and stops the 64 MHz crystal oscillator, which it starts again when the radio is
//!   wanted. Frames the stack queues while the radio is off wait in the channel.

use core::sync::atomic::{AtomicBool, Ordering};

use embassy_futures::select::{select3, Either3};
use embassy_net_driver_channel as ch;
use embassy_net_driver_channel::driver::{HardwareAddress, LinkState};
use embassy_nrf::pac;
use embassy_nrf::radio::ieee802154::{Packet, Radio, RadioState};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use pehra_device_fw::{Radio as RadioHooks, RadioMode};
use smoltcp::wire::{
    Ieee802154Address, Ieee802154Frame, Ieee802154FrameType, Ieee802154FrameVersion, Ieee802154Pan,
};

/// The largest frame moved, FCS excluded (the radio computes and checks the FCS).
pub const MTU: usize = Packet::CAPACITY as usize;
/// Received frames waiting for the stack.
pub const N_RX: usize = 4;
/// Frames waiting for the radio.
pub const N_TX: usize = 4;
/// Clear-channel assessments tried for one frame before it is dropped.
pub const CCA_ATTEMPTS: u32 = 5;
/// After the switch-off: how long the runner waits for the stack to queue the last
/// frames before it powers the radio down.
const TX_GRACE: Duration = Duration::from_millis(20);

/// The channel's buffers (static: `StaticCell` it in `main`).
pub type State = ch::State<MTU, N_RX, N_TX>;
/// The stack's end: give it to `embassy_net::new`.
pub type Device = ch::Device<'static, MTU>;

/// Whether the node loop wants the radio on (`Rx`/`Tx`) or off.
static WANTED: AtomicBool = AtomicBool::new(false);
/// Raised when [`WANTED`] changes, to wake the runner.
static CHANGED: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// The core's radio hook (`pehra_device_fw::Radio`): `Off` lets the runner power the radio
/// down, `Rx`/`Tx` turns it on and listening.
#[derive(Debug, Default, Clone, Copy)]
pub struct RadioSwitch;

impl RadioHooks for RadioSwitch {
    fn set_mode(&mut self, mode: RadioMode) {
        let on = mode != RadioMode::Off;
        if WANTED.swap(on, Ordering::Relaxed) != on {
            CHANGED.signal(());
        }
    }
}

/// The link's settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The PAN id, written into every outgoing frame; incoming frames must carry it (or
    /// the broadcast PAN).
    pub pan_id: u16,
    /// This device's extended (EUI-64) address, as smoltcp writes it (most significant
    /// byte first).
    pub ext_addr: [u8; 8],
}

/// Creates the driver: the stack's [`Device`] and the [`Runner`] to spawn.
pub fn new(state: &'static mut State, radio: Radio<'static>, config: Config) -> (Runner, Device) {
    let (ch, device) = ch::new(state, HardwareAddress::Ieee802154(config.ext_addr));
    let runner = Runner {
        ch,
        radio,
        config,
        packet: Packet::new(),
    };
    (runner, device)
}

/// Moves frames between the channel and the radio; run it in its own task.
pub struct Runner {
    ch: ch::Runner<'static, MTU>,
    radio: Radio<'static>,
    config: Config,
    packet: Packet,
}

impl Runner {
    /// Runs forever: while the radio is wanted, listen and send; otherwise keep it off.
    pub async fn run(self) -> ! {
        let Runner {
            ch,
            mut radio,
            config,
            mut packet,
        } = self;
        let (state, mut rx, mut tx) = ch.split();
        // The link is "up" even while the radio is off: the stack queues frames, which go
        // out once the node loop turns the radio on.
        state.set_link_state(LinkState::Up);
        let mut powered = false;
        loop {
            if !WANTED.load(Ordering::Relaxed) {
                if powered {
                    // What the stack queued just before the switch-off still goes out.
                    while let Ok(frame) = with_timeout(TX_GRACE, tx.tx_buf()).await {
                        transmit(&mut radio, &mut packet, frame, config.pan_id).await;
                        tx.tx_done();
                    }
                    power_down();
                    powered = false;
                    defmt::debug!("802.15.4: radio off");
                }
                CHANGED.wait().await;
                continue;
            }
            if !powered {
                hfxo_start();
                powered = true;
                defmt::debug!("802.15.4: radio on");
            }
            let event = select3(radio.receive(&mut packet), tx.tx_buf(), CHANGED.wait()).await;
            match event {
                Either3::First(Ok(())) => {
                    let Some(frame) = received(&packet) else {
                        continue;
                    };
                    if !accept(frame, &config) {
                        continue;
                    }
                    // The stack is behind: drop the frame rather than stop listening.
                    if let Some(buf) = rx.try_rx_buf() {
                        buf[..frame.len()].copy_from_slice(frame);
                        rx.rx_done(frame.len());
                    }
                }
                // CRC failed: not for anyone.
                Either3::First(Err(_)) => {}
                Either3::Second(frame) => {
                    transmit(&mut radio, &mut packet, frame, config.pan_id).await;
                    tx.tx_done();
                }
                // The wanted state changed: the loop looks again.
                Either3::Third(()) => {}
            }
        }
    }
}

/// A received packet's frame (FCS excluded), or `None` if its length is impossible.
fn received(packet: &Packet) -> Option<&[u8]> {
    // `Packet::len` is the PHR minus the 2-byte FCS, in u8: a PHR of 0 or 1 wraps to
    // 254/255 (overflow checks are off for embassy-nrf, see Cargo.toml). Slicing the
    // packet with such a length would panic; refuse it first.
    let n = packet.len() as usize;
    if n > MTU {
        return None;
    }
    Some(&packet[..n])
}

/// Whether a received frame is a data frame for this PAN and this device (or broadcast).
fn accept(frame: &[u8], config: &Config) -> bool {
    let Ok(f) = Ieee802154Frame::new_checked(frame) else {
        return false;
    };
    if f.frame_type() != Ieee802154FrameType::Data {
        return false;
    }
    match f.dst_pan_id() {
        Some(pan) if pan == Ieee802154Pan(config.pan_id) || pan == Ieee802154Pan::BROADCAST => {}
        _ => return false,
    }
    match f.dst_addr() {
        Some(Ieee802154Address::Extended(a)) => a == config.ext_addr,
        Some(a) => a.is_broadcast(),
        None => false,
    }
}

/// Writes `pan_id` into an outgoing frame's destination PAN field (smoltcp's frames are
/// 802.15.4-2003 data frames with a destination address and PAN id compression: the
/// field is bytes 3..5, little-endian). smoltcp's `set_dst_pan_id` is not used: it also
/// forces the destination addressing mode to extended, which would break broadcasts.
fn set_pan_id(frame: &mut [u8], pan_id: u16) {
    let Ok(f) = Ieee802154Frame::new_checked(&*frame) else {
        return;
    };
    let old_version = matches!(
        f.frame_version(),
        Ieee802154FrameVersion::Ieee802154_2003 | Ieee802154FrameVersion::Ieee802154_2006
    );
    if old_version && f.dst_pan_id().is_some() && frame.len() >= 5 {
        frame[3..5].copy_from_slice(&pan_id.to_le_bytes());
    }
}

/// Sends one frame (clear-channel assessment first, retried after a back-off while the
/// channel is busy). A frame that cannot be sent is dropped; the layers above retry.
async fn transmit(radio: &mut Radio<'static>, packet: &mut Packet, frame: &mut [u8], pan_id: u16) {
    if frame.len() > MTU {
        return;
    }
    set_pan_id(frame, pan_id);
    packet.copy_from_slice(frame);
    for attempt in 0..CCA_ATTEMPTS {
        if radio.try_send(packet).await.is_ok() {
            return;
        }
        // Busy: wait 1..(2^(attempt+1)) back-off periods of 320 µs (802.15.4's unit
        // backoff period), the jitter from the RTC's low bits.
        let periods = 1 + (Instant::now().as_ticks() as u32) % (2 << attempt);
        Timer::after_micros(320 * periods as u64).await;
    }
    defmt::debug!("802.15.4: channel busy, frame dropped");
}

/// Starts the 64 MHz crystal oscillator (the radio needs it) and waits until it runs
/// (about 0.3 ms on the DK).
fn hfxo_start() {
    let clock = pac::CLOCK;
    clock.events_hfclkstarted().write_value(0);
    clock.tasks_hfclkstart().write_value(1);
    while clock.events_hfclkstarted().read() == 0 {}
}

/// Disables the radio (from RXIDLE, or a ramp-down after a send) and stops the crystal
/// oscillator: what is left running is the RC oscillator for the CPU when it wakes.
fn power_down() {
    let radio = pac::RADIO;
    radio.shorts().write(|_| {});
    if radio.state().read().state() != RadioState::Disabled {
        radio.tasks_disable().write_value(1);
        while radio.state().read().state() != RadioState::Disabled {}
    }
    pac::CLOCK.tasks_hfclkstop().write_value(1);
}
