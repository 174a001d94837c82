//! Where Ferrite reads the time: a [`Clock`], which is the system's clock in production and a
//! [`ManualClock`] in tests, standing still until the test moves it on.
//!
//! Everything that decides by the time of day or by how long ago something happened reads the
//! `Clock` it was given rather than `SystemTime::now()`: hybrid logical clocks, shape handles,
//! live cursors and ETags, idle shape expiry, presence member expiry (server) and shape retention
//! (client). A test can then make an hour pass at once and check what expired — no sleeping for
//! the real duration, and no result that depends on how busy the machine is.
//!
//! It lives here, in the protocol crate, because it is the one crate both the server and the
//! Rust client use (and HLCs, which it feeds, are defined here too). Like the rest of the crate it
//! does no I/O: it reads the time, and [`Clock::advanced`] is a plain future (no runtime needed)
//! that a background task can wait on to react to a test moving the clock.
//!
//! It is a concrete type rather than a trait: there are exactly two sources of time, and a
//! cheap, clonable value keeps every holder free of generics and `dyn`.
//!
//! What it does not cover: request deadlines (long-poll and SSE timeouts, body read limits) are
//! real timers on real time, since they bound real waiting on sockets; tests shorten them through
//! the configuration instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time: the system's clock, or a [`ManualClock`]'s. Cheap to clone; clones read the
/// same time.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<Manual>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            None => f.write_str("Clock(system)"),
            Some(m) => write!(f, "Clock(manual, +{:?})", m.state().offset),
        }
    }
}

impl Clock {
    /// The system's clock: what a server or client outside tests runs on.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// The wall-clock time: what is stored, sent or compared with other machines' clocks.
    pub fn wall(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(m) => m.wall + m.state().offset,
        }
    }

    /// [`Clock::wall`] in milliseconds since the Unix epoch (0 before it): the unit of HLCs.
    pub fn wall_ms(&self) -> u64 {
        self.since_epoch().as_millis() as u64
    }

    /// [`Clock::wall`] in whole seconds since the Unix epoch (0 before it).
    pub fn wall_secs(&self) -> u64 {
        self.since_epoch().as_secs()
    }

    /// [`Clock::wall`] since the Unix epoch (zero before it), for finer units (handles, ETags).
    pub fn since_epoch(&self) -> Duration {
        self.wall().duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// A monotonic instant, for measuring how long ago something happened (expiry deadlines):
    /// unlike [`Clock::wall`] it never jumps when the system's clock is set.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.started + m.state().offset,
        }
    }

    /// Resolves once a manual clock has been moved on after this call; never for the system
    /// clock, whose time passes by itself. A background task that expires things waits on this
    /// beside its timer, so a test that advances the clock sees the expiry at once instead of
    /// at the timer's next tick. Create it before doing the work it should follow: an advance
    /// during the work then still wakes the next wait.
    pub fn advanced(&self) -> Advanced {
        Advanced { manual: self.manual.as_ref().map(|m| (m.clone(), m.state().generation)) }
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it: for tests of what happens
/// after a time has passed. It starts at the system's time when created (so wall-clock values
/// such as HLCs and handles look like real ones).
#[derive(Clone)]
pub struct ManualClock(Arc<Manual>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManualClock(+{:?})", self.0.state().offset)
    }
}

impl ManualClock {
    /// A clock at the system's current time, standing still.
    pub fn new() -> ManualClock {
        ManualClock(Arc::new(Manual {
            wall: SystemTime::now(),
            started: Instant::now(),
            state: Mutex::new(ManualState { offset: Duration::ZERO, generation: 0, waiting: Vec::new() }),
        }))
    }

    /// Moves the time on by `by` (wall and monotonic alike) and wakes every [`Clock::advanced`]
    /// waiting on it.
    pub fn advance(&self, by: Duration) {
        let waiting = {
            let mut s = self.0.state();
            s.offset += by;
            s.generation += 1;
            std::mem::take(&mut s.waiting)
        };
        for w in waiting {
            w.wake();
        }
    }

    /// The [`Clock`] to hand to what should run on this time.
    pub fn clock(&self) -> Clock {
        Clock { manual: Some(self.0.clone()) }
    }
}

struct Manual {
    /// Wall time at creation.
    wall: SystemTime,
    /// Monotonic instant at creation.
    started: Instant,
    state: Mutex<ManualState>,
}

struct ManualState {
    /// How far the clock has been moved on since creation.
    offset: Duration,
    /// Bumped by every advance.
    generation: u64,
    /// Tasks waiting in [`Advanced`] for the next advance.
    waiting: Vec<Waker>,
}

impl Manual {
    fn state(&self) -> MutexGuard<'_, ManualState> {
        // The state is a few plain values, consistent after any panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The future of [`Clock::advanced`].
pub struct Advanced {
    /// The manual clock and its generation when the future was made; `None` for the system clock.
    manual: Option<(Arc<Manual>, u64)>,
}

impl Future for Advanced {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some((manual, generation)) = &self.manual else { return Poll::Pending };
        let mut s = manual.state();
        if s.generation != *generation {
            return Poll::Ready(());
        }
        if !s.waiting.iter().any(|w| w.will_wake(cx.waker())) {
            s.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let (wall, now) = (clock.wall(), clock.now());
        assert_eq!((clock.wall(), clock.now()), (wall, now), "it stands still");
        manual.advance(Duration::from_secs(90));
        assert_eq!(clock.wall(), wall + Duration::from_secs(90));
        assert_eq!(clock.now(), now + Duration::from_secs(90));
        assert_eq!(clock.wall_ms(), wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 90_000);
    }

    #[test]
    fn advanced_wakes_its_waiter_and_counts_advances_after_it_was_made() {
        let manual = ManualClock::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = manual.clock().advanced();
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending(), "polled again: still one waker");
        manual.advance(Duration::from_millis(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut wait).poll(&mut cx).is_ready());
        // Made before an advance, first polled after it: ready.
        let mut early = manual.clock().advanced();
        manual.advance(Duration::from_millis(1));
        assert!(Pin::new(&mut early).poll(&mut cx).is_ready());
    }

    #[test]
    fn the_system_clock_never_reports_an_advance() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut Clock::system().advanced()).poll(&mut cx).is_pending());
        assert!(Clock::system().wall_secs() > 1_600_000_000);
    }
}
