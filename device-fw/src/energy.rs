//! The energy model: per-board currents in each power state, the time a device spent in
//! each ([`Meter`]), and what that costs a day and how long 2×AA last.
//!
//! Four states: deep **sleep**, CPU **active** with the radio off, radio **RX**
//! (listening: waiting for an answer, or kept awake by `stay_awake`/`wake_now`) and
//! radio **TX**. The time in TX is the airtime of the bytes sent at the board's radio bit
//! rate, taken out of the RX time around it. The currents are the datasheets' typical
//! figures at 3 V (3.3 V for the ESP32-C3); the RX and TX figures include the CPU that
//! runs the network stack meanwhile.
//!
//! Not modelled: the radio's bring-up after deep sleep (a Wi-Fi association on the
//! ESP32-C3 costs far more than one exchange; an 802.15.4/Thread radio re-attaches
//! cheaply), regulator losses and the batteries' self-discharge.

/// A power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Deep sleep, RTC running, state kept.
    Sleep,
    /// CPU running, radio off.
    Active,
    /// Radio receiving (listening).
    Rx,
    /// Radio transmitting.
    Tx,
}

/// Time spent per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateTimes {
    /// Deep sleep, µs.
    pub sleep_us: u64,
    /// CPU active, radio off, µs.
    pub active_us: u64,
    /// Radio on (RX, TX airtime included until [`Board::split`]), µs.
    pub radio_us: u64,
    /// Bytes transmitted (their airtime is the TX time).
    pub tx_bytes: u64,
}

impl StateTimes {
    /// The total time covered, µs.
    pub fn total_us(&self) -> u64 {
        self.sleep_us + self.active_us + self.radio_us
    }

    /// Adds another's times.
    pub fn add(&mut self, other: &StateTimes) {
        self.sleep_us += other.sleep_us;
        self.active_us += other.active_us;
        self.radio_us += other.radio_us;
        self.tx_bytes += other.tx_bytes;
    }
}

/// Accounts the time a device spends per state, from the node loop's transitions.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    state: PowerState,
    since_ms: u64,
    times: StateTimes,
}

impl Meter {
    /// A meter starting in `state` at `now_ms`.
    pub fn new(now_ms: u64, state: PowerState) -> Self {
        Meter {
            state,
            since_ms: now_ms,
            times: StateTimes::default(),
        }
    }

    /// The state now.
    pub fn state(&self) -> PowerState {
        self.state
    }

    /// Enters `state` at `now_ms` (the time since the last change goes to the old one).
    pub fn enter(&mut self, now_ms: u64, state: PowerState) {
        let us = now_ms.saturating_sub(self.since_ms).saturating_mul(1000);
        match self.state {
            PowerState::Sleep => self.times.sleep_us += us,
            PowerState::Active => self.times.active_us += us,
            PowerState::Rx | PowerState::Tx => self.times.radio_us += us,
        }
        self.since_ms = self.since_ms.max(now_ms);
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

/// A board's currents per state, µA, and its radio's bit rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Board {
    /// Its name.
    pub name: &'static str,
    /// Deep sleep, µA.
    pub sleep_ua: f64,
    /// CPU active, radio off, µA.
    pub active_ua: f64,
    /// Radio receiving (CPU included), µA.
    pub rx_ua: f64,
    /// Radio transmitting (CPU included), µA.
    pub tx_ua: f64,
    /// The radio's bit rate, kbit/s (TX airtime).
    pub radio_kbps: u64,
}

/// ESP32-C3 (Wi-Fi 802.11b/g/n), from Espressif's *ESP32-C3 Series Datasheet* (v1.x),
/// chapter "Electrical Characteristics".
pub const ESP32_C3: Board = Board {
    name: "ESP32-C3",
    // "Current Consumption in Low-Power Modes": Deep-sleep (RTC timer + RTC memory), 5 µA.
    sleep_ua: 5.0,
    // "Current Consumption in Modem-sleep Mode": CPU at 160 MHz, peripheral clocks
    // disabled, about 20 mA (typ.).
    active_ua: 20_000.0,
    // "Wi-Fi Current Consumption" (RF current consumption): RX 802.11b/g/n HT20, 84 mA.
    rx_ua: 84_000.0,
    // Same table: TX 802.11b 1 Mbps at 21 dBm, 335 mA (the worst case the table lists).
    tx_ua: 335_000.0,
    // 802.11b 1 Mbps, the rate of that TX figure.
    radio_kbps: 1_000,
};

/// nRF52840 (BLE / 802.15.4), from Nordic's *nRF52840 Product Specification* (v1.x),
/// section "Current consumption" (electrical specification of the power management and
/// radio chapters), DC/DC on, 3 V.
pub const NRF52840: Board = Board {
    name: "nRF52840",
    // I_ON_RAMON_RTC: System ON, full RAM retention, RTC running, 3.16 µA.
    sleep_ua: 3.16,
    // CPU running CoreMark from flash at 64 MHz, DC/DC (I_CPU), 3.3 mA.
    active_ua: 3_300.0,
    // I_RX,1M,DCDC 4.6 mA (radio) + the CPU (3.3 mA) running the stack.
    rx_ua: 4_600.0 + 3_300.0,
    // I_TX,0dBm,DCDC 4.8 mA (radio) + the CPU (3.3 mA).
    tx_ua: 4_800.0 + 3_300.0,
    // BLE 1 Mbit/s, the mode of those figures.
    radio_kbps: 1_000,
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

/// The battery assumed: 2×AA alkaline in series (3 V), 2500 mAh.
pub const BATTERY_2XAA_MAH: f64 = 2500.0;

/// Microseconds in a day.
const DAY_US: f64 = 86_400.0 * 1e6;

impl Board {
    /// The TX airtime of `times.tx_bytes`, µs (at most the radio time).
    pub fn tx_us(&self, times: &StateTimes) -> u64 {
        (times.tx_bytes.saturating_mul(8_000) / self.radio_kbps.max(1)).min(times.radio_us)
    }

    /// The charge drawn over `times`, µAh.
    pub fn charge_uah(&self, times: &StateTimes) -> f64 {
        let tx = self.tx_us(times);
        let rx = times.radio_us - tx;
        let ua_us = self.sleep_ua * times.sleep_us as f64
            + self.active_ua * times.active_us as f64
            + self.rx_ua * rx as f64
            + self.tx_ua * tx as f64;
        ua_us / 3.6e9
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
/// (reading, encoding, CBOR), `radio_ms` of radio (three exchanges: check-in, readings,
/// downlink) and `tx_bytes` sent; the rest deep sleep.
pub fn cycle(interval_ms: u64, awake_ms: u64, radio_ms: u64, tx_bytes: u64) -> StateTimes {
    StateTimes {
        sleep_us: interval_ms.saturating_sub(awake_ms + radio_ms) * 1000,
        active_us: awake_ms * 1000,
        radio_us: radio_ms * 1000,
        tx_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(NRF52840.tx_us(&t), 1_000);
    }

    #[test]
    fn a_node_publishing_every_minute_lasts_years_on_an_nrf52840() {
        // 5 ms CPU, 30 ms radio, 300 bytes a minute.
        let t = cycle(60_000, 5, 30, 300);
        let per_day = NRF52840.uah_per_day(&t);
        // Sleep: 3.16 µA × 24 h ≈ 76 µAh; radio: 1440 × 30 ms × ~7.9 mA ≈ 95 µAh; CPU ≈ 7.
        assert!((150.0..250.0).contains(&per_day), "{per_day}");
        let days = NRF52840.battery_days(&t, BATTERY_2XAA_MAH);
        assert!(days > 365.0 * 10.0, "{days}");
        // Wi-Fi costs far more.
        assert!(ESP32_C3.uah_per_day(&t) > 5.0 * per_day);
        assert_eq!(NRF52840.uah_per_day(&StateTimes::default()), 0.0);
    }
}
