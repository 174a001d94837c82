//! The `electric-cursor` value for live requests.
//!
//! All clients polling in the same long-poll window ask for the same URL (so a CDN can collapse
//! them), and a client never re-requests the cursor it just used (so it never hits its own cached
//! response). Epoch 2024-10-09T00:00:00Z, buckets of the long-poll timeout.
//!
//! The value depends only on the time and the request (no randomness of the node answering), so
//! every node behind one cache answers the same URL with the same cursor.

/// Unix seconds of 2024-10-09T00:00:00Z.
const CURSOR_EPOCH_SECS: u64 = 1_728_432_000;

/// Next cursor for a live response given the time, the long-poll timeout and the client's cursor.
///
/// When the client's cursor is already at or past the time bucket, the answer is the client's
/// plus 1–3600, picked by hashing the client's cursor: spread out like a random bump, but the
/// same on every node.
///
/// `previous` comes from the request, so any `u64` is possible: a bump that would overflow gives
/// the time bucket instead (different from `previous`, which is all a client needs).
pub fn next_cursor(now_unix_secs: u64, long_poll_timeout_ms: u64, previous: Option<u64>) -> u64 {
    let secs = long_poll_timeout_ms / 1000;
    if secs == 0 {
        return 0;
    }
    let diff = now_unix_secs.saturating_sub(CURSOR_EPOCH_SECS);
    let next = diff.div_ceil(secs) * secs;
    match previous {
        Some(prev) if next <= prev => prev.checked_add(1 + mix(prev) % 3600).unwrap_or(next),
        _ => next,
    }
}

/// SplitMix64's finaliser: nearby cursors get unrelated bumps.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_buckets_and_strictly_increases() {
        let t = CURSOR_EPOCH_SECS + 41;
        assert_eq!(next_cursor(t, 20_000, None), 60);
        assert_eq!(next_cursor(t + 5, 20_000, None), 60);
        let bumped = next_cursor(t, 20_000, Some(60));
        assert!(bumped > 60 && bumped <= 60 + 3600);
        assert_eq!(next_cursor(t, 500, None), 0);
        // A client-supplied cursor at the end of the range does not overflow.
        assert_eq!(next_cursor(t, 20_000, Some(u64::MAX)), 60);
        assert_eq!(next_cursor(t, 20_000, Some(u64::MAX - 1)), 60);
    }

    #[test]
    fn a_bump_is_the_same_everywhere_and_spread_out() {
        let t = CURSOR_EPOCH_SECS + 41;
        // Every node (every call) answers the same cursor for the same request and time.
        assert_eq!(next_cursor(t, 20_000, Some(60)), next_cursor(t + 3, 20_000, Some(60)));
        // Clients past the bucket by different cursors do not all land on one next cursor.
        let bumps: std::collections::BTreeSet<u64> =
            (60..160).map(|prev| next_cursor(t, 20_000, Some(prev)) - prev).collect();
        assert!(bumps.len() > 90, "{} distinct bumps of 100", bumps.len());
        assert!(bumps.iter().all(|b| (1..=3600).contains(b)));
    }
}
