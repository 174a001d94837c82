//! Hybrid logical clocks: the order in which concurrent writes to the same column win.
//!
//! An [`Hlc`] is `"<unix_ms>-<counter>"` on the wire (see `docs/write-protocol.md`); a
//! [`Stamp`] adds the writer's client id so that two writes never compare equal unless they come
//! from the same client transaction. The server keeps an [`HlcClock`] that follows every clock it
//! receives and refuses clocks too far ahead of its wall clock, so one client with a wrong clock
//! cannot make its writes win for ever.

use std::fmt;
use std::str::FromStr;

/// A hybrid logical clock value: wall-clock milliseconds, then a counter for events in the same
/// millisecond. Ordered by `ms`, then `counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Unix time in milliseconds.
    pub ms: u64,
    /// Events within the same millisecond; restarts at 0 when `ms` moves forward.
    pub counter: u32,
}

impl Hlc {
    /// Older than every real clock: what a column never written through Ferrite starts at.
    pub const ZERO: Hlc = Hlc { ms: 0, counter: 0 };

    /// The clock for a local event at wall time `wall_ms` that follows this one: the wall clock
    /// when it has moved on, else the next counter. What a client stamps its next transaction
    /// with, given the last stamp it handed out (persisted, so it never goes backwards).
    pub fn tick(self, wall_ms: u64) -> Hlc {
        if wall_ms > self.ms {
            Hlc { ms: wall_ms, counter: 0 }
        } else {
            self.successor()
        }
    }

    /// The next clock value: the next counter, or the next millisecond once the counter is
    /// exhausted (a client may send any counter, `u32::MAX` included, and the clock must still
    /// move past it). Only `(u64::MAX, u32::MAX)` has no successor and stays as it is.
    fn successor(self) -> Hlc {
        match self.counter.checked_add(1) {
            Some(counter) => Hlc { ms: self.ms, counter },
            None if self.ms < u64::MAX => Hlc { ms: self.ms + 1, counter: 0 },
            None => self,
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.counter)
    }
}

/// Why a clock string is not an HLC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a clock of the form \"<unix_ms>-<counter>\"")]
pub struct BadHlc(pub String);

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for Hlc {
    type Err = BadHlc;
    fn from_str(s: &str) -> Result<Hlc, BadHlc> {
        let bad = || BadHlc(s.to_string());
        let (ms, counter) = s.split_once('-').ok_or_else(bad)?;
        if !digits(ms) || !digits(counter) {
            return Err(bad());
        }
        Ok(Hlc { ms: ms.parse().map_err(|_| bad())?, counter: counter.parse().map_err(|_| bad())? })
    }
}

/// On the wire an HLC is its text form, `"<unix_ms>-<counter>"`.
impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hlc, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The writer recorded for changes made directly in Postgres (not through Ferrite). `~` sorts
/// after every character a client id may contain, so a direct write wins a tie in the same
/// millisecond.
pub const DIRECT_WRITER: &str = "~postgres";

/// Who wrote a value and when: the total order of last-writer-wins. Ordered by clock, then by
/// client id (byte order), the contract's deterministic tie-break.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The writing transaction's clock.
    pub hlc: Hlc,
    /// The writing client (or [`DIRECT_WRITER`]).
    pub client_id: String,
}

impl Stamp {
    /// The stamp of a write made directly in Postgres, committed at `commit_micros` (Unix time in
    /// microseconds, from the commit timestamp).
    pub fn direct(commit_micros: u64) -> Stamp {
        Stamp { hlc: Hlc { ms: commit_micros / 1000, counter: 0 }, client_id: DIRECT_WRITER.to_string() }
    }

    /// Older than every stamp a writer produces.
    pub fn zero() -> Stamp {
        Stamp { hlc: Hlc::ZERO, client_id: String::new() }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.client_id)
    }
}

impl FromStr for Stamp {
    type Err = BadHlc;
    /// Parses `"<ms>-<counter>@<client_id>"`.
    fn from_str(s: &str) -> Result<Stamp, BadHlc> {
        let (hlc, client) = s.split_once('@').ok_or_else(|| BadHlc(s.to_string()))?;
        Ok(Stamp { hlc: hlc.parse()?, client_id: client.to_string() })
    }
}

/// A clock received from a client is too far ahead of the server's wall clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "clock {remote} is {ahead_ms} ms ahead of the server's (at most {max_skew_ms} ms allowed): fix the device's clock"
)]
pub struct ClockSkew {
    /// The refused clock.
    pub remote: Hlc,
    /// How far ahead of the server's wall clock it is.
    pub ahead_ms: u64,
    /// The configured limit (`max_clock_skew_ms`).
    pub max_skew_ms: u64,
}

/// The server's clock: never goes backwards, and moves past every clock it accepts.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_skew_ms: u64,
}

impl HlcClock {
    /// A clock refusing remote clocks more than `max_skew_ms` ahead of the wall clock.
    pub fn new(max_skew_ms: u64) -> HlcClock {
        HlcClock { last: Hlc::ZERO, max_skew_ms }
    }

    /// A fresh clock value for a local event at wall time `wall_ms`.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        self.last = self.last.tick(wall_ms);
        self.last
    }

    /// Accepts a remote clock (unless it is too far ahead) and returns the clock's new value,
    /// which is after both the remote clock and every value handed out before.
    pub fn receive(&mut self, remote: Hlc, wall_ms: u64) -> Result<Hlc, ClockSkew> {
        let ahead_ms = remote.ms.saturating_sub(wall_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(ClockSkew { remote, ahead_ms, max_skew_ms: self.max_skew_ms });
        }
        let ms = self.last.ms.max(remote.ms).max(wall_ms);
        self.last = match (ms == self.last.ms, ms == remote.ms) {
            (true, true) => Hlc { ms, counter: self.last.counter.max(remote.counter) }.successor(),
            (true, false) => self.last.successor(),
            (false, true) => remote.successor(),
            (false, false) => Hlc { ms, counter: 0 },
        };
        Ok(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clocks_and_stamps_round_trip_and_bad_ones_are_refused() {
        let h: Hlc = "1795012345678-7".parse().unwrap();
        assert_eq!(h, Hlc { ms: 1795012345678, counter: 7 });
        assert_eq!(h.to_string(), "1795012345678-7");
        for bad in ["", "1", "-1", "1-", "a-1", "1-b", "+1-0", "1-0-0", " 1-0", "99999999999999999999999-0"] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad:?}");
        }
        let s: Stamp = "5-1@client-a".parse().unwrap();
        assert_eq!(s, Stamp { hlc: Hlc { ms: 5, counter: 1 }, client_id: "client-a".into() });
        assert_eq!(s.to_string(), "5-1@client-a");
        assert!("5-1".parse::<Stamp>().is_err());
    }

    #[test]
    fn stamps_order_by_clock_then_client_id_and_direct_writes_win_ties() {
        let st = |ms, c: u32, id: &str| Stamp { hlc: Hlc { ms, counter: c }, client_id: id.into() };
        assert!(st(1, 0, "z") < st(2, 0, "a"));
        assert!(st(2, 0, "z") < st(2, 1, "a"));
        assert!(st(2, 1, "a") < st(2, 1, "b"));
        assert!(st(2, 0, "zzz") < Stamp::direct(2_000));
        assert!(Stamp::zero() < st(0, 0, "a"));
    }

    #[test]
    fn the_server_clock_refuses_clocks_too_far_ahead() {
        let mut c = HlcClock::new(1000);
        assert!(c.receive(Hlc { ms: 11_000, counter: 0 }, 10_000).is_ok());
        let e = c.receive(Hlc { ms: 11_001, counter: 0 }, 10_000).unwrap_err();
        assert_eq!(e.ahead_ms, 1001);
        assert!(e.to_string().contains("1001 ms ahead"), "{e}");
        // Clocks behind the server are always fine.
        assert!(c.receive(Hlc { ms: 1, counter: 0 }, 10_000).is_ok());
    }

    /// Found by the `write_request` fuzz target: a client clock `"<ms>-4294967295"` left the
    /// server clock equal to it (the counter saturated), and `now()` then stood still.
    #[test]
    fn an_exhausted_counter_moves_to_the_next_millisecond() {
        let mut c = HlcClock::new(1000);
        let remote = Hlc { ms: 10_000, counter: u32::MAX };
        let after = c.receive(remote, 10_000).unwrap();
        assert!(after > remote, "{after} is not after {remote}");
        assert_eq!(after, Hlc { ms: 10_001, counter: 0 });
        let next = c.now(10_000);
        assert!(next > after, "{next} is not after {after}");
        let mut c = HlcClock::new(1000);
        c.last = Hlc { ms: 5, counter: u32::MAX };
        assert_eq!(c.now(5), Hlc { ms: 6, counter: 0 });
    }

    proptest! {
        /// Whatever it is fed, the clock never goes backwards and passes every clock it accepted.
        #[test]
        fn the_server_clock_is_monotonic(events in proptest::collection::vec((any::<bool>(), 0u64..100, 0u64..100, 0u32..5), 1..60)) {
            let mut c = HlcClock::new(50);
            let mut prev = Hlc::ZERO;
            for (local, wall, remote_ms, remote_counter) in events {
                let next = if local {
                    c.now(wall)
                } else {
                    let remote = Hlc { ms: remote_ms, counter: remote_counter };
                    match c.receive(remote, wall) {
                        Ok(h) => { prop_assert!(h > remote); h }
                        Err(_) => { prop_assert!(remote_ms > wall + 50); continue; }
                    }
                };
                prop_assert!(next > prev);
                prop_assert!(next.ms >= wall);
                prev = next;
            }
        }
    }
}
