//! Presence: who is in a room right now and their ephemeral state (cursor, selection, name,
//! colour). Kept in memory only — never in Postgres — and lost on restart, which is fine: clients
//! heartbeat every few seconds and reappear. A member not heard from for `presence_ttl_secs` is
//! dropped.
//!
//! Every change to a room takes a new version from one process-wide counter, so a reader's
//! offset never matches a different room state, even across a room emptied and re-created.

pub mod http;
pub mod rows;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// One member of a room as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// The member's client id.
    pub client_id: String,
    /// Token subject of the member (JWT mode), so readers know who it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Whatever the client last posted.
    pub state: Value,
    /// When it was last posted (Unix ms).
    pub updated_at: u64,
}

struct Entry {
    member: Member,
    expires: Instant,
}

struct Room {
    members: BTreeMap<String, Entry>,
    changed: watch::Sender<u64>,
}

/// Why a presence update is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// The client id is present in the room under another subject.
    #[error("client_id {0} is in this room as another user")]
    NotYours(String),
}

/// All rooms of this server.
pub struct Presence {
    rooms: Mutex<HashMap<String, Room>>,
    ttl: Duration,
    version: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Presence {
    /// Rooms whose members expire `ttl` after their last update.
    pub fn new(ttl: Duration) -> Presence {
        Presence { rooms: Mutex::new(HashMap::new()), ttl, version: AtomicU64::new(0) }
    }

    fn next_version(&self) -> u64 {
        self.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Joins or refreshes `client_id` in `room` with `state`; returns the room's new version.
    pub fn upsert(&self, room: &str, client_id: &str, subject: Option<&str>, state: Value) -> Result<u64, PresenceError> {
        let mut rooms = self.rooms.lock();
        let r = rooms
            .entry(room.to_string())
            .or_insert_with(|| Room { members: BTreeMap::new(), changed: watch::channel(0).0 });
        if let Some(existing) = r.members.get(client_id) {
            if existing.member.subject.as_deref() != subject {
                return Err(PresenceError::NotYours(client_id.to_string()));
            }
        }
        let member = Member { client_id: client_id.to_string(), subject: subject.map(String::from), state, updated_at: now_ms() };
        r.members.insert(client_id.to_string(), Entry { member, expires: Instant::now() + self.ttl });
        let v = self.next_version();
        r.changed.send_replace(v);
        Ok(v)
    }

    /// Removes `client_id` from `room` (a client leaving); returns the room's version.
    pub fn leave(&self, room: &str, client_id: &str, subject: Option<&str>) -> Result<u64, PresenceError> {
        let mut rooms = self.rooms.lock();
        let Some(r) = rooms.get_mut(room) else { return Ok(self.version.load(Ordering::Relaxed)) };
        match r.members.get(client_id) {
            None => return Ok(*r.changed.borrow()),
            Some(e) if e.member.subject.as_deref() != subject => return Err(PresenceError::NotYours(client_id.to_string())),
            Some(_) => {}
        }
        r.members.remove(client_id);
        let v = self.next_version();
        r.changed.send_replace(v);
        Ok(v)
    }

    /// The room's version and members (sorted by client id).
    pub fn snapshot(&self, room: &str) -> (u64, Vec<Member>) {
        let rooms = self.rooms.lock();
        match rooms.get(room) {
            Some(r) => (*r.changed.borrow(), r.members.values().map(|e| e.member.clone()).collect()),
            None => (0, vec![]),
        }
    }

    /// Notified with the room's version whenever it changes (creating the room if needed, so a
    /// reader can wait in an empty room).
    pub fn subscribe(&self, room: &str) -> watch::Receiver<u64> {
        let mut rooms = self.rooms.lock();
        rooms
            .entry(room.to_string())
            .or_insert_with(|| Room { members: BTreeMap::new(), changed: watch::channel(0).0 })
            .changed
            .subscribe()
    }

    /// Drops members past their TTL (waking the room's readers) and rooms nobody is in or
    /// waiting on. Returns how many members expired.
    pub fn expire(&self, now: Instant) -> usize {
        let mut rooms = self.rooms.lock();
        let mut expired = 0;
        for r in rooms.values_mut() {
            let before = r.members.len();
            r.members.retain(|_, e| e.expires > now);
            if r.members.len() != before {
                expired += before - r.members.len();
                let v = self.next_version();
                r.changed.send_replace(v);
            }
        }
        rooms.retain(|_, r| !r.members.is_empty() || r.changed.receiver_count() > 0);
        expired
    }

    /// Rooms currently held (for metrics and tests).
    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_join_refresh_leave_and_expire() {
        let p = Presence::new(Duration::from_secs(10));
        let v1 = p.upsert("r", "a", None, json!({"x": 1})).unwrap();
        let v2 = p.upsert("r", "b", None, json!({"x": 2})).unwrap();
        assert!(v2 > v1);
        let (v, members) = p.snapshot("r");
        assert_eq!(v, v2);
        assert_eq!(members.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let v3 = p.leave("r", "a", None).unwrap();
        assert!(v3 > v2);
        assert_eq!(p.snapshot("r").1.len(), 1);
        // Expiry wakes readers with a new version and drops the empty room.
        let mut rx = p.subscribe("r");
        assert_eq!(p.expire(Instant::now() + Duration::from_secs(11)), 1);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update() > v3);
        drop(rx);
        p.expire(Instant::now());
        assert_eq!(p.room_count(), 0);
    }

    #[test]
    fn a_member_belongs_to_its_subject() {
        let p = Presence::new(Duration::from_secs(10));
        p.upsert("r", "dev", Some("alice"), json!({})).unwrap();
        assert!(p.upsert("r", "dev", Some("mallory"), json!({})).is_err());
        assert!(p.leave("r", "dev", Some("mallory")).is_err());
        assert!(p.upsert("r", "dev", Some("alice"), json!({"moved": true})).is_ok());
    }
}
