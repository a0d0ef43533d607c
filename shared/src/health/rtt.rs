//! A sliding window of round-trip times and its standard deviation: seed 002's measure
//! of network stability, in integers (microseconds; the square root is `u128::isqrt`).

use alloc::collections::VecDeque;

/// The last `capacity` round-trip times, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RttWindow {
    capacity: usize,
    samples: VecDeque<u32>,
}

impl RttWindow {
    /// An empty window keeping the last `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> RttWindow {
        let capacity = capacity.max(1);
        RttWindow {
            capacity,
            samples: VecDeque::with_capacity(capacity),
        }
    }

    /// How many samples the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many samples it holds now.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds a round-trip time in microseconds, forgetting the oldest if full.
    pub fn push_us(&mut self, rtt_us: u32) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt_us);
    }

    /// Adds a round-trip time in milliseconds.
    pub fn push_ms(&mut self, rtt_ms: u32) {
        self.push_us(rtt_ms.saturating_mul(1000));
    }

    /// The mean, µs; 0 when empty.
    pub fn mean_us(&self) -> u32 {
        if self.samples.is_empty() {
            return 0;
        }
        let sum: u64 = self.samples.iter().map(|s| u64::from(*s)).sum();
        (sum / self.samples.len() as u64) as u32
    }

    /// The population standard deviation, µs (rounded down); 0 with fewer than two
    /// samples.
    pub fn stddev_us(&self) -> u32 {
        let n = self.samples.len() as u128;
        if n < 2 {
            return 0;
        }
        let sum: u128 = self.samples.iter().map(|s| u128::from(*s)).sum();
        let sum_sq: u128 = self.samples.iter().map(|s| u128::from(*s).pow(2)).sum();
        // n²·variance = n·Σx² − (Σx)², exact in integers.
        let scaled = n * sum_sq - sum * sum;
        ((scaled / (n * n)).isqrt()) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_link_has_no_deviation() {
        let mut w = RttWindow::new(8);
        for _ in 0..20 {
            w.push_ms(12);
        }
        assert_eq!(w.len(), 8);
        assert_eq!(w.mean_us(), 12_000);
        assert_eq!(w.stddev_us(), 0);
    }

    #[test]
    fn the_deviation_is_the_population_standard_deviation() {
        // 2, 4, 4, 4, 5, 5, 7, 9 ms: mean 5 ms, standard deviation 2 ms exactly.
        let mut w = RttWindow::new(8);
        for ms in [2, 4, 4, 4, 5, 5, 7, 9] {
            w.push_ms(ms);
        }
        assert_eq!(w.mean_us(), 5_000);
        assert_eq!(w.stddev_us(), 2_000);
    }

    #[test]
    fn old_samples_slide_out() {
        let mut w = RttWindow::new(4);
        for ms in [1, 100, 1, 100] {
            w.push_ms(ms);
        }
        assert_eq!(w.stddev_us(), 49_500);
        for _ in 0..4 {
            w.push_ms(10);
        }
        assert_eq!(w.stddev_us(), 0);
    }

    #[test]
    fn fewer_than_two_samples_have_no_deviation_and_extremes_do_not_overflow() {
        let mut w = RttWindow::new(0);
        assert_eq!(w.capacity(), 1);
        assert!(w.is_empty());
        assert_eq!((w.mean_us(), w.stddev_us()), (0, 0));
        w.push_us(u32::MAX);
        assert_eq!(w.stddev_us(), 0);
        let mut w = RttWindow::new(2);
        w.push_us(0);
        w.push_us(u32::MAX);
        assert_eq!(w.stddev_us(), u32::MAX / 2);
    }
}
