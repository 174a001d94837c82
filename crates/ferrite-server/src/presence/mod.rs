//! Presence: who is in a room right now and their ephemeral state (cursor, selection, name,
//! colour). Kept in memory only — never in Postgres — and lost on restart, which is fine: clients
//! heartbeat every few seconds and reappear. A member not heard from for `presence_ttl_secs` is
//! dropped.
//!
//! A member is the pair (token subject, client id): another user posting with the same client id
//! is another member, so nobody can take over or evict someone else's entry. Readers never see
//! client ids (they are the key to a client's write history): a member's `member` id is a digest
//! of the room, the subject and the client id — unique to the room, not linkable to the client id
//! or across rooms, and the same on every node, so a client that reconnects to another node of a
//! cluster stays the same member. Rooms hold at most `presence_max_members`, and the server at
//! most `presence_max_rooms`.
//!
//! In a cluster every local change is also handed to the [relay](crate::cluster::presence) (a
//! bounded queue; presence is lossy by nature, the next heartbeat repairs a lost message), which
//! sends it to the other nodes; their members arrive through [`Presence::apply_remote`], marked
//! with their node, and leave with it when that node stops sending its heartbeat
//! ([`Presence::forget_node`]).
//!
//! Every change to a room takes a new version from one process-wide counter, so a reader's
//! offset never matches a different room state, even across a room emptied and re-created.

pub mod http;
pub mod rows;

use ferrite_protocol::clock::Clock;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// One member of a room as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Id of this member in this room (a digest, not its client id).
    pub member: String,
    /// Token subject of the member (JWT mode), so readers know who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Whatever the client last posted.
    pub state: Value,
    /// When it was last posted (Unix ms).
    pub updated_at: u64,
}

struct Entry {
    member: Member,
    expires: Instant,
    /// The cluster node the member's client talks to; `None`: this one.
    origin: Option<String>,
}

struct Room {
    /// By member id (readers get members in this order).
    members: BTreeMap<String, Entry>,
    changed: watch::Sender<u64>,
}

impl Room {
    fn new() -> Room {
        Room { members: BTreeMap::new(), changed: watch::channel(0).0 }
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

/// A change of a local member, for the other nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChange {
    /// Joined or refreshed; stays for `ttl_ms` unless refreshed again.
    Upsert {
        /// The room.
        room: String,
        /// The member as readers see it.
        member: Member,
        /// How long the member stays without another upsert.
        ttl_ms: u64,
    },
    /// Left (or was removed).
    Leave {
        /// The room.
        room: String,
        /// Its member id.
        member: String,
    },
}

/// Members a room may hold from other nodes beyond its own limit (nodes check the limit each on
/// their own, so a race can overfill a room a little; this bounds it).
const REMOTE_OVERFILL: usize = 4;

/// All rooms of this server.
pub struct Presence {
    rooms: Mutex<HashMap<String, Room>>,
    limits: PresenceLimits,
    version: AtomicU64,
    /// When members were posted and when they expire.
    clock: Clock,
    /// Where local changes go for the other nodes of a cluster (none outside one).
    relay: Mutex<Option<mpsc::Sender<PresenceChange>>>,
}

/// The member id of (`subject`, `client_id`) in `room`: 128 bits of SHA-256 over the three,
/// each length-prefixed, in hex.
fn member_id(room: &str, subject: Option<&str>, client_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ferrite-presence-member-v1");
    for part in [Some(room), subject, Some(client_id)] {
        match part {
            Some(p) => {
                h.update((p.len() as u64 + 1).to_le_bytes());
                h.update(p.as_bytes());
            }
            None => h.update(0u64.to_le_bytes()),
        }
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl Presence {
    /// Rooms within `limits`, with members timed by `clock`.
    pub fn new(limits: PresenceLimits, clock: Clock) -> Presence {
        Presence {
            rooms: Mutex::new(HashMap::new()),
            limits,
            version: AtomicU64::new(0),
            clock,
            relay: Mutex::new(None),
        }
    }

    /// Sends every later local change to `relay` too (a cluster's presence relay).
    pub fn relay_to(&self, relay: mpsc::Sender<PresenceChange>) {
        *self.relay.lock() = Some(relay);
    }

    fn relay(&self, change: PresenceChange) {
        if let Some(relay) = self.relay.lock().as_ref() {
            // Full or closed: dropped, like a lost heartbeat; the member's next one repairs it.
            let _ = relay.try_send(change);
        }
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
        let id = member_id(room, subject, client_id);
        let member =
            Member { member: id.clone(), subject: subject.map(String::from), state, updated_at: self.clock.wall_ms() };
        let v = {
            let mut rooms = self.rooms.lock();
            let r = self.room(&mut rooms, room)?;
            if !r.members.contains_key(&id) && r.members.len() >= self.limits.max_members {
                return Err(PresenceError::RoomFull(self.limits.max_members));
            }
            let entry = Entry { member: member.clone(), expires: self.clock.now() + self.limits.ttl, origin: None };
            r.members.insert(id.clone(), entry);
            let v = self.next_version();
            r.changed.send_replace(v);
            v
        };
        let ttl_ms = self.limits.ttl.as_millis() as u64;
        self.relay(PresenceChange::Upsert { room: room.to_string(), member, ttl_ms });
        Ok((v, id))
    }

    /// Removes the member (`subject`, `client_id`) from `room`, if present; returns the room's
    /// version.
    pub fn leave(&self, room: &str, client_id: &str, subject: Option<&str>) -> u64 {
        let id = member_id(room, subject, client_id);
        let v = {
            let mut rooms = self.rooms.lock();
            let Some(r) = rooms.get_mut(room) else { return self.version.load(Ordering::Relaxed) };
            if r.members.remove(&id).is_none() {
                return *r.changed.borrow();
            }
            let v = self.next_version();
            r.changed.send_replace(v);
            v
        };
        self.relay(PresenceChange::Leave { room: room.to_string(), member: id });
        v
    }

    /// Removes every member of `subject` from `room` (the caller may no longer read the room's
    /// row: its membership was revoked); returns whether any was there.
    pub fn leave_subject(&self, room: &str, subject: &str) -> bool {
        let gone: Vec<String> = {
            let mut rooms = self.rooms.lock();
            let Some(r) = rooms.get_mut(room) else { return false };
            let gone: Vec<String> = r
                .members
                .values()
                .filter(|e| e.member.subject.as_deref() == Some(subject))
                .map(|e| e.member.member.clone())
                .collect();
            if gone.is_empty() {
                return false;
            }
            for id in &gone {
                r.members.remove(id);
            }
            let v = self.next_version();
            r.changed.send_replace(v);
            gone
        };
        for member in gone {
            self.relay(PresenceChange::Leave { room: room.to_string(), member });
        }
        true
    }

    /// Takes a change another node relayed (`node`: where it comes from). An upsert into a room
    /// this server has no place for is dropped; its next heartbeat tries again.
    pub fn apply_remote(&self, node: &str, change: PresenceChange) {
        let mut rooms = self.rooms.lock();
        match change {
            PresenceChange::Upsert { room, member, ttl_ms } => {
                let Ok(r) = self.room(&mut rooms, &room) else { return };
                if !r.members.contains_key(&member.member)
                    && r.members.len() >= self.limits.max_members * REMOTE_OVERFILL
                {
                    return;
                }
                // Never longer than this node's own TTL: a node cannot make its members immortal.
                let ttl = Duration::from_millis(ttl_ms).min(self.limits.ttl);
                let entry =
                    Entry { member: member.clone(), expires: self.clock.now() + ttl, origin: Some(node.to_string()) };
                r.members.insert(member.member, entry);
                let v = self.next_version();
                r.changed.send_replace(v);
            }
            PresenceChange::Leave { room, member } => {
                let Some(r) = rooms.get_mut(&room) else { return };
                if r.members.remove(&member).is_some() {
                    let v = self.next_version();
                    r.changed.send_replace(v);
                }
            }
        }
    }

    /// Drops every member that came from `node` (it stopped sending its heartbeat); returns how
    /// many.
    pub fn forget_node(&self, node: &str) -> usize {
        let mut rooms = self.rooms.lock();
        let mut gone = 0;
        for r in rooms.values_mut() {
            let before = r.members.len();
            r.members.retain(|_, e| e.origin.as_deref() != Some(node));
            if r.members.len() != before {
                gone += before - r.members.len();
                let v = self.next_version();
                r.changed.send_replace(v);
            }
        }
        gone
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
    fn members_from_other_nodes_come_and_go_with_their_node() {
        let clock = ManualClock::new();
        let (a, b) = (presence_on(&clock), presence_on(&clock));
        let (tx, mut relayed) = mpsc::channel(16);
        a.relay_to(tx);
        let (_, id) = a.upsert("r", "dev", Some("alice"), json!({"x": 1})).unwrap();
        let change = relayed.try_recv().unwrap();
        let rx = b.subscribe("r").unwrap();
        b.apply_remote("node-a", change);
        assert!(rx.has_changed().unwrap());
        let (_, members) = b.snapshot("r");
        assert_eq!((members.len(), members[0].member.as_str(), &members[0].state), (1, id.as_str(), &json!({"x": 1})));
        // The same client on node b is the same member, not a second one.
        assert_eq!(b.upsert("r", "dev", Some("alice"), json!({"x": 2})).unwrap().1, id);
        assert_eq!(b.snapshot("r").1.len(), 1);
        // A leave on a reaches b.
        a.leave("r", "dev", Some("alice"));
        b.apply_remote("node-a", relayed.try_recv().unwrap());
        assert!(b.snapshot("r").1.is_empty());
        // A dead node's members go at once; others' stay.
        a.upsert("r", "c1", Some("carol"), json!({})).unwrap();
        b.apply_remote("node-a", relayed.try_recv().unwrap());
        b.upsert("r", "d1", Some("dave"), json!({})).unwrap();
        assert_eq!(b.forget_node("node-a"), 1);
        assert_eq!(b.snapshot("r").1.len(), 1);
        // A remote member never outlives this node's TTL, whatever its node says.
        let member = Member { member: "m".into(), subject: None, state: json!({}), updated_at: 0 };
        b.apply_remote("node-c", PresenceChange::Upsert { room: "r".into(), member, ttl_ms: u64::MAX });
        clock.advance(Duration::from_secs(11));
        b.expire();
        assert!(b.snapshot("r").1.is_empty());
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
