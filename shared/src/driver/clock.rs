//! The drivers' clocks: the wall clock (milliseconds since the Unix epoch, read in one
//! place) and the long sleeps of an idle process.
//!
//! The sans-IO machines never read a clock; their drivers feed them [`unix_ms`]. A
//! simulation installs its own clock on its thread ([`set_wall_clock`]), as it installs
//! its sockets ([`super::socket`]): simulated time, stepped as an NTP correction would
//! step it.
//!
//! [`sleep_until`] is for the periodic timers of an idle process (session heartbeats):
//! tokio's timer wheel fires a sleep of seconds in two or three steps, each a wake-up of
//! the thread (it cascades the entry down its levels), where a kernel timer fires once
//! (issue 19 counts wake-ups).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Whether [`sleep_until`] may use a kernel timer (see [`use_kernel_timers`]).
static KERNEL_TIMERS: AtomicBool = AtomicBool::new(false);

/// Lets [`sleep_until`] use a kernel timer (Linux: a timerfd in tokio's reactor). A
/// process's `main` turns it on; off (the default), it is tokio's sleep, which follows
/// tokio's paused clock in tests and a simulation's time.
pub fn use_kernel_timers(on: bool) {
    KERNEL_TIMERS.store(on, Ordering::Relaxed);
}

/// Sleeps until `deadline`, waking the thread once when it comes: a kernel timer when
/// [`use_kernel_timers`] is on and no simulation clock is installed on this thread,
/// tokio's sleep otherwise (or if the kernel timer cannot be made). Cancel-safe.
pub async fn sleep_until(deadline: tokio::time::Instant) {
    #[cfg(target_os = "linux")]
    if KERNEL_TIMERS.load(Ordering::Relaxed) && CLOCK.with(|c| c.borrow().is_none()) {
        match kernel_sleep_until(deadline).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "kernel timer unavailable; tokio's sleep"),
        }
    }
    tokio::time::sleep_until(deadline).await
}

/// A one-shot timerfd (`CLOCK_MONOTONIC`, the clock of `std::time::Instant` and tokio's)
/// set to `deadline`, awaited through tokio's reactor.
#[cfg(target_os = "linux")]
async fn kernel_sleep_until(deadline: tokio::time::Instant) -> std::io::Result<()> {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
    if wait.is_zero() {
        return Ok(());
    }
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let spec = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: wait.subsec_nanos().into(),
        },
    };
    timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec)?;
    // SAFETY: `timer` is an open descriptor the `AsyncFd` owns from here on, so it stays
    // open and the same until the `AsyncFd` is dropped (an `OwnedFd` never changes).
    let timer = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(timer, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    loop {
        let mut ready = timer.readable().await?;
        let mut expirations = [0u8; 8];
        match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
            Ok(result) => return result.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
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

    /// The voluntary context switches of the calling thread so far.
    #[cfg(target_os = "linux")]
    fn voluntary_switches() -> u64 {
        std::fs::read_to_string("/proc/thread-self/status")
            .expect("/proc/thread-self/status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    /// The kernel timer wakes the thread once and not before the deadline; tokio's
    /// timer wheel wakes it at each level it cascades through (printed, not asserted:
    /// it is one wake-up when the deadline happens to fall on a slot boundary).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_kernel_timer_wakes_its_thread_once_at_the_deadline() {
        use_kernel_timers(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let wait = std::time::Duration::from_millis(300);
        let (kernel, tokio_wheel) = runtime.block_on(async {
            // Settle: the runtime's first park.
            tokio::task::yield_now().await;
            let before = voluntary_switches();
            let start = std::time::Instant::now();
            sleep_until(tokio::time::Instant::now() + wait).await;
            assert!(start.elapsed() >= wait, "woke early: {:?}", start.elapsed());
            let kernel = voluntary_switches() - before;
            let before = voluntary_switches();
            tokio::time::sleep(wait).await;
            (kernel, voluntary_switches() - before)
        });
        std::eprintln!("wake-ups for a 300 ms sleep: kernel timer {kernel}, tokio's {tokio_wheel}");
        assert_eq!(kernel, 1, "wake-ups of the kernel timer");
    }
}
