//! The drivers' wall clock: milliseconds since the Unix epoch, read in one place.
//!
//! The sans-IO machines never read a clock; their drivers feed them [`unix_ms`]. A
//! simulation installs its own clock on its thread ([`set_wall_clock`]), as it installs
//! its sockets ([`super::socket`]): simulated time, stepped as an NTP correction would
//! step it.

use std::cell::RefCell;
use std::rc::Rc;

/// A wall clock: milliseconds since the Unix epoch.
pub type WallClock = Rc<dyn Fn() -> u64>;

std::thread_local! {
    static CLOCK: RefCell<Option<WallClock>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the wall clock of this thread: [`unix_ms`] asks it
/// instead of the operating system. For a simulation only.
pub fn set_wall_clock(clock: Option<WallClock>) {
    CLOCK.with(|c| *c.borrow_mut() = clock);
}

/// Milliseconds since the Unix epoch: the operating system's clock, or the clock of a
/// simulation on this thread. 0 if the system clock is set before 1970.
pub fn unix_ms() -> u64 {
    if let Some(clock) = CLOCK.with(|c| c.borrow().clone()) {
        return clock();
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_ms`] as a [`UnixMs`](crate::time::UnixMs), the time the sans-IO machines take.
pub fn now() -> crate::time::UnixMs {
    crate::time::UnixMs::from_millis(unix_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_clock_replaces_the_system_clock_on_its_thread_only() {
        let real = unix_ms();
        assert!(real > 1_600_000_000_000, "the system clock: {real}");
        set_wall_clock(Some(Rc::new(|| 42)));
        assert_eq!(unix_ms(), 42);
        let other = std::thread::spawn(unix_ms).join().expect("thread");
        assert!(other >= real, "another thread keeps the system clock");
        set_wall_clock(None);
        assert!(unix_ms() >= real);
    }
}
