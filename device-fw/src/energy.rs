//! The energy model: per-board currents in each power state, the time a device spent in
//! each and the wakes and radio starts it made ([`Meter`]), and what that costs a day
//! and how long 2×AA last.
//!
//! Five states: **sleep**, CPU **active** with the radio off, radio **RX** (waiting for
//! an answer), radio **TX**, and **listening**: kept awake by `stay_awake`/`wake_now`
//! between exchanges, with the network up as the board keeps it ([`Board::listen_ua`]).
//! The time in TX is the airtime of the bytes sent at the board's radio bit rate, taken
//! out of the RX time around it. On top of the time in each state, two one-off charges:
//!
//! - a **wake** from deep sleep ([`Board::wake_uc`]): on the ESP32-C3 a deep sleep resets
//!   the chip, so each wake is a boot, a Wi-Fi association and a DHCP exchange; the
//!   board deep-sleeps only for a sleep of at least [`DEEP_SLEEP_MIN_MS`] (shorter ones
//!   stay associated in modem power-save, [`Board::short_sleep_ua`]);
//! - a **radio start** ([`Board::radio_start_uc`]): each time the node switches the
//!   radio on for an exchange (on the nRF52840: the crystal oscillator's start-up and
//!   the radio's ramp-up).
//!
//! Each figure below names its source: the document, its version and the table; where
//! no primary figure was found it says so and what stands in for it.
//!
//! Not modelled: protocol overhead on the air (802.15.4/6LoWPAN/Thread or Wi-Fi MAC
//! headers, acknowledgements, retransmissions; only the CoAP bytes count as TX airtime),
//! a Thread child's data polls and an associated Wi-Fi station's DTIM wakes outside the
//! sleep figures below, regulator losses, the cells' voltage range against each chip's
//! supply range, capacity lost to the ESP32-C3's current peaks, and the batteries'
//! self-discharge.

/// A power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Sleep, RTC running, state kept.
    Sleep,
    /// CPU running, radio off.
    Active,
    /// Radio receiving (listening).
    Rx,
    /// Radio transmitting.
    Tx,
    /// Awake between exchanges, network up (`stay_awake`, `wake_now`).
    Listen,
}

/// The shortest sleep a board with [`Board::short_sleep_ua`] spends in deep sleep, ms:
/// the ESP32-C3 board's default `PEHRA_DEEP_SLEEP_MIN_S` (30 s,
/// `device-fw/boards/esp32c3/src/main.rs`). A shorter sleep keeps the Wi-Fi association.
pub const DEEP_SLEEP_MIN_MS: u64 = 30_000;

/// Time spent per state, and the wakes and radio starts that cost a charge of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTimes {
    /// Asleep, µs (every sleep, short ones included).
    pub sleep_us: u64,
    /// CPU active, radio off, µs.
    pub active_us: u64,
    /// Radio on (RX and TX; [`Board::tx_us`] splits off the TX airtime), µs.
    pub radio_us: u64,
    /// Listening: awake between exchanges, network up, µs.
    pub listen_us: u64,
    /// Bytes transmitted (their airtime is the TX time).
    pub tx_bytes: u64,
    /// Wakes from a sleep of at least [`DEEP_SLEEP_MIN_MS`].
    pub wakes: u64,
    /// Wakes from a sleep shorter than [`DEEP_SLEEP_MIN_MS`].
    pub short_sleeps: u64,
    /// The time in those short sleeps, µs (part of `sleep_us`).
    pub short_sleep_us: u64,
    /// Times the radio was switched on (RX or TX entered from sleep or CPU active).
    pub radio_starts: u64,
}

impl StateTimes {
    /// The total time covered, µs.
    pub fn total_us(&self) -> u64 {
        self.sleep_us + self.active_us + self.radio_us + self.listen_us
    }

    /// Adds another's times and counts.
    pub fn add(&mut self, other: &StateTimes) {
        self.sleep_us += other.sleep_us;
        self.active_us += other.active_us;
        self.radio_us += other.radio_us;
        self.listen_us += other.listen_us;
        self.tx_bytes += other.tx_bytes;
        self.wakes += other.wakes;
        self.short_sleeps += other.short_sleeps;
        self.short_sleep_us += other.short_sleep_us;
        self.radio_starts += other.radio_starts;
    }
}

/// Accounts the time a device spends per state, and its wakes and radio starts, from
/// the node loop's transitions.
///
/// A wake is counted when a sleep ends (by its whole length: at least
/// [`DEEP_SLEEP_MIN_MS`] or shorter); the first boot is not counted, and a sleep still
/// under way counts as sleep time without a wake. Entering the state the meter is
/// already in only accounts the time (so a copy can be brought up to date without
/// counting a transition).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    state: PowerState,
    since_ms: u64,
    entered_ms: u64,
    times: StateTimes,
}

impl Meter {
    /// A meter starting in `state` at `now_ms`.
    pub fn new(now_ms: u64, state: PowerState) -> Self {
        Meter {
            state,
            since_ms: now_ms,
            entered_ms: now_ms,
            times: StateTimes::default(),
        }
    }

    /// The state now.
    pub fn state(&self) -> PowerState {
        self.state
    }

    /// Enters `state` at `now_ms` (the time since the last call goes to the old state).
    pub fn enter(&mut self, now_ms: u64, state: PowerState) {
        let us = now_ms.saturating_sub(self.since_ms).saturating_mul(1000);
        match self.state {
            PowerState::Sleep => self.times.sleep_us += us,
            PowerState::Active => self.times.active_us += us,
            PowerState::Rx | PowerState::Tx => self.times.radio_us += us,
            PowerState::Listen => self.times.listen_us += us,
        }
        self.since_ms = self.since_ms.max(now_ms);
        if state == self.state {
            return;
        }
        let radio =
            |s: PowerState| matches!(s, PowerState::Rx | PowerState::Tx | PowerState::Listen);
        if self.state == PowerState::Sleep {
            let slept_ms = self.since_ms.saturating_sub(self.entered_ms);
            if slept_ms >= DEEP_SLEEP_MIN_MS {
                self.times.wakes += 1;
            } else {
                self.times.short_sleeps += 1;
                self.times.short_sleep_us += slept_ms * 1000;
            }
        }
        if radio(state) && !radio(self.state) {
            self.times.radio_starts += 1;
        }
        self.entered_ms = self.since_ms;
        self.state = state;
    }

    /// `bytes` were transmitted.
    pub fn transmitted(&mut self, bytes: u64) {
        self.times.tx_bytes += bytes;
    }

    /// The times so far (up to the last [`Self::enter`]).
    pub fn times(&self) -> StateTimes {
        self.times
    }
}

/// A board's currents per state, µA, its one-off charges, µC (µA·s), and its radio's
/// bit rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Board {
    /// Its name.
    pub name: &'static str,
    /// Sleep, µA (deep sleep; every sleep if `short_sleep_ua` is `None`).
    pub sleep_ua: f64,
    /// A sleep shorter than [`DEEP_SLEEP_MIN_MS`], µA, on a board that does not deep
    /// sleep then (no wake charge either); `None`: every sleep is the same sleep.
    pub short_sleep_ua: Option<f64>,
    /// CPU active, radio off, µA.
    pub active_ua: f64,
    /// Radio receiving, µA.
    pub rx_ua: f64,
    /// Radio transmitting, µA.
    pub tx_ua: f64,
    /// Listening (awake between exchanges, network up), µA.
    pub listen_ua: f64,
    /// The radio's bit rate, kbit/s (TX airtime).
    pub radio_kbps: u64,
    /// The charge of one wake from deep sleep, µC: on a board whose wake is a boot, the
    /// full reconnect ([`WakeMode::DeepSleepFull`]: scan, association, DHCP).
    pub wake_uc: f64,
    /// The charge of one wake from deep sleep that reconnects from what it kept
    /// ([`WakeMode::DeepSleepCached`]: the access point's BSSID and channel, the last
    /// DHCP lease used as a static address), µC; `wake_uc` on a board without such a
    /// difference.
    pub cached_wake_uc: f64,
    /// The charge of one radio start, µC.
    pub radio_start_uc: f64,
}

/// ESP32-C3 (Wi-Fi 802.11b/g/n, 3.3 V), from Espressif's *ESP32-C3 Series Datasheet*
/// v1.4, section 4.6 "Current Consumption" (3.3 V, 25 °C), with Espressif's ESP-IDF
/// guide for the associated sleep and a public measurement for the wake.
pub const ESP32_C3: Board = Board {
    name: "ESP32-C3",
    // Table 19 "Current Consumption in Low-Power Modes": Deep-sleep, RTC timer + RTC
    // memory, 5 µA typ. (Light-sleep 130 µA, not used by the board.)
    sleep_ua: 5.0,
    // A sleep under 30 s: the board keeps the association in Wi-Fi modem power-save
    // (DTIM wakes) with the CPU in WFI. ESP-IDF v5.4.4 programming guide, ESP32-C3,
    // "Introduction to Low Power Mode in Wi-Fi Scenarios", summary table: Modem-sleep,
    // DTIM1, 21.47 mA average (DTIM3 20.82 mA; measured by Espressif in a shielded box).
    short_sleep_ua: Some(21_470.0),
    // Table 18 "Current Consumption in Modem-sleep Mode": CPU running at 160 MHz, all
    // peripheral clocks disabled, 23 mA typ. (28 mA with them enabled; CPU idle 16 mA).
    // The Family Datasheet v1.0 (Table 16) gave 20 mA for the same mode.
    active_ua: 23_000.0,
    // Table 17 "Current Consumption Depending on RF Modes": RX 802.11b/g/n HT20, 84 mA
    // (the table's only column is "Peak").
    rx_ua: 84_000.0,
    // Same table: TX 802.11b 1 Mbps at 21 dBm, 335 mA peak, the table's worst case
    // (802.11n HT20 MCS7 at 18.5 dBm: 276 mA), at 100 % duty cycle.
    tx_ua: 335_000.0,
    // Kept awake (`stay_awake`), the board waits on a timer with the CPU in WFI and the
    // station associated in modem power-save: the same DTIM1 figure as `short_sleep_ua`.
    listen_ua: 21_470.0,
    // 802.11b 1 Mbps, the rate of that TX figure (so the airtime is an upper bound).
    radio_kbps: 1_000,
    // A wake from deep sleep is a reset: boot, Wi-Fi association, DHCP (the board asks
    // for a lease each boot). No ESP32-C3 figure for the whole sequence was found in
    // Espressif's documents (ESP-Techpedia "ESP Chip Startup Time Optimization" puts an
    // unoptimised start-up at "around 300 milliseconds", ESP32-S3/C6, no current). Used:
    // a public measurement on an ESP32 (not C3; Nordic PPK2 on the 5 V USB line, so
    // the board's regulator and parts are included), glenn20/upy-esp32-experiments,
    // "ESPNowvsWifiEnergyUsage": wake from deep sleep, boot, connect with DHCP, back to
    // sleep: 1626 ms, 204.3 mC; with a static IP 734 ms, 100.2 mC; some runs up to
    // 4.9 s, 490 mC. Read the figure as ±2×.
    wake_uc: 204_300.0,
    // A wake that reconnects from what RTC memory kept (`WakeMode::DeepSleepCached`):
    // no scan (the stored BSSID on its channel), no DHCP (the cached lease as a static
    // address). Modelled, no whole-sequence figure for the C3 was found:
    // - boot 300 ms (ESP-Techpedia's unoptimised start-up, above) at the CPU-running
    //   current, 23 mA (table 18; an upper bound: the bootloader runs slower): 6.9 mC;
    // - association and WPA2 handshake on the known channel, 300 ms with the receiver
    //   on, 84 mA (table 17): 25.2 mC. Measured elsewhere: an ESP8266 with stored BSSID,
    //   channel and a static IP connects to a WPA2 network in 168 ms
    //   (softplus/esp8266-wifi-timing); on an ESP32 a one-channel scan is ~120 ms and the
    //   connection after it 600-700 ms at 240 MHz (esp32.io topic 8942, no current).
    // 32.1 mC; the measured static-IP-only wake of the source above (scan kept, DHCP
    // skipped) is 100.2 mC, the upper end of the range (`CACHED_WAKE_UC_HIGH`).
    cached_wake_uc: 300e-3 * 23_000.0 + 300e-3 * 84_000.0,
    // The station stays associated between exchanges of one cycle: no start-up beyond
    // the RX/TX time.
    radio_start_uc: 0.0,
};

/// nRF52840 (IEEE 802.15.4 / Thread), from Nordic's *nRF52840 Product Specification*
/// (v1.11 where a version is given), chapter "Current consumption", DC/DC on, 3 V.
pub const NRF52840: Board = Board {
    name: "nRF52840",
    // Sleep table, ION_RAMON_RTC: System ON, full 256 kB RAM retention, wake on RTC,
    // 3.16 µA (PS v1.11 as quoted by public code citing it; the Nordic page itself was
    // not at hand. System OFF with full RAM, IOFF_RAMON_RESET, is 1.86 µA but cannot
    // wake on the RTC).
    sleep_ua: 3.16,
    // Waking from System ON idle is not a boot: every sleep is the same sleep.
    short_sleep_ua: None,
    // "CPU running" table, ICPU0: CoreMark from flash at 64 MHz, HFXO, DC/DC, 3.3 mA
    // (PS v1.11, quoted as above; with the LDO 6.3 mA).
    active_ua: 3_300.0,
    // "Radio transmitting/receiving" table (online PS, current revision), IRADIO_RX2:
    // receiving at 250 kbit/s IEEE 802.15.4-2006, HFXO, DC/DC, 6.53 mA. The table's
    // figures are the whole chip with the CPU not running, which fits waiting for an
    // answer; the "Compounded" table, CPU running CoreMark plus the BLE 1 Mbps radio,
    // gives IS1 8.6 mA (RX) and IS0 8.1 mA (TX at 0 dBm).
    rx_ua: 6_530.0,
    // Same table, IRADIO_TX5: transmitting at 0 dBm, 250 kbit/s IEEE 802.15.4, HFXO,
    // DC/DC, 6.40 mA.
    tx_ua: 6_400.0,
    // Kept awake, the board leaves the receiver on (its radio switch is `Rx`) with the
    // CPU idle: the RX figure.
    listen_ua: 6_530.0,
    // IEEE 802.15.4 O-QPSK, 250 kbit/s, the mode of those figures.
    radio_kbps: 250,
    // A wake from System ON idle takes microseconds; no charge of its own is modelled
    // (the radio's start-up is the next figure).
    wake_uc: 0.0,
    cached_wake_uc: 0.0,
    // Each exchange starts the 32 MHz crystal (HFXO) and ramps the radio up.
    // - Ramp-up: tRXEN/tTXEN in IEEE 802.15.4 mode, 130 µs (40 µs with fast ramp-up),
    //   from the RADIO timing tables of Nordic's nRF5340 PS and nRF54 datasheets (the
    //   same figures there); the nRF52840 PS table was not at hand. Its current is taken
    //   as the RX current (no ramp-up current figure found): 130 µs × 6.53 mA.
    // - HFXO start-up: the nRF52840 PS figures were not at hand; Nordic's nRF54LM20
    //   datasheet gives an average start-up current of 0.36–0.38 mA over the first 1 ms
    //   (power-up 200–415 µs): 1 ms × 0.38 mA stands in for it.
    // About 1.2 µC per start; at three exchanges a minute, about 1.5 µAh a day.
    radio_start_uc: 130e-6 * 6_530.0 + 1e-3 * 380.0,
};

/// QEMU's mps2-an386 (a Cortex-M4 FPGA image, no radio, no power figures of its own):
/// modelled with the nRF52840's figures (the same Cortex-M4F class of core, with its
/// radio as if attached), [`NRF52840`]'s citations.
pub const MPS2_AN386: Board = Board {
    name: "mps2-an386 (as nRF52840)",
    ..NRF52840
};

/// Every board modelled.
pub const BOARDS: [Board; 3] = [ESP32_C3, NRF52840, MPS2_AN386];

/// The battery assumed: 2×AA alkaline in series (3 V nominal), 2500 mAh (a round
/// figure for alkaline AA at low drain, not from a cell's datasheet).
pub const BATTERY_2XAA_MAH: f64 = 2500.0;

/// Microseconds in a day.
const DAY_US: f64 = 86_400.0 * 1e6;

/// µA·µs in one µAh.
const UA_US_PER_UAH: f64 = 3.6e9;

impl Board {
    /// The TX airtime of `times.tx_bytes`, µs (at most the radio time).
    pub fn tx_us(&self, times: &StateTimes) -> u64 {
        (times.tx_bytes.saturating_mul(8_000) / self.radio_kbps.max(1)).min(times.radio_us)
    }

    /// The charge of the wakes and radio starts in `times`, µAh (part of
    /// [`Self::charge_uah`]). On a board with `short_sleep_ua`, wakes from short sleeps
    /// cost nothing (it did not deep sleep); on the others every wake costs `wake_uc`.
    pub fn wake_charge_uah(&self, times: &StateTimes) -> f64 {
        let wakes = match self.short_sleep_ua {
            Some(_) => times.wakes,
            None => times.wakes + times.short_sleeps,
        };
        let uc = self.wake_uc * wakes as f64 + self.radio_start_uc * times.radio_starts as f64;
        uc / 3600.0
    }

    /// The charge drawn over `times`, µAh: each state's time at its current, plus the
    /// wakes and radio starts.
    pub fn charge_uah(&self, times: &StateTimes) -> f64 {
        let tx = self.tx_us(times);
        let rx = times.radio_us - tx;
        let short_sleep_ua_us = match self.short_sleep_ua {
            Some(ua) => ua * times.short_sleep_us as f64,
            None => self.sleep_ua * times.short_sleep_us as f64,
        };
        let deep_sleep_us = times.sleep_us.saturating_sub(times.short_sleep_us);
        let ua_us = self.sleep_ua * deep_sleep_us as f64
            + short_sleep_ua_us
            + self.active_ua * times.active_us as f64
            + self.rx_ua * rx as f64
            + self.tx_ua * tx as f64
            + self.listen_ua * times.listen_us as f64;
        ua_us / UA_US_PER_UAH + self.wake_charge_uah(times)
    }

    /// The charge a day at the same duty cycle, µAh/day (0 if no time is covered).
    pub fn uah_per_day(&self, times: &StateTimes) -> f64 {
        let total = times.total_us();
        if total == 0 {
            return 0.0;
        }
        self.charge_uah(times) * DAY_US / total as f64
    }

    /// How many days `capacity_mah` lasts at that duty cycle.
    pub fn battery_days(&self, times: &StateTimes, capacity_mah: f64) -> f64 {
        let per_day = self.uah_per_day(times);
        if per_day <= 0.0 {
            return f64::INFINITY;
        }
        capacity_mah * 1000.0 / per_day
    }
}

/// The modelled cycle of a node publishing every `interval_ms`: `awake_ms` of CPU
/// (reading, encoding, CBOR), `radio_ms` of radio over `exchanges` radio starts
/// (check-in, readings, downlink: 3) and `tx_bytes` sent; the rest asleep, one wake.
pub fn cycle(
    interval_ms: u64,
    awake_ms: u64,
    radio_ms: u64,
    exchanges: u64,
    tx_bytes: u64,
) -> StateTimes {
    let sleep_ms = interval_ms.saturating_sub(awake_ms + radio_ms);
    let short = sleep_ms < DEEP_SLEEP_MIN_MS;
    StateTimes {
        sleep_us: sleep_ms * 1000,
        active_us: awake_ms * 1000,
        radio_us: radio_ms * 1000,
        listen_us: 0,
        tx_bytes,
        wakes: u64::from(!short),
        short_sleeps: u64::from(short),
        short_sleep_us: if short { sleep_ms * 1000 } else { 0 },
        radio_starts: exchanges,
    }
}

/// The upper end of the ESP32-C3's cached-reconnect charge, µC: the measured wake with a
/// static IP but a full scan (glenn20/upy-esp32-experiments, 100.2 mC; see
/// [`ESP32_C3`]'s `wake_uc`). The model's choice and the 15-minute goal are checked
/// against it too.
pub const CACHED_WAKE_UC_HIGH: f64 = 100_200.0;

/// What an ESP32-C3 in Wi-Fi light sleep would draw while staying associated, µA:
/// Espressif's ESP-IDF Wi-Fi low-power guide, ESP32-C3 summary table
/// (`sleep-current/esp32c3_summary.inc`), Auto Light-sleep at DTIM 3, 0.62 mA (DTIM 1:
/// 1.4 mA, DTIM 10: 0.31 mA). Not used by the board: esp-radio holds a wake lock while
/// Wi-Fi is up, so esp-rtos never enters light sleep (the board's associated sleep is
/// modem sleep, [`Board::short_sleep_ua`]); for comparison only.
pub const ESP32_C3_LIGHT_SLEEP_DTIM3_UA: f64 = 620.0;

/// How long a cached DHCP lease is used as a static address before a wake asks for a
/// lease again, ms: 1 h, well inside the usual lease times (a day on most home routers);
/// the ESP32-C3 board's `PEHRA_LEASE_CACHE_S` default.
pub const LEASE_CACHE_MS: u64 = 3_600_000;

/// How a board spends the time between two readings and gets back on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeMode {
    /// Deep sleep; the wake is a boot, a scan of every channel, an association and DHCP
    /// ([`Board::wake_uc`]).
    DeepSleepFull,
    /// Deep sleep; the wake is a boot and an association straight to the stored BSSID on
    /// its channel, with the cached lease as a static address ([`Board::cached_wake_uc`]);
    /// once per [`LEASE_CACHE_MS`] a full wake renews the lease.
    DeepSleepCached,
    /// No deep sleep: the station stays associated (modem power-save) between readings
    /// ([`Board::short_sleep_ua`]); no wake charge.
    StayAssociated,
}

/// Every [`WakeMode`], in the order [`Board::choose_wake`] prefers them on a tie.
pub const WAKE_MODES: [WakeMode; 3] = [
    WakeMode::DeepSleepCached,
    WakeMode::DeepSleepFull,
    WakeMode::StayAssociated,
];

/// What one reading costs apart from sleeping: CPU time, radio time over its radio
/// starts, bytes sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleShape {
    /// CPU active, radio off, ms.
    pub awake_ms: u64,
    /// Radio on, ms.
    pub radio_ms: u64,
    /// Radio starts (exchanges).
    pub exchanges: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

/// A cycle of the node loop: 5 ms of CPU, 30 ms of radio over 3 exchanges (check-in,
/// readings, downlink), 300 bytes sent (the figures of the model's tests; the README's
/// device-sim run sent ~440 bytes per cycle over loopback).
pub const TYPICAL_CYCLE: CycleShape = CycleShape {
    awake_ms: 5,
    radio_ms: 30,
    exchanges: 3,
    tx_bytes: 300,
};

impl Board {
    /// The charge of one wake in `mode` at one reading every `interval_ms`, µC: a full
    /// or cached reconnect (a cached one renews the lease with a full wake once per
    /// [`LEASE_CACHE_MS`]); nothing when staying associated.
    pub fn wake_cost_uc(&self, mode: WakeMode, interval_ms: u64) -> f64 {
        match mode {
            WakeMode::DeepSleepFull => self.wake_uc,
            WakeMode::DeepSleepCached => {
                let full = (interval_ms as f64 / LEASE_CACHE_MS as f64).min(1.0);
                full * self.wake_uc + (1.0 - full) * self.cached_wake_uc
            }
            WakeMode::StayAssociated => 0.0,
        }
    }

    /// The charge a day of one reading every `interval_ms` shaped like `shape`, spending
    /// the time between readings in `mode`, µAh/day.
    pub fn uah_per_day_in(&self, mode: WakeMode, interval_ms: u64, shape: &CycleShape) -> f64 {
        let interval_ms = interval_ms.max(1);
        let sleep_ms = interval_ms.saturating_sub(shape.awake_ms + shape.radio_ms);
        let mut t = StateTimes {
            sleep_us: sleep_ms * 1000,
            active_us: shape.awake_ms * 1000,
            radio_us: shape.radio_ms * 1000,
            tx_bytes: shape.tx_bytes,
            radio_starts: shape.exchanges,
            ..StateTimes::default()
        };
        if mode == WakeMode::StayAssociated {
            t.short_sleeps = 1;
            t.short_sleep_us = t.sleep_us;
        }
        // The wake's charge by mode (not `wake_uc` per counted wake: none is counted).
        let cycle_uah = self.charge_uah(&t) + self.wake_cost_uc(mode, interval_ms) / 3600.0;
        cycle_uah * DAY_US / (interval_ms as f64 * 1000.0)
    }

    /// The cheapest [`WakeMode`] by the model at one reading every `interval_ms` (ties:
    /// the first in [`WAKE_MODES`]). `cache` says whether a cached reconnect is possible
    /// (the board kept a BSSID, channel and lease); without it the choice is between a
    /// full wake and staying associated.
    pub fn choose_wake(&self, interval_ms: u64, shape: &CycleShape, cache: bool) -> WakeMode {
        let mut best = None;
        for mode in WAKE_MODES {
            if mode == WakeMode::DeepSleepCached && !cache {
                continue;
            }
            let cost = self.uah_per_day_in(mode, interval_ms, shape);
            if best.is_none_or(|(_, c)| cost < c) {
                best = Some((mode, cost));
            }
        }
        best.map_or(WakeMode::DeepSleepFull, |(m, _)| m)
    }

    /// The shortest sleep worth a deep sleep and a reconnect (full or cached) rather than
    /// staying associated, ms: where the wake's charge equals the associated sleep's
    /// extra charge over deep sleep. 0 on a board whose every sleep is the same sleep.
    pub const fn deep_sleep_break_even_ms(&self, wake_uc: f64) -> u64 {
        match self.short_sleep_ua {
            Some(ua) if ua > self.sleep_ua => (wake_uc / (ua - self.sleep_ua) * 1000.0) as u64,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    const DAY_US_INT: u64 = 86_400_000_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn the_meter_splits_time_by_state() {
        let mut m = Meter::new(0, PowerState::Active);
        m.enter(10, PowerState::Rx);
        m.enter(30, PowerState::Sleep);
        m.enter(1_030, PowerState::Active);
        m.transmitted(125);
        let t = m.times();
        assert_eq!(t.active_us, 10_000);
        assert_eq!(t.radio_us, 20_000);
        assert_eq!(t.sleep_us, 1_000_000);
        assert_eq!(NRF52840.tx_us(&t), 4_000); // 125 bytes at 250 kbit/s
        assert_eq!(ESP32_C3.tx_us(&t), 1_000); // at 1 Mbit/s
        assert_eq!((t.radio_starts, t.wakes, t.short_sleeps), (1, 0, 1));
        assert_eq!(t.short_sleep_us, 1_000_000);
    }

    #[test]
    fn the_meter_counts_wakes_by_the_whole_sleep() {
        let mut m = Meter::new(0, PowerState::Active);
        m.enter(100, PowerState::Sleep);
        m.enter(100 + DEEP_SLEEP_MIN_MS, PowerState::Active); // exactly the minimum: deep
        let t0 = 100 + DEEP_SLEEP_MIN_MS;
        m.enter(t0 + 10, PowerState::Rx);
        m.enter(t0 + 20, PowerState::Tx); // RX → TX is not another start
        m.enter(t0 + 50, PowerState::Active);
        m.enter(t0 + 60, PowerState::Rx);
        m.enter(t0 + 60, PowerState::Rx); // the same state again: nothing counted
        m.enter(t0 + 100, PowerState::Active);
        m.enter(t0 + 110, PowerState::Sleep);
        m.enter(t0 + 110 + DEEP_SLEEP_MIN_MS - 1, PowerState::Active); // 1 ms short
        let t = m.times();
        assert_eq!(t.wakes, 1);
        assert_eq!(t.short_sleeps, 1);
        assert_eq!(t.short_sleep_us, (DEEP_SLEEP_MIN_MS - 1) * 1000);
        assert_eq!(t.sleep_us, (2 * DEEP_SLEEP_MIN_MS - 1) * 1000);
        assert_eq!(t.radio_starts, 2);
        assert_eq!(t.radio_us, 80_000);

        // A long sleep brought up to date in a copy (as `Device::energy` does) is time
        // asleep, not yet a wake; split into two calls it still ends as one deep sleep.
        let t1 = t0 + 110 + DEEP_SLEEP_MIN_MS - 1;
        m.enter(t1, PowerState::Sleep);
        let mut copy = m;
        copy.enter(t1 + 20_000, PowerState::Sleep);
        assert_eq!(copy.times().wakes, 1);
        assert_eq!(copy.times().short_sleeps, 1);
        assert_eq!(copy.times().sleep_us, t.sleep_us + 20_000_000);
        m.enter(t1 + 20_000, PowerState::Sleep);
        m.enter(t1 + 40_000, PowerState::Active);
        assert_eq!(m.times().wakes, 2);
        assert_eq!(m.times().short_sleeps, 1);
    }

    #[test]
    fn a_day_of_pure_sleep_costs_the_sleep_current_for_24_hours() {
        let day = StateTimes {
            sleep_us: DAY_US_INT,
            ..StateTimes::default()
        };
        for board in BOARDS {
            assert!(
                close(board.uah_per_day(&day), board.sleep_ua * 24.0),
                "{board:?}"
            );
            assert!(
                close(board.charge_uah(&day), board.sleep_ua * 24.0),
                "{board:?}"
            );
        }
        assert!(close(NRF52840.uah_per_day(&day), 75.84));
        assert!(close(ESP32_C3.uah_per_day(&day), 120.0));
        // Half a day, scaled to a day: the same.
        let half = StateTimes {
            sleep_us: DAY_US_INT / 2,
            ..StateTimes::default()
        };
        assert!(close(NRF52840.uah_per_day(&half), 75.84));
        // The same day in sleeps under 30 s keeps the ESP32-C3's Wi-Fi associated.
        let short = StateTimes {
            short_sleeps: 86_400 / 20,
            short_sleep_us: DAY_US_INT,
            ..day
        };
        assert!(close(ESP32_C3.uah_per_day(&short), 21_470.0 * 24.0));
        assert!(close(NRF52840.uah_per_day(&short), 75.84));
        assert_eq!(NRF52840.uah_per_day(&StateTimes::default()), 0.0);
    }

    #[test]
    fn a_wake_or_radio_start_adds_exactly_its_charge() {
        let day = StateTimes {
            sleep_us: DAY_US_INT - 1_000_000,
            active_us: 500_000,
            radio_us: 500_000,
            tx_bytes: 1_000,
            ..StateTimes::default()
        };
        let with_wakes = StateTimes { wakes: 10, ..day };
        let with_starts = StateTimes {
            radio_starts: 100,
            ..day
        };
        for board in BOARDS {
            let base = board.uah_per_day(&day);
            let wakes = board.uah_per_day(&with_wakes) - base;
            assert!(
                close(wakes, 10.0 * board.wake_uc / 3600.0),
                "{}",
                board.name
            );
            let starts = board.uah_per_day(&with_starts) - base;
            assert!(
                close(starts, 100.0 * board.radio_start_uc / 3600.0),
                "{}",
                board.name
            );
            assert!(close(board.wake_charge_uah(&with_wakes), wakes));
        }
        // An ESP32-C3 wake (boot, association, DHCP) is 204.3 mC = 56.75 µAh.
        assert!(close(
            ESP32_C3.uah_per_day(&with_wakes) - ESP32_C3.uah_per_day(&day),
            567.5
        ));
        // A wake from a short sleep costs nothing where the board stays associated, and
        // the wake charge where every sleep is a deep sleep.
        let short = StateTimes {
            short_sleeps: 10,
            short_sleep_us: 10_000_000,
            ..day
        };
        assert_eq!(ESP32_C3.wake_charge_uah(&short), 0.0);
        let rebooting = Board {
            wake_uc: 36.0,
            ..NRF52840
        };
        assert!(close(rebooting.wake_charge_uah(&short), 0.1));
    }

    #[test]
    fn a_node_publishing_every_minute() {
        // 5 ms CPU, 30 ms radio over 3 exchanges, 300 bytes a minute; 59.965 s asleep.
        let t = cycle(60_000, 5, 30, 3, 300);
        assert_eq!((t.wakes, t.short_sleeps, t.radio_starts), (1, 0, 3));
        let per_day = NRF52840.uah_per_day(&t);
        // Sleep 3.16 µA × 24 h ≈ 76 µAh; radio 1440 × 30 ms × ~6.5 mA ≈ 78; CPU ≈ 7;
        // radio starts 1440 × 3 × 1.2 µC ≈ 1.5.
        assert!((155.0..170.0).contains(&per_day), "{per_day}");
        let days = NRF52840.battery_days(&t, BATTERY_2XAA_MAH);
        assert!(days > 365.0 * 10.0, "{days}");
        // The ESP32-C3 pays a boot and a Wi-Fi association each minute: 1440 × 56.75
        // µAh ≈ 81.7 mAh a day, a month on 2×AA.
        let esp = ESP32_C3.uah_per_day(&t);
        let wakes = ESP32_C3.wake_charge_uah(&t) * 1440.0;
        assert!(close(wakes, 81_720.0), "{wakes}");
        assert!((82_000.0..84_000.0).contains(&esp), "{esp}");
        let days = ESP32_C3.battery_days(&t, BATTERY_2XAA_MAH);
        assert!((29.0..31.0).contains(&days), "{days}");
        // Every 20 s it never deep-sleeps: modem power-save, ~21.5 mA, no wake charge.
        let t = cycle(20_000, 5, 30, 3, 300);
        assert_eq!((t.wakes, t.short_sleeps), (0, 1));
        assert_eq!(ESP32_C3.wake_charge_uah(&t), 0.0);
        assert!(ESP32_C3.uah_per_day(&t) > 21_470.0 * 24.0);
    }

    #[test]
    fn listening_is_charged_at_the_boards_listen_current_and_starts_the_radio_once() {
        let mut m = Meter::new(0, PowerState::Active);
        m.enter(1_000, PowerState::Listen);
        m.enter(3_000, PowerState::Rx);
        m.enter(3_100, PowerState::Listen);
        m.enter(5_000, PowerState::Active);
        let t = m.times();
        assert_eq!(t.listen_us, 3_900_000);
        assert_eq!(t.radio_us, 100_000);
        assert_eq!(t.radio_starts, 1, "listen → RX → listen keeps the radio up");
        let without = StateTimes {
            listen_us: 0,
            radio_starts: 0,
            ..t
        };
        let listen_uah = ESP32_C3.charge_uah(&t)
            - ESP32_C3.charge_uah(&StateTimes {
                radio_starts: 1,
                ..without
            });
        assert!(close(listen_uah, 21_470.0 * 3.9 / 3600.0), "{listen_uah}");
    }

    /// The README's and docs/devices.md's table: µAh/day and days on 2×AA per mode at one
    /// reading a minute and one every 15 minutes (`cargo test -p pehra-device-fw --lib
    /// energy -- --nocapture` prints it).
    #[test]
    fn the_wake_mode_table() {
        for board in [ESP32_C3, NRF52840] {
            for interval_ms in [60_000, 900_000] {
                for mode in WAKE_MODES {
                    let per_day = board.uah_per_day_in(mode, interval_ms, &TYPICAL_CYCLE);
                    std::println!(
                        "{} every {} s, {:?}: {:.0} µAh/day, {:.0} days",
                        board.name,
                        interval_ms / 1000,
                        mode,
                        per_day,
                        BATTERY_2XAA_MAH * 1000.0 / per_day
                    );
                }
                std::println!(
                    "  chosen: {:?}",
                    board.choose_wake(interval_ms, &TYPICAL_CYCLE, true)
                );
                // The cached wake at the top of its range, and (not reachable by the
                // board) staying associated in light sleep.
                let variants = [
                    (
                        "cached at 100.2 mC",
                        WakeMode::DeepSleepCached,
                        Board {
                            cached_wake_uc: CACHED_WAKE_UC_HIGH,
                            ..board
                        },
                    ),
                    (
                        "associated in light sleep, DTIM 3",
                        WakeMode::StayAssociated,
                        Board {
                            short_sleep_ua: Some(ESP32_C3_LIGHT_SLEEP_DTIM3_UA),
                            ..board
                        },
                    ),
                ];
                for (what, mode, b) in variants {
                    if board.name != ESP32_C3.name {
                        break;
                    }
                    let per_day = b.uah_per_day_in(mode, interval_ms, &TYPICAL_CYCLE);
                    std::println!(
                        "  {what}: {per_day:.0} µAh/day, {:.0} days",
                        BATTERY_2XAA_MAH * 1000.0 / per_day
                    );
                }
            }
        }
    }

    #[test]
    fn the_esp32_c3_reconnects_from_its_cache_and_lasts_a_year_at_15_minutes() {
        let c = &TYPICAL_CYCLE;
        // One a minute and one every 15 min: deep sleep, reconnect from the cache.
        for interval_ms in [60_000, 900_000] {
            assert_eq!(
                ESP32_C3.choose_wake(interval_ms, c, true),
                WakeMode::DeepSleepCached
            );
            // Without a cache, the full wake still beats ~21.5 mA of modem sleep.
            assert_eq!(
                ESP32_C3.choose_wake(interval_ms, c, false),
                WakeMode::DeepSleepFull
            );
        }
        // Readings a few seconds apart: stay associated.
        assert_eq!(
            ESP32_C3.choose_wake(1_000, c, true),
            WakeMode::StayAssociated
        );
        assert_eq!(
            ESP32_C3.choose_wake(5_000, c, false),
            WakeMode::StayAssociated
        );
        // The goal: ≥ 1 year on 2×AA at one reading every 15 min, also with the cached
        // wake at the top of its range (the measured static-IP wake).
        let days = |board: &Board| {
            BATTERY_2XAA_MAH * 1000.0 / board.uah_per_day_in(WakeMode::DeepSleepCached, 900_000, c)
        };
        assert!(days(&ESP32_C3) > 365.0 * 3.0, "{}", days(&ESP32_C3));
        let high = Board {
            cached_wake_uc: CACHED_WAKE_UC_HIGH,
            ..ESP32_C3
        };
        assert!(days(&high) > 365.0 * 1.5, "{}", days(&high));
        // A full wake every 15 min would also pass, barely (the old figure: 15 months).
        let full = BATTERY_2XAA_MAH * 1000.0
            / ESP32_C3.uah_per_day_in(WakeMode::DeepSleepFull, 900_000, c);
        assert!((365.0..500.0).contains(&full), "{full}");
        // The mode's figure agrees with the meter's at a full wake (the old model).
        let t = cycle(900_000, 5, 30, 3, 300);
        assert!(close(
            ESP32_C3.uah_per_day(&t),
            ESP32_C3.uah_per_day_in(WakeMode::DeepSleepFull, 900_000, c)
        ));
    }

    #[test]
    fn a_cached_wake_renews_the_lease_once_per_lease_cache_time() {
        let at = |interval_ms| ESP32_C3.wake_cost_uc(WakeMode::DeepSleepCached, interval_ms);
        // Every 15 min: 1 full wake in 4.
        assert!(close(
            at(900_000),
            0.25 * ESP32_C3.wake_uc + 0.75 * ESP32_C3.cached_wake_uc
        ));
        // At or past the cache time every wake is a full one.
        assert!(close(at(LEASE_CACHE_MS), ESP32_C3.wake_uc));
        assert!(close(at(2 * LEASE_CACHE_MS), ESP32_C3.wake_uc));
        assert_eq!(ESP32_C3.wake_cost_uc(WakeMode::StayAssociated, 60_000), 0.0);
    }

    #[test]
    fn the_break_even_sleep() {
        // A cached wake (32.1 mC) pays for itself after ~1.5 s of modem sleep (21.465 mA
        // over deep sleep), a full one (204.3 mC) after ~9.5 s.
        assert_eq!(
            ESP32_C3.deep_sleep_break_even_ms(ESP32_C3.cached_wake_uc),
            1_495
        );
        assert_eq!(ESP32_C3.deep_sleep_break_even_ms(ESP32_C3.wake_uc), 9_517);
        assert_eq!(NRF52840.deep_sleep_break_even_ms(1_000.0), 0);
    }
}
