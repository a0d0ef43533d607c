//! The nRF52840-DK's sensor (the die temperature) and application (downlink records
//! logged). Its other parts: the radio hook is [`crate::ieee802154::RadioSwitch`], the
//! UDP socket the core's `pehra_device_fw::net::EmbassyUdp` (IPv6 over 6LoWPAN), the
//! storage the core's `RamStorage`.

use alloc::vec::Vec;
use core::convert::Infallible;

use embassy_nrf::temp::Temp;
use pehra_device_fw::{Application, Sensor, SetInterval, Settings};
use pehra_shared::wire::Record;

// ---------------------------------------------------------------------------------------
// Sensor: the die temperature (TEMP peripheral, 0.25 °C steps; the chip's, not the air's).

/// [`Sensor`] on the nRF52840's TEMP: each reading is `seq=N t=DD.D` (°C, text, as the
/// ESP32-C3 board's). Battery: unknown (the DK runs from USB or a coin cell with no
/// gauge; the SAADC could measure VDD, not done here).
pub struct DieTemperature(pub Temp<'static>);

impl Sensor for DieTemperature {
    type Error = Infallible;

    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        // Quarter degrees (I30F2's bits) to tenths, without float formatting.
        let deci = self.0.read().await.to_bits() * 10 / 4;
        let sign = if deci < 0 { "-" } else { "" };
        let deci = deci.unsigned_abs();
        Ok(alloc::format!("seq={seq} t={sign}{}.{}", deci / 10, deci % 10).into_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// Application: log each downlink record, then obey `set-interval N`.

/// Logs each downlink record's text (defmt), then lets [`SetInterval`] obey it.
pub struct LoggingApp;

impl Application for LoggingApp {
    fn on_downlink(&mut self, offset: u64, record: &Record, settings: &mut Settings) {
        defmt::info!(
            "downlink @{}: {}",
            offset,
            core::str::from_utf8(&record.value).unwrap_or("(not UTF-8)")
        );
        SetInterval.on_downlink(offset, record, settings);
    }
}
