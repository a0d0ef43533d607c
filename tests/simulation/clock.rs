//! The simulation's wall clock: turmoil's simulated time since the epoch (so the PEHRA
//! terms, the alarms and the record timestamps move with simulated time), plus the steps
//! of the seed's clock faults, installed on the simulation's thread.

use pehra_shared::driver::clock;
use std::cell::Cell;
use std::rc::Rc;

std::thread_local! {
    /// How far the clock is stepped now, ms.
    static OFFSET_MS: Cell<i64> = const { Cell::new(0) };
}

/// Installs the clock on this thread; removed when the returned guard is dropped.
pub fn install() -> Installed {
    OFFSET_MS.with(|o| o.set(0));
    clock::set_wall_clock(Some(Rc::new(|| {
        let simulated = turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64);
        simulated.saturating_add_signed(OFFSET_MS.with(Cell::get))
    })));
    Installed
}

/// Steps every host's wall clock by `by_ms` (negative: back), as an NTP correction does.
pub fn step(by_ms: i64) {
    OFFSET_MS.with(|o| o.set(o.get() + by_ms));
}

/// Removes what [`install`] installed, when dropped.
pub struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        clock::set_wall_clock(None);
        OFFSET_MS.with(|o| o.set(0));
    }
}
