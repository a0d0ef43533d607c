//! embassy-time on the Cortex-M SysTick: a 1 kHz periodic tick counted into 64 bits.
//!
//! The SysTick fires every millisecond (25 MHz core clock on the MPS2 boards, and under
//! QEMU); its handler adds one to the tick count and, when the earliest deadline in the
//! timer queue has come, wakes the expired timers. `now()` is that count (embassy-time
//! runs at `tick-hz-1_000`). Simple rather than tickless: a real low-power board would
//! program a one-shot RTC alarm instead.

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock of the MPS2 FPGA images (and QEMU's model of them).
pub const CORE_HZ: u32 = 25_000_000;
/// Tick rate; must match the embassy-time-driver `tick-hz-*` feature.
pub const TICK_HZ: u32 = 1_000;

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    /// The earliest deadline in `queue` (u64::MAX: none).
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let now = self.ticks.borrow(cs).get();
                // Wakes at once whatever is already due (`at <= now` included).
                self.alarm.borrow(cs).set(queue.next_expiration(now));
            }
        })
    }
}

/// SysTick interrupts taken (for the end-of-run report).
pub static TICKS_TAKEN: AtomicU32 = AtomicU32::new(0);

/// Starts the 1 kHz SysTick. Call once, before the executor runs.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / TICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Called from the SysTick exception handler.
pub fn on_tick() {
    TICKS_TAKEN.fetch_add(1, Ordering::Relaxed);
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        let alarm = DRIVER.alarm.borrow(cs);
        if now >= alarm.get() {
            let next = DRIVER.queue.borrow(cs).borrow_mut().next_expiration(now);
            alarm.set(next);
        }
    });
}
