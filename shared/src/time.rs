//! Time as plain numbers: the sans-IO core never reads a clock.
//!
//! An [`Instant`] is a count of microseconds since an epoch the caller chooses (process
//! start on a gateway, boot on a microcontroller). Only differences between instants are
//! meaningful.

pub use core::time::Duration;

/// A point in time, in microseconds since a caller-chosen epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch (rounded down).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(rhs.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

impl core::ops::AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl core::ops::Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// A wall-clock time: milliseconds since the Unix epoch (1970-01-01 UTC). The time of
/// the machines whose deadlines are shared between hosts or stored (PEHRA's terms and
/// the brokers' alarms), and of a gateway's clock as a device learns it; an [`Instant`]
/// is the time of everything else (a device's own schedule included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMs(u64);

impl UnixMs {
    /// `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        UnixMs(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl core::fmt::Display for UnixMs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// How far back the wall clock must go between two readings to count as a step (an NTP
/// correction, a gateway without a real-time clock setting its time), ms. Smaller
/// differences are readings taken on different threads arriving out of order.
pub const CLOCK_STEP_MS: u64 = 1_000;

/// Watches the wall-clock readings (milliseconds since the Unix epoch) a sans-IO machine
/// is fed, and tells it when the clock stepped back, so it can move the times it derived
/// from the old clock by the same amount: each wait then keeps what was left of it
/// instead of growing by the step. A step forward is not reported: it cannot be told
/// from a long pause, and it only makes deadlines come early.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockSteps {
    latest_ms: Option<u64>,
}

impl ClockSteps {
    /// A watch whose first reading is `now`.
    pub fn starting_at(now: UnixMs) -> Self {
        ClockSteps {
            latest_ms: Some(now.0),
        }
    }

    /// Feeds a reading; `Some(back)` if the clock stepped back by `back` ms since the
    /// latest reading (by more than [`CLOCK_STEP_MS`]).
    pub fn observe(&mut self, now: UnixMs) -> Option<u64> {
        let now_ms = now.0;
        match self.latest_ms {
            Some(latest) if now_ms.saturating_add(CLOCK_STEP_MS) < latest => {
                self.latest_ms = Some(now_ms);
                Some(latest - now_ms)
            }
            Some(latest) => {
                self.latest_ms = Some(latest.max(now_ms));
                None
            }
            None => {
                self.latest_ms = Some(now_ms);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_millis(2), Instant::from_millis(7));
        assert_eq!(Instant::from_millis(3) - t, Duration::ZERO);
        assert_eq!(t - Instant::from_millis(3), Duration::from_millis(2));
        assert_eq!(
            Instant::from_micros(u64::MAX) + Duration::from_secs(1),
            Instant::from_micros(u64::MAX)
        );
    }

    #[test]
    fn a_clock_step_back_is_reported_once_and_small_disorder_is_not() {
        const T: u64 = 1_700_000_000_000;
        let mut steps = ClockSteps::starting_at(UnixMs(T));
        assert_eq!(steps.observe(UnixMs(T + 500)), None);
        // Readings from two threads, out of order by less than a step.
        assert_eq!(steps.observe(UnixMs(T + 100)), None);
        assert_eq!(steps.observe(UnixMs(T + 600)), None);
        // An NTP correction of an hour.
        assert_eq!(steps.observe(UnixMs(T + 600 - 3_600_000)), Some(3_600_000));
        assert_eq!(steps.observe(UnixMs(T + 700 - 3_600_000)), None);
        // Forward steps are not reported.
        assert_eq!(steps.observe(UnixMs(T + 86_400_000)), None);
        assert_eq!(steps.observe(UnixMs(T + 86_400_000 - 999)), None);
    }
}
