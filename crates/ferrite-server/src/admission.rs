//! Admission control: how many requests each kind of route serves at once, and how many one
//! caller (token subject) may hold open across all routes, so that neither a flood of one kind of
//! request nor one tenant can take the server from everyone else.
//!
//! A request holds its [`Ticket`] for as long as it uses the server — a long-poll while it waits,
//! an SSE stream (shape or presence) until the stream ends — and gives its places back when the
//! ticket is dropped, however the request ends.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The kinds of route with a limit of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET/POST /v1/shape` at `offset=-1` (creating or starting to read a shape).
    ShapeInitial,
    /// Other shape requests, including held long-polls and SSE streams.
    ShapeExisting,
    /// `POST /v1/transactions`.
    Writes,
    /// `GET/POST /v1/presence`, including held long-polls and SSE streams.
    Presence,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The route serves as many requests as it may (`limit`).
    Route {
        /// The route.
        route: Route,
        /// Its limit.
        limit: usize,
    },
    /// The caller holds as many requests as one subject may.
    Subject {
        /// The per-subject limit.
        limit: usize,
    },
}

/// Places per route and per subject.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// [`Route::ShapeInitial`].
    pub shape_initial: usize,
    /// [`Route::ShapeExisting`].
    pub shape_existing: usize,
    /// [`Route::Writes`].
    pub writes: usize,
    /// [`Route::Presence`].
    pub presence: usize,
    /// Requests one token subject may hold at once, all routes together.
    pub per_subject: usize,
}

/// The server's admission state.
pub struct Admission {
    limits: AdmissionLimits,
    shape_initial: Arc<Semaphore>,
    shape_existing: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    presence: Arc<Semaphore>,
    subjects: Arc<Mutex<HashMap<String, usize>>>,
}

/// A request's places: dropped, they are free again.
pub struct Ticket {
    _route: OwnedSemaphorePermit,
    _subject: Option<SubjectPlace>,
}

struct SubjectPlace {
    subjects: Arc<Mutex<HashMap<String, usize>>>,
    subject: String,
}

impl Drop for SubjectPlace {
    fn drop(&mut self) {
        let mut subjects = self.subjects.lock();
        if let Some(n) = subjects.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                subjects.remove(&self.subject);
            }
        }
    }
}

impl Admission {
    /// Admission with these limits.
    pub fn new(limits: AdmissionLimits) -> Admission {
        let sem = |n: usize| Arc::new(Semaphore::new(n.max(1)));
        Admission {
            limits,
            shape_initial: sem(limits.shape_initial),
            shape_existing: sem(limits.shape_existing),
            writes: sem(limits.writes),
            presence: sem(limits.presence),
            subjects: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits a request to `route` for `subject` (`None` without auth), or says why not. Never
    /// waits.
    pub fn admit(&self, route: Route, subject: Option<&str>) -> Result<Ticket, Refusal> {
        let (sem, limit) = match route {
            Route::ShapeInitial => (&self.shape_initial, self.limits.shape_initial),
            Route::ShapeExisting => (&self.shape_existing, self.limits.shape_existing),
            Route::Writes => (&self.writes, self.limits.writes),
            Route::Presence => (&self.presence, self.limits.presence),
        };
        let subject = match subject {
            None => None,
            Some(s) => {
                let mut subjects = self.subjects.lock();
                let n = subjects.entry(s.to_string()).or_insert(0);
                if *n >= self.limits.per_subject {
                    return Err(Refusal::Subject { limit: self.limits.per_subject });
                }
                *n += 1;
                Some(SubjectPlace { subjects: self.subjects.clone(), subject: s.to_string() })
            }
        };
        let permit = sem.clone().try_acquire_owned().map_err(|_| Refusal::Route { route, limit })?;
        Ok(Ticket { _route: permit, _subject: subject })
    }

    /// Write requests admitted and not yet finished: what a test waits on to know a write holds
    /// its place (its body may still be arriving).
    pub fn writes_held(&self) -> usize {
        self.limits.writes.max(1) - self.writes.available_permits()
    }

    /// Requests `subject` holds now.
    #[cfg(test)]
    pub fn held_by(&self, subject: &str) -> usize {
        self.subjects.lock().get(subject).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_per_route_and_subject_and_given_back() {
        let a = Admission::new(AdmissionLimits {
            shape_initial: 2,
            shape_existing: 5,
            writes: 1,
            presence: 5,
            per_subject: 3,
        });
        let w = a.admit(Route::Writes, None).unwrap();
        assert_eq!(a.admit(Route::Writes, None).err(), Some(Refusal::Route { route: Route::Writes, limit: 1 }));
        drop(w);
        assert!(a.admit(Route::Writes, None).is_ok());
        let held: Vec<Ticket> = (0..3).map(|_| a.admit(Route::ShapeExisting, Some("alice")).unwrap()).collect();
        assert_eq!(a.admit(Route::Presence, Some("alice")).err(), Some(Refusal::Subject { limit: 3 }));
        assert!(a.admit(Route::Presence, Some("bob")).is_ok(), "another subject is not affected");
        // A refusal by route gives the subject's place back.
        let _i1 = a.admit(Route::ShapeInitial, Some("carol")).unwrap();
        let _i2 = a.admit(Route::ShapeInitial, Some("carol")).unwrap();
        assert!(a.admit(Route::ShapeInitial, Some("carol")).is_err());
        assert_eq!(a.held_by("carol"), 2);
        drop(held);
        assert_eq!(a.held_by("alice"), 0);
        assert!(a.admit(Route::Presence, Some("alice")).is_ok());
    }
}
