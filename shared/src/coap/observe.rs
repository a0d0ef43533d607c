//! Observe (RFC 7641) helpers: the notification freshness rule and sequence numbers.

use crate::{Duration, Instant};

/// Observe sequence numbers are 24-bit.
pub const SEQUENCE_MODULUS: u32 = 1 << 24;

/// RFC 7641 §3.4: whether a notification with sequence number `v2` that arrived at `t2`
/// is newer than the last one (`v1`, arrived at `t1`). A notification that is not newer
/// is stale and must be dropped.
pub fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant) -> bool {
    const HALF: u32 = 1 << 23;
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF) || t2 > t1 + Duration::from_secs(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_rfc7641_section_3_4() {
        let t = Instant::from_millis(1_000);
        assert!(is_fresh(5, t, 6, t));
        assert!(!is_fresh(6, t, 5, t), "older number is stale");
        assert!(!is_fresh(6, t, 6, t), "same number is stale");
        assert!(
            is_fresh(SEQUENCE_MODULUS - 1, t, 0, t),
            "wrap-around is newer"
        );
        assert!(
            !is_fresh(0, t, (1 << 23) + 1, t),
            "too far ahead counts as older"
        );
        assert!(
            is_fresh(6, t, 5, t + Duration::from_secs(129)),
            "128 s later anything goes"
        );
    }
}
