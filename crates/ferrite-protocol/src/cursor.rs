//! The `electric-cursor` value for live requests.
//!
//! All clients polling in the same long-poll window ask for the same URL (so a CDN can collapse
//! them), and a client never re-requests the cursor it just used (so it never hits its own cached
//! response). Epoch 2024-10-09T00:00:00Z, buckets of the long-poll timeout.

/// Unix seconds of 2024-10-09T00:00:00Z.
const CURSOR_EPOCH_SECS: u64 = 1_728_432_000;

/// Next cursor for a live response given the time, the long-poll timeout and the client's cursor.
///
/// `previous` comes from the request, so any `u64` is possible: a bump that would overflow gives
/// the time bucket instead (different from `previous`, which is all a client needs).
pub fn next_cursor(now_unix_secs: u64, long_poll_timeout_ms: u64, previous: Option<u64>, jitter: u64) -> u64 {
    let secs = long_poll_timeout_ms / 1000;
    if secs == 0 {
        return 0;
    }
    let diff = now_unix_secs.saturating_sub(CURSOR_EPOCH_SECS);
    let next = diff.div_ceil(secs) * secs;
    match previous {
        Some(prev) if next <= prev => prev.checked_add(1 + jitter % 3600).unwrap_or(next),
        _ => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_buckets_and_strictly_increases() {
        let t = CURSOR_EPOCH_SECS + 41;
        assert_eq!(next_cursor(t, 20_000, None, 0), 60);
        assert_eq!(next_cursor(t + 5, 20_000, None, 0), 60);
        let bumped = next_cursor(t, 20_000, Some(60), 7);
        assert!(bumped > 60 && bumped <= 60 + 3600);
        assert_eq!(next_cursor(t, 500, None, 0), 0);
        // A client-supplied cursor at the end of the range does not overflow.
        assert_eq!(next_cursor(t, 20_000, Some(u64::MAX), 7), 60);
        assert_eq!(next_cursor(t, 20_000, Some(u64::MAX - 1), 3599), 60);
    }
}
