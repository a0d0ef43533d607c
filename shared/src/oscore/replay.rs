//! The recipient's replay window (RFC 8613 §7.4, the RFC 6347 sliding window) and its
//! persisted high-water mark (the simple variant of Appendix B.1.2).

use super::error::OscoreError;
use super::sequence::{Persist, Persistence};

/// How many Partial IVs below the highest one are remembered (RFC 8613 asks for 32).
pub const WINDOW_SIZE: u64 = 64;

/// A sliding window over received Partial IVs: the highest one, and a bit for each of the
/// [`WINDOW_SIZE`] below it. Anything older than the window, or below the floor set by a
/// restore, is refused as [`OscoreError::TooOld`]; anything seen is
/// [`OscoreError::Replayed`].
///
/// [`ReplayWindow::check`] only looks; [`ReplayWindow::accept`] records. The caller
/// verifies the AEAD tag in between, so a forged message never moves the window.
///
/// After a restart (B.1.2, simple variant) the window is rebuilt from the persisted
/// high-water mark H: every Partial IV below H + interval is refused, since any of them
/// may have been accepted before the restart. A client whose sequence number sits in that
/// gap loses those requests (4.01 Replay detected) until its numbers pass the floor; the
/// Echo round trip of B.1.2, which avoids that, is not implemented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest accepted Partial IV.
    highest: Option<u64>,
    /// Bit i set: `highest - i` was accepted (bit 0 is `highest` itself).
    seen: u64,
    /// Everything below this is refused (0 for a fresh context).
    floor: u64,
    /// The interval, or `None` when nothing is persisted.
    interval: Option<u64>,
    /// The last high-water mark reported for storing.
    stored: Option<u64>,
}

impl ReplayWindow {
    /// An empty window accepting every Partial IV once.
    pub fn new(persistence: Option<&Persistence>) -> Self {
        ReplayWindow {
            highest: None,
            seen: 0,
            floor: 0,
            interval: persistence.map(|p| p.replay_interval.max(1)),
            stored: None,
        }
    }

    /// The window after a restart, from the last stored high-water mark (`None`: nothing
    /// was ever accepted with persistence on, so nothing is refused).
    pub fn restore(stored: Option<u64>, persistence: &Persistence) -> Self {
        let interval = persistence.replay_interval.max(1);
        ReplayWindow {
            highest: None,
            seen: 0,
            floor: stored.map_or(0, |h| h.saturating_add(interval)),
            interval: Some(interval),
            stored,
        }
    }

    /// A window that has accepted `piv` and refuses everything at or below it: a server
    /// that lost its window (a restart) makes one after verifying that the request with
    /// Partial IV `piv` is fresh (it carries the server's current Echo value, RFC 9175 and
    /// RFC 8613 Appendix B.1.2).
    pub fn fresh_from(piv: u64) -> Self {
        ReplayWindow {
            highest: Some(piv),
            seen: 1,
            floor: piv,
            interval: None,
            stored: None,
        }
    }

    /// The highest Partial IV accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// The lowest Partial IV this window can still accept.
    pub fn floor(&self) -> u64 {
        let below_window = self
            .highest
            .map_or(0, |h| h.saturating_sub(WINDOW_SIZE - 1));
        self.floor.max(below_window)
    }

    /// Whether `piv` would be accepted; changes nothing.
    pub fn check(&self, piv: u64) -> Result<(), OscoreError> {
        if piv < self.floor() {
            return Err(OscoreError::TooOld);
        }
        match self.highest {
            Some(h) if piv <= h => {
                if self.seen >> (h - piv) & 1 == 1 {
                    Err(OscoreError::Replayed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Records `piv` (after [`Self::check`] and a verified tag). Returns the high-water
    /// mark to store first, when one is due.
    pub fn accept(&mut self, piv: u64) -> Result<Option<Persist>, OscoreError> {
        self.check(piv)?;
        match self.highest {
            Some(h) if piv <= h => self.seen |= 1 << (h - piv),
            Some(h) => {
                let shift = piv - h;
                self.seen = if shift >= WINDOW_SIZE {
                    1
                } else {
                    (self.seen << shift) | 1
                };
                self.highest = Some(piv);
            }
            None => {
                self.seen = 1;
                self.highest = Some(piv);
            }
        }
        let Some(interval) = self.interval else {
            return Ok(None);
        };
        let due = match self.stored {
            None => true,
            Some(s) => piv >= s.saturating_add(interval),
        };
        if due {
            let mark = self.highest.unwrap_or(piv);
            self.stored = Some(mark);
            return Ok(Some(Persist::ReplayHighWater(mark)));
        }
        Ok(None)
    }
}
