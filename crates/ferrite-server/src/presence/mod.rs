//! Presence: who is in a room right now and their ephemeral state (cursor, selection, name,
//! colour). Kept in memory only — never in Postgres — and lost on restart, which is fine: clients
//! heartbeat every few seconds and reappear. A member not heard from for `presence_ttl_secs` is
//! dropped.
//!
//! A member is the pair (token subject, client id): another user posting with the same client id
//! is another member, so nobody can take over or evict someone else's entry. Readers never see
//! client ids (they are the key to a client's write history): each member gets a random
//! `member` id when it joins, unique to the room, which the joining client learns from its own
//! post. Rooms hold at most `presence_max_members`, and the server at most `presence_max_rooms`.
//!
//! Every change to a room takes a new version from one process-wide counter, so a reader's
//! offset never matches a different room state, even across a room emptied and re-created.

pub mod http;
pub mod rows;

use ferrite_protocol::clock::Clock;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One member of a room as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Random id of this member in this room (not its client id).
    pub member: String,
    /// Token subject of the member (JWT mode), so readers know who it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Whatever the client last posted.
    pub state: Value,
    /// When it was last posted (Unix ms).
    pub updated_at: u64,
}

/// Who a member is: its token subject (`None` without auth) and client id.
type MemberKey = (Option<String>, String);

struct Entry {
    member: Member,
    expires: Instant,
}

struct Room {
    /// By member id (readers get members in this order).
    members: BTreeMap<String, Entry>,
    /// (subject, client id) → member id.
    ids: HashMap<MemberKey, String>,
    changed: watch::Sender<u64>,
}

impl Room {
    fn new() -> Room {
        Room { members: BTreeMap::new(), ids: HashMap::new(), changed: watch::channel(0).0 }
    }
}

/// Why a presence update is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// The room has as many members as allowed.
    #[error("room is full ({0} members)")]
    RoomFull(usize),
    /// The server holds as many rooms as allowed.
    #[error("too many presence rooms ({0})")]
    TooManyRooms(usize),
}

/// Size limits of presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceLimits {
    /// How long a member stays without a heartbeat.
    pub ttl: Duration,
    /// Most members per room.
    pub max_members: usize,
    /// Most rooms (with members or watchers) at once.
    pub max_rooms: usize,
}

/// All rooms of this server.
pub struct Presence {
    rooms: Mutex<HashMap<String, Room>>,
    limits: PresenceLimits,
    version: AtomicU64,
    /// When members were posted and when they expire.
    clock: Clock,
}

/// A fresh random member id (64 bits, hex).
fn new_member_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Presence {
    /// Rooms within `limits`, with members timed by `clock`.
    pub fn new(limits: PresenceLimits, clock: Clock) -> Presence {
        Presence { rooms: Mutex::new(HashMap::new()), limits, version: AtomicU64::new(0), clock }
    }

    fn next_version(&self) -> u64 {
        self.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The room, created if the room limit allows.
    fn room<'a>(&self, rooms: &'a mut HashMap<String, Room>, room: &str) -> Result<&'a mut Room, PresenceError> {
        if !rooms.contains_key(room) && rooms.len() >= self.limits.max_rooms {
            return Err(PresenceError::TooManyRooms(self.limits.max_rooms));
        }
        Ok(rooms.entry(room.to_string()).or_insert_with(Room::new))
    }

    /// Joins or refreshes the member (`subject`, `client_id`) in `room` with `state`; returns
    /// the room's new version and the member's id.
    pub fn upsert(
        &self,
        room: &str,
        client_id: &str,
        subject: Option<&str>,
        state: Value,
    ) -> Result<(u64, String), PresenceError> {
        let mut rooms = self.rooms.lock();
        let r = self.room(&mut rooms, room)?;
        let key: MemberKey = (subject.map(String::from), client_id.to_string());
        let id = match r.ids.get(&key) {
            Some(id) => id.clone(),
            None => {
                if r.members.len() >= self.limits.max_members {
                    return Err(PresenceError::RoomFull(self.limits.max_members));
                }
                let mut id = new_member_id();
                while r.members.contains_key(&id) {
                    id = new_member_id();
                }
                r.ids.insert(key, id.clone());
                id
            }
        };
        let member =
            Member { member: id.clone(), subject: subject.map(String::from), state, updated_at: self.clock.wall_ms() };
        r.members.insert(id.clone(), Entry { member, expires: self.clock.now() + self.limits.ttl });
        let v = self.next_version();
        r.changed.send_replace(v);
        Ok((v, id))
    }

    /// Removes the member (`subject`, `client_id`) from `room`, if present; returns the room's
    /// version.
    pub fn leave(&self, room: &str, client_id: &str, subject: Option<&str>) -> u64 {
        let mut rooms = self.rooms.lock();
        let Some(r) = rooms.get_mut(room) else { return self.version.load(Ordering::Relaxed) };
        let key: MemberKey = (subject.map(String::from), client_id.to_string());
        let Some(id) = r.ids.remove(&key) else { return *r.changed.borrow() };
        r.members.remove(&id);
        let v = self.next_version();
        r.changed.send_replace(v);
        v
    }

    /// Removes every member of `subject` from `room` (the caller may no longer read the room's
    /// row: its membership was revoked); returns whether any was there.
    pub fn leave_subject(&self, room: &str, subject: &str) -> bool {
        let mut rooms = self.rooms.lock();
        let Some(r) = rooms.get_mut(room) else { return false };
        let gone: Vec<MemberKey> = r.ids.keys().filter(|(s, _)| s.as_deref() == Some(subject)).cloned().collect();
        if gone.is_empty() {
            return false;
        }
        for key in gone {
            if let Some(id) = r.ids.remove(&key) {
                r.members.remove(&id);
            }
        }
        let v = self.next_version();
        r.changed.send_replace(v);
        true
    }

    /// The room's version and members (in member id order).
    pub fn snapshot(&self, room: &str) -> (u64, Vec<Member>) {
        let rooms = self.rooms.lock();
        match rooms.get(room) {
            Some(r) => (*r.changed.borrow(), r.members.values().map(|e| e.member.clone()).collect()),
            None => (0, vec![]),
        }
    }

    /// Notified with the room's version whenever it changes (creating the room if the room
    /// limit allows, so a reader can wait in an empty room).
    pub fn subscribe(&self, room: &str) -> Result<watch::Receiver<u64>, PresenceError> {
        let mut rooms = self.rooms.lock();
        Ok(self.room(&mut rooms, room)?.changed.subscribe())
    }

    /// Drops members past their TTL (waking the room's readers) and rooms nobody is in or
    /// waiting on. Returns how many members expired.
    pub fn expire(&self) -> usize {
        let now = self.clock.now();
        let mut rooms = self.rooms.lock();
        let mut expired = 0;
        for r in rooms.values_mut() {
            let before = r.members.len();
            r.members.retain(|_, e| e.expires > now);
            if r.members.len() != before {
                expired += before - r.members.len();
                let members = &r.members;
                r.ids.retain(|_, id| members.contains_key(id));
                let v = self.next_version();
                r.changed.send_replace(v);
            }
        }
        rooms.retain(|_, r| !r.members.is_empty() || r.changed.receiver_count() > 0);
        expired
    }

    /// Rooms currently held.
    #[cfg(test)]
    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_protocol::clock::ManualClock;
    use serde_json::json;

    fn presence_on(clock: &ManualClock) -> Presence {
        Presence::new(PresenceLimits { ttl: Duration::from_secs(10), max_members: 3, max_rooms: 2 }, clock.clock())
    }

    fn presence() -> Presence {
        presence_on(&ManualClock::new())
    }

    #[test]
    fn members_join_refresh_leave_and_expire() {
        let clock = ManualClock::new();
        let p = presence_on(&clock);
        let (v1, a) = p.upsert("r", "a", None, json!({"x": 1})).unwrap();
        let (v2, b) = p.upsert("r", "b", None, json!({"x": 2})).unwrap();
        assert!(v2 > v1);
        assert_ne!(a, b);
        let (v, members) = p.snapshot("r");
        assert_eq!(v, v2);
        let mut ids: Vec<&str> = members.iter().map(|m| m.member.as_str()).collect();
        ids.sort();
        let mut expected = vec![a.as_str(), b.as_str()];
        expected.sort();
        assert_eq!(ids, expected);
        // A refresh keeps the member id.
        assert_eq!(p.upsert("r", "a", None, json!({"x": 3})).unwrap().1, a);
        let v3 = p.leave("r", "a", None);
        assert!(v3 > v2);
        assert_eq!(p.snapshot("r").1.len(), 1);
        // Expiry wakes readers with a new version and drops the empty room.
        let mut rx = p.subscribe("r").unwrap();
        clock.advance(Duration::from_secs(9));
        assert_eq!(p.expire(), 0, "within the TTL");
        clock.advance(Duration::from_secs(2));
        assert_eq!(p.expire(), 1);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update() > v3);
        drop(rx);
        p.expire();
        assert_eq!(p.room_count(), 0);
    }

    #[test]
    fn a_member_is_its_subject_and_client_id() {
        let p = presence();
        let (_, alice) = p.upsert("r", "dev", Some("alice"), json!({"who": "alice"})).unwrap();
        // Another user with the same client id is another member: no takeover, no eviction.
        let (_, mallory) = p.upsert("r", "dev", Some("mallory"), json!({"who": "mallory"})).unwrap();
        assert_ne!(alice, mallory);
        p.leave("r", "dev", Some("mallory"));
        let (_, members) = p.snapshot("r");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].state, json!({"who": "alice"}));
        assert!(!serde_json::to_string(&members).unwrap().contains("dev"), "client ids are not published");
    }

    #[test]
    fn rooms_and_members_are_bounded() {
        let p = presence();
        for c in ["a", "b", "c"] {
            p.upsert("r", c, None, json!({})).unwrap();
        }
        assert_eq!(p.upsert("r", "d", None, json!({})), Err(PresenceError::RoomFull(3)));
        p.upsert("r", "a", None, json!({"again": true})).unwrap();
        p.upsert("s", "a", None, json!({})).unwrap();
        assert_eq!(p.upsert("t", "a", None, json!({})), Err(PresenceError::TooManyRooms(2)));
        assert!(p.subscribe("t").is_err());
    }
}
