//! Postgres snapshot visibility, for splicing a shape's initial snapshot with the change stream.
//!
//! The initial snapshot is taken in a REPEATABLE READ transaction that also records
//! `pg_current_snapshot()` and `pg_current_wal_insert_lsn()`. A streamed transaction whose
//! changes the snapshot already contains must be skipped; every other one must be applied.

/// `pg_current_snapshot()` of a shape's initial snapshot plus the WAL insert position then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// Oldest transaction still running (64-bit xid8).
    pub xmin: u64,
    /// First unassigned xid (64-bit xid8).
    pub xmax: u64,
    /// Transactions in progress when the snapshot was taken.
    pub xip: Vec<u64>,
    /// `pg_current_wal_insert_lsn()` right after the snapshot was taken.
    pub wal_lsn: u64,
}

impl SnapshotInfo {
    /// Parses `pg_current_snapshot()::text`: `xmin:xmax:xip1,xip2`.
    pub fn parse(snapshot: &str, wal_lsn: u64) -> Option<SnapshotInfo> {
        let mut parts = snapshot.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip_s = parts.next()?;
        let xip = if xip_s.is_empty() {
            vec![]
        } else {
            xip_s.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?
        };
        Some(SnapshotInfo { xmin, xmax, xip, wal_lsn })
    }

    /// True if the snapshot already contains the effects of the transaction `xid` that committed
    /// at `commit_lsn`. Transactions committed after the recorded WAL position cannot be visible.
    pub fn contains(&self, xid: u32, commit_lsn: u64) -> bool {
        commit_lsn < self.wal_lsn && self.includes(xid)
    }

    /// True if transaction `xid` (32 bits, as `txid` headers and write results carry it)
    /// committed before the snapshot was taken: below `xmin`, or below `xmax` and not in
    /// progress. Clients ask this of a `snapshot-end` to tell which of their answered writes it
    /// already holds. 32-bit xids compare modulo 2^32 (Postgres's own rule for them), so a
    /// transaction that began after the snapshot is never taken for one before it, across a
    /// wraparound too.
    pub fn includes(&self, xid: u32) -> bool {
        let before = |a: u32, b: u64| (a.wrapping_sub(b as u32) as i32) < 0;
        before(xid, self.xmin) || (before(xid, self.xmax) && !self.xip.iter().any(|x| *x as u32 == xid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client asks of a `snapshot-end`: 32-bit txids against 64-bit snapshot values,
    /// across a wraparound.
    #[test]
    fn includes_follows_postgres_with_wraparound() {
        let snap =
            |xmin: u64, xmax: u64, xip: &[u64]| SnapshotInfo { xmin, xmax, xip: xip.to_vec(), wal_lsn: u64::MAX };
        assert!(snap(100, 110, &[]).includes(99));
        assert!(snap(100, 110, &[]).includes(105));
        assert!(!snap(100, 110, &[105]).includes(105));
        assert!(!snap(100, 110, &[]).includes(110));
        let epoch = 1u64 << 32;
        assert!(snap(epoch + 5, epoch + 10, &[]).includes(u32::MAX));
        assert!(snap(epoch + 5, epoch + 10, &[]).includes(7));
        assert!(!snap(epoch + 5, epoch + 10, &[]).includes(12));
    }

    #[test]
    fn visibility() {
        let s = SnapshotInfo::parse("100:105:101,103", 5000).unwrap();
        assert!(s.contains(99, 10));
        assert!(!s.contains(101, 10));
        assert!(s.contains(102, 10));
        assert!(!s.contains(103, 10));
        assert!(!s.contains(105, 10));
        assert!(!s.contains(99, 5000), "committed after the snapshot position");
        // Across a wraparound: xid8 4294967396 is 32-bit xid 100.
        let e = SnapshotInfo::parse("4294967390:4294967400:", 1000).unwrap();
        assert!(e.contains(90, 10) && !e.contains(110, 10));
        assert!(SnapshotInfo::parse("1:2", 0).is_none());
    }
}
